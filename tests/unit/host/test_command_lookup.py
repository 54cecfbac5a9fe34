"""A container's command looked up in its root as runc does, before the shell that starts it
could say it in its own words; folders under tmp_path stand for the layers (root only for the
whiteout tests: mknod)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from overlaynet.host import command_lookup as cl

PATH = "/usr/local/bin:/usr/bin:/bin"


def _layers(tmp_path: Path) -> tuple[Path, Path]:
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    for d in ("bin", "usr/bin", "etc"):
        (lower / d).mkdir(parents=True)
    upper.mkdir()
    busybox = lower / "bin/busybox"
    busybox.touch(mode=0o755)
    # Absolute and relative links, as an image's applets and /usr/bin entries are.
    os.symlink("busybox", lower / "bin/ls")
    os.symlink("/bin/busybox", lower / "usr/bin/env")
    (lower / "etc/hosts").touch(mode=0o644)
    return upper, lower


def test_found_on_path_through_links_inside_the_root(tmp_path: Path) -> None:
    roots = _layers(tmp_path)
    assert cl.check(roots, ["ls", "-l"], PATH) is None
    assert cl.check(roots, ["env"], PATH) is None
    assert cl.check(roots, ["/bin/ls"], PATH) is None
    assert cl.resolve(roots, "/usr/bin/env") == tmp_path / "lower/bin/busybox"


def test_a_missing_command_is_dockers_127(tmp_path: Path) -> None:
    roots = _layers(tmp_path)
    missing = cl.check(roots, ["nosuchcmd"], PATH)
    assert missing == cl.Missing(
        'unable to start container process: exec: "nosuchcmd": executable file not found in $PATH',
        127,
    )
    assert cl.exit_status(f"Error response from daemon: {missing.message}") == 127
    absent = cl.check(roots, ["/nope"], PATH)
    assert absent is not None and absent.status == 127
    assert absent.message.endswith('exec: "/nope": stat /nope: no such file or directory')


def test_not_executable_or_a_folder_is_126(tmp_path: Path) -> None:
    roots = _layers(tmp_path)
    for cmd in ("/etc/hosts", "/etc"):
        missing = cl.check(roots, [cmd], PATH)
        assert missing is not None and missing.status == 126
        assert missing.message.endswith(f'exec: "{cmd}": permission denied')
        assert cl.exit_status(missing.message) == 126
    # On PATH a file without an x bit is passed over, as Go's LookPath does.
    (tmp_path / "lower/bin/plain").touch(mode=0o644)
    plain = cl.check(roots, ["plain"], PATH)
    assert plain is not None and plain.status == 127


def test_the_upper_layer_wins_and_links_stay_inside_the_root(tmp_path: Path) -> None:
    upper, lower = _layers(tmp_path)
    (upper / "bin").mkdir()
    (upper / "bin/tool").touch(mode=0o755)
    assert cl.check((upper, lower), ["tool"], PATH) is None
    # A link to a host path that exists on the host but not in the root is not found.
    os.symlink("/usr/bin/python3", lower / "bin/py")
    assert cl.check((upper, lower), ["py"], PATH) is not None
    os.symlink("loop", lower / "bin/loop")
    assert cl.resolve((upper, lower), "/bin/loop") is None


def test_path_comes_from_the_containers_env_and_other_errors_have_no_status() -> None:
    assert cl.path_of(["A=1", "PATH=/opt/bin"], PATH) == "/opt/bin"
    assert cl.path_of([], PATH) == PATH
    assert cl.exit_status("Error response from daemon: no such image") is None


needs_mknod = pytest.mark.skipif(
    os.geteuid() != 0, reason="a whiteout is a 0:0 character device: mknod needs root"
)


@needs_mknod
def test_a_command_deleted_in_the_container_is_not_found(tmp_path: Path) -> None:
    # `rm /bin/busybox` in a container that then stopped leaves a whiteout (a 0:0 character
    # device) in its upper folder: the lookup took it for a file it cannot run (126,
    # permission denied); the command is gone (127), as runc sees it through the overlay.
    upper, lower = roots = _layers(tmp_path)
    (upper / "bin").mkdir()
    os.mknod(upper / "bin/busybox", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    missing = cl.check(roots, ["/bin/busybox"], PATH)
    assert missing is not None and missing.status == cl.EXIT_NOT_FOUND
    assert missing.message.endswith("stat /bin/busybox: no such file or directory")
    assert cl.check(roots, ["/bin/ls"], PATH) is not None  # its link target went with it
    # A deleted folder hides everything the image had in it.
    os.mknod(upper / "usr", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    assert cl.resolve(roots, "/usr/bin/env") is None
    # The lowest layer has no layer below: a device there is a device.
    os.mknod(lower / "etc/null0", 0o600 | stat.S_IFCHR, os.makedev(0, 0))
    assert cl.resolve(roots, "/etc/null0") == lower / "etc/null0"


@needs_mknod
def test_an_opaque_folder_hides_the_layer_below(tmp_path: Path) -> None:
    # A folder deleted and made again in the container: overlayfs marks it opaque and
    # nothing the image had in it shows through.
    upper, lower = roots = _layers(tmp_path)
    (upper / "bin").mkdir()
    os.setxattr(upper / "bin", "trusted.overlay.opaque", b"y")
    missing = cl.check(roots, ["/bin/busybox"], PATH)
    assert missing is not None and missing.status == cl.EXIT_NOT_FOUND
    assert cl.resolve(roots, "/etc/hosts") == lower / "etc/hosts"
