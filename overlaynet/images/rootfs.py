"""A container's root filesystem: an overlay of its image's layer, removed with the container.

An image's layer is built once per host and shared (read-only) by its containers: a folder of
symlinks to busybox, the image's files, and the files and mount points every container has
(/etc/passwd, /proc, /sys, /dev, /tmp). A container gets its own empty upper folder on top, so
what it writes stays its own, survives a restart and goes with `remove`, as in Docker's
overlay2. Nothing here mounts: the launcher (`host.process`, given the returned `RootFs`) mounts
the overlay, the host's busybox, device nodes, /etc/hosts and /etc/resolv.conf inside the
container's own mount namespace and pivots into it, so the mounts vanish with the container's
last process. Per container this is three folders and a file (0.3 ms here); a layer is a
few hundred symlinks (about 100 ms on this machine's disk), built on first use only.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from overlaynet.host.process import ROOT_INIT_PATH, ROOT_INIT_SCRIPT, RootFs
from overlaynet.images.catalog import Image, ImageError, RootKind
from overlaynet.paths import state_root

# Debian's busybox-static: statically linked, so it runs in a root with no libraries.
BUSYBOX = Path("/bin/busybox")
ROOTFS = "rootfs"
# Bumped when the layer's layout changes, so old cached layers are not reused.
LAYOUT_VERSION = 2
# The device nodes a Docker container's /dev holds (less console and the pty multiplexer);
# the launcher binds the host's node onto each empty file it finds in the image's /dev.
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Placeholders the launcher binds the runtime's files onto, so a rewrite (network connect)
# reaches the running container, as Docker's bind-mounted /etc/hosts does.
BOUND_FILES = ("etc/hosts", "etc/resolv.conf")
_DIRS = (
    *("bin", "etc", "proc", "sys", "dev/pts", "dev/shm", "root", "tmp", "home", "srv", "run"),
    *("mnt", "usr/local/bin", "usr/local/sbin", "var/log", "var/run", "var/tmp", "var/www"),
)
_LINKS = {
    # Merged /usr, as Debian: every applet is found whichever PATH entry a script names.
    "sbin": "bin",
    "usr/bin": "../bin",
    "usr/sbin": "../bin",
    "dev/fd": "/proc/self/fd",
    "dev/stdin": "/proc/self/fd/0",
    "dev/stdout": "/proc/self/fd/1",
    "dev/stderr": "/proc/self/fd/2",
}
_ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "group": "root:x:0:\nnogroup:x:65534:\n",
    # busybox is glibc-static: its resolver reads nsswitch.conf; the container's own names first.
    "nsswitch.conf": "hosts: files dns\npasswd: files\ngroup: files\n",
    "os-release": 'NAME="overlaynet busybox"\nID=busybox\nPRETTY_NAME="overlaynet busybox"\n',
}


def busybox_path() -> Path:
    """The host's static busybox, or an error that says how to install it."""
    if not BUSYBOX.is_file():
        raise ImageError(
            f"{BUSYBOX} is missing: install Debian's busybox-static "
            "(apt-get install -y busybox-static)"
        )
    return BUSYBOX


def applets(busybox: Path = BUSYBOX) -> tuple[str, ...]:
    """The applet names this busybox binary provides (cached per binary version)."""
    st = busybox.stat()
    return _applets(str(busybox), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4)
def _applets(path: str, mtime_ns: int, size: int) -> tuple[str, ...]:
    del mtime_ns, size  # part of the cache key only: a new busybox lists anew
    out = subprocess.run([path, "--list"], capture_output=True, text=True, check=True)
    return tuple(a for a in out.stdout.split() if a and a != "busybox" and "/" not in a)


def layers_dir() -> Path:
    """Where image layers are cached by default: shared by every agent of this machine."""
    return state_root() / "images"


def prepare(
    image: Image, container_dir: Path, hostname: str, layers: Path | None = None
) -> RootFs | None:
    """The container's root built from `image` (its upper folder is kept if it exists: a
    restarted container keeps its files, as Docker's does); None for a `host` image, which runs
    in the host's root."""
    if image.root is RootKind.HOST:
        return None
    lower = layer(image, layers if layers is not None else layers_dir())
    base = container_dir / ROOTFS
    fs = RootFs(lower=lower, upper=base / "upper", work=base / "work", target=base / "merged")
    if not fs.upper.is_dir():
        (fs.upper / "etc").mkdir(parents=True)
        (fs.upper / "etc/hostname").write_text(hostname + "\n")
    fs.work.mkdir(exist_ok=True)
    fs.target.mkdir(exist_ok=True)
    return fs


