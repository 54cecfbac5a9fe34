"""A container's command looked up in its root as runc does, before the shell that starts it
could say it in its own words; no root needed (folders under tmp_path stand for the layers)."""

from __future__ import annotations

import os
from pathlib import Path

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
