"""Optional C helpers for the packet path (issue 15: "C-level helpers are allowed only as an
optional accelerated path with the pure-Python path kept and tested").

Each helper is one C file beside this module (with the shared `static inline` code of
`common.h`), plain C against libc (no Python API): it is compiled on first use with the
machine's C compiler (`cc`, from Debian's `gcc`) into a shared library keyed by the hash of the
source and of the headers here, and called through `ctypes`, which releases the GIL for the
call. No compiler, a failed build, or `OVERLAYNET_ACCEL=off` in the environment: `load` returns
None and the caller keeps its pure-Python path, saying so (`why_not`).

    lib = accel.load("egress")
    if lib is None:
        print(accel.why_not("egress"))
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

#: Where the sources are.
SOURCE_DIR = Path(__file__).resolve().parent
#: Compiler flags: optimised, position-independent, every warning an error (a helper that
#: warns is not loaded: the Python path is the safe one).
CFLAGS = ("-O2", "-fPIC", "-shared", "-std=gnu11", "-Wall", "-Wextra", "-Werror")
#: Environment variable of extra compiler flags, for tests only: a sanitizer build such as
#: "-fsanitize=address,undefined -fno-sanitize-recover=all -g" (loaded with the sanitizer's
#: runtime preloaded). Builds with extra flags carry a tag of their own in the file name, so
#: they never replace, or prune, the normal build other processes load.
ENV_CFLAGS = "OVERLAYNET_ACCEL_CFLAGS"
#: Seconds a build may take before it counts as failed.
BUILD_TIMEOUT = 120.0
#: Environment switch: "off" (or "0", "no") keeps every caller on its Python path.
ENV_SWITCH = "OVERLAYNET_ACCEL"

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL | None] = {}
_reasons: dict[str, str] = {}


def enabled() -> bool:
    """Whether the environment allows the C helpers at all."""
    return os.environ.get(ENV_SWITCH, "on").strip().lower() not in ("off", "0", "no", "false")


def build_dirs() -> list[Path]:
    """Where built libraries go, in order of preference: beside the sources (a checkout run as
    root), else the user's cache directory, else the temporary directory."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "overlaynet"
    return [
        SOURCE_DIR / "_built",
        cache / "accel",
        Path(tempfile.gettempdir()) / f"overlaynet-accel-{os.getuid()}",
    ]


def extra_cflags() -> list[str]:
    """The extra compiler flags from `ENV_CFLAGS` (none unless a test sets them)."""
    return shlex.split(os.environ.get(ENV_CFLAGS, ""))


def _variant(name: str) -> str:
    """The helper's name with the extra flags' tag: "egress", or "egress+1a2b3c4d" for a build
    with extra flags (pruning one variant never removes another's files)."""
    extra = extra_cflags()
    if not extra:
        return name
    return f"{name}+{hashlib.sha256(' '.join(extra).encode()).hexdigest()[:8]}"


def library_name(name: str) -> str:
    """The built file's name: the helper's name (and extra flags' tag), the hash of its source,
    of the headers beside it (any helper may include them: a header's edit rebuilds) and of the
    flags, the machine."""
    digest = hashlib.sha256((SOURCE_DIR / f"{name}.c").read_bytes())
    for header in sorted(SOURCE_DIR.glob("*.h")):
        # The name too: renaming a header the source includes changes the build.
        digest.update(header.name.encode() + b"\0" + header.read_bytes())
    digest.update(" ".join([*CFLAGS, *extra_cflags()]).encode())
    return f"{_variant(name)}-{digest.hexdigest()[:16]}-{platform.machine()}.so"


def compiler() -> str | None:
    """The C compiler's path ($CC, else cc or gcc), or None."""
    wanted = os.environ.get("CC")
    for candidate in ([wanted] if wanted else []) + ["cc", "gcc"]:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def build(name: str) -> Path:
    """Compile helper `name` unless an up-to-date build exists; returns the library's path.
    Concurrent builders (many lab agents start at once) each write a private file and rename
    it into place. Raises OSError or subprocess.CalledProcessError with the compiler's words."""
    source = SOURCE_DIR / f"{name}.c"
    filename = library_name(name)
    for directory in build_dirs():
        if (directory / filename).is_file():
            return directory / filename
    cc = compiler()
    if cc is None:
        raise FileNotFoundError("no C compiler (cc or gcc; Debian package gcc)")
    last: OSError | None = None
    for directory in build_dirs():
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".so", dir=directory)
        except OSError as error:
            last = error
            continue
        os.close(fd)
        try:
            subprocess.run(
                [cc, *CFLAGS, *extra_cflags(), "-o", tmp, str(source)],
                check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT,
            )  # fmt: skip
            os.replace(tmp, directory / filename)
            _prune(directory, _variant(name), keep=filename)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        return directory / filename
    raise last if last is not None else OSError("no writable build directory")


def _prune(directory: Path, name: str, *, keep: str) -> None:
    """Remove the builds of `name`'s earlier sources, `name` being the variant ("egress" or
    "egress+tag": "egress-*" matches no tagged build) (a process still using one keeps its
    mapping: unlinking does not disturb it)."""
    for stale in directory.glob(f"{name}-*.so"):
        if stale.name != keep:
            stale.unlink(missing_ok=True)


def load(name: str) -> ctypes.CDLL | None:
    """Helper `name` as a loaded library, built if needed; None when disabled or unbuildable
    (the reason: `why_not(name)`). Cached per process; safe from any thread."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        lib: ctypes.CDLL | None = None
        if not enabled():
            _reasons[name] = f"off ({ENV_SWITCH}={os.environ.get(ENV_SWITCH)})"
        else:
            try:
                lib = ctypes.CDLL(str(build(name)))
            except subprocess.CalledProcessError as error:
                _reasons[name] = f"build failed: {(error.stderr or '').strip()[:500]}"
            except (OSError, subprocess.SubprocessError) as error:
                _reasons[name] = f"unavailable: {error}"
        _loaded[name] = lib
        return lib


def why_not(name: str) -> str:
    """Why `load(name)` gave None ("" if it did not, or was not asked)."""
    return _reasons.get(name, "")


def forget() -> None:
    """Drop the per-process cache (tests that flip `OVERLAYNET_ACCEL`)."""
    with _lock:
        _loaded.clear()
        _reasons.clear()