def layer(image: Image, layers: Path) -> Path:
    """The image's shared read-only layer, built on first use. Named by a digest of everything
    it is made from (recipe, file contents, busybox build), so a changed recipe or a new busybox
    gets a new layer and a running container's layer never changes under it."""
    bb = busybox_path()
    names = applets(bb)
    path = layers / f"{_safe(image.reference)}-{_digest(image, bb, names)}"
    if path.is_dir():
        return path
    layers.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=layers))
    try:
        _build_busybox_root(staging / "root", image, names)
        # Two agents may build the same layer at once: the first rename wins, both use it.
        with contextlib.suppress(FileExistsError, OSError):
            (staging / "root").rename(path)
    finally:
        remove_tree(staging)
    if not path.is_dir():
        raise ImageError(f"image {image.reference}: could not build its layer at {path}")
    return path


def _safe(reference: str) -> str:
    return re.sub(r"[^a-z0-9._-]", "_", reference)


def _digest(image: Image, busybox: Path, names: tuple[str, ...]) -> str:
    st = busybox.stat()
    recipe = {
        "layout": LAYOUT_VERSION,
        "root": image.root.value,
        "busybox": [str(busybox), st.st_size, st.st_mtime_ns],
        "applets": names,
        "init": ROOT_INIT_SCRIPT,
        "files": [
            [str(f.path), f.mode, hashlib.sha256(f.source.read_bytes()).hexdigest()]
            for f in image.files
        ],
    }
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def _build_busybox_root(root: Path, image: Image, names: tuple[str, ...]) -> None:
    root.mkdir(mode=0o755, parents=True)
    for d in _DIRS:
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    os.chmod(root / "var/tmp", 0o1777)
    os.chmod(root / "root", 0o700)
    for link, target in _LINKS.items():
        (root / link).symlink_to(target)
    bindir = root / "bin"
    (bindir / "busybox").touch(mode=0o755)  # the launcher binds the host's busybox here
    for name in names:
        os.symlink("busybox", bindir / name)
    for name, text in _ETC.items():
        (root / "etc" / name).write_text(text)
    (root / "etc/hostname").touch(mode=0o644)  # each container's own is in its upper folder
    for rel in BOUND_FILES:
        (root / rel).touch(mode=0o644)
    for dev in DEVICES:
        (root / "dev" / dev).touch(mode=0o666)
    init = root / ROOT_INIT_PATH.lstrip("/")
    init.write_text(ROOT_INIT_SCRIPT)
    init.chmod(0o755)
    for f in image.files:
        dest = root / f.path.relative_to("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink():
            dest.unlink()  # an image file replaces an applet link rather than writing busybox
        try:
            shutil.copyfile(f.source, dest)
        except OSError as e:
            raise ImageError(f"image {image.reference}: cannot copy {f.source}: {e}") from None
        os.chmod(dest, f.mode)


def size(image: Image) -> int | None:
    """Bytes an image's root adds to the host (`image ls` SIZE): busybox and the image's files;
    None for a `host` image, which adds nothing of its own."""
    if image.root is RootKind.HOST:
        return None
    total = busybox_path().stat().st_size
    for f in image.files:
        with contextlib.suppress(OSError):
            total += f.source.stat().st_size
    return total


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` in this process's mount namespace, deepest first."""
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def remove(container_dir: Path) -> None:
    """Remove the container's root (idempotent; its image's shared layer stays). Its mounts
    should live only inside the container's namespace; any found here are detached first, so
    deleting can never reach into what is mounted on it (the host's /dev, /proc or busybox)."""
    remove_tree(container_dir / ROOTFS)


def remove_tree(path: Path) -> None:
    if not path.exists() and not path.is_symlink():
        return
    for point in mounts_under(path):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    left = mounts_under(path)
    if left:
        raise ImageError(f"cannot remove {path}: still mounted at {', '.join(left)}")
    with contextlib.suppress(FileNotFoundError):
        shutil.rmtree(path)
