"""Finding a container's command before it runs, so a missing one is said as docker says it.

Without this a command that does not exist reached the shell that starts it: `exec b1 nosuchcmd`
printed nsenter's error, `run alpine nosuchcmd` the init script's. runc looks the command up
first and says `exec: "nosuchcmd": executable file not found in $PATH` (docker exits 127) or
`exec: "/etc": permission denied` (126). Here the lookup runs against the container's root seen
from the host: layered folders (an image's upper folder over its layer) or a running
container's `/proc/PID/root`. Symbolic links are followed inside that root, never the host's.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from overlaynet.exec_status import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, PREFIX, exit_status

__all__ = [
    "EXIT_NOT_EXECUTABLE",
    "EXIT_NOT_FOUND",
    "PREFIX",
    "Missing",
    "check",
    "exit_status",
    "path_of",
    "resolve",
]

# The kernel's limit on links followed in one lookup (MAXSYMLINKS, ELOOP past it).
MAX_LINKS = 40


@dataclass(frozen=True)
class Missing:
    """Why the command cannot start, in docker's words, and docker's exit status for it."""

    message: str
    status: int


# overlayfs marks a directory re-made in the upper layer over a deleted one with this xattr
# ("y"): nothing of the layers below shows through it (Documentation/filesystems/overlayfs.rst,
# "whiteouts and opaque directories"); `user.` when mounted with userxattr.
OPAQUE_XATTRS = ("trusted.overlay.opaque", "user.overlay.opaque")


def _is_whiteout(st: os.stat_result) -> bool:
    """overlayfs's whiteout: a character device 0:0 in an upper layer, a name deleted there."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(directory: Path) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(directory, name, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue  # not set, or the file system keeps no xattrs
    return False


def _find(roots: Sequence[Path], rel: str) -> Path | None:
    """The first layer that has `rel` (a path inside the root, without its leading /). A
    whiteout in a layer above the last means deleted (the layers below do not show through),
    and so does a name absent under an opaque directory. The callers walk one component at a
    time, so only `rel`'s own folder can be opaque here."""
    for depth, root in enumerate(roots):
        p = root / rel if rel else root
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if rel and depth < len(roots) - 1 and _is_opaque(p.parent):
                return None
            continue
        except OSError:
            continue
        if depth < len(roots) - 1 and _is_whiteout(st):
            return None
        return p
    return None


def resolve(roots: Sequence[Path], path: str) -> Path | None:
    """The host path of `path` (absolute, inside the container) with every symbolic link
    followed inside the root; None if something on the way is missing or links loop."""
    parts = deque(path.split("/"))
    cur: list[str] = []
    links = 0
    while parts:
        comp = parts.popleft()
        if comp in ("", "."):
            continue
        if comp == "..":
            if cur:
                cur.pop()
            continue
        hit = _find(roots, "/".join([*cur, comp]))
        if hit is None:
            return None
        if hit.is_symlink():
            links += 1
            if links > MAX_LINKS:
                return None
            target = os.readlink(hit)
            if target.startswith("/"):
                cur = []
            parts.extendleft(reversed(target.split("/")))
            continue
        cur.append(comp)
    return _find(roots, "/".join(cur))


def _runnable(p: Path) -> bool:
    try:
        mode = p.stat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and bool(mode & 0o111)


def check(roots: Sequence[Path], cmd: Sequence[str], path_env: str) -> Missing | None:
    """None if `cmd[0]` would start in that root with that PATH, else docker's reason."""
    if not cmd:
        return None
    name = cmd[0]
    if "/" in name:
        full = name if name.startswith("/") else "/" + name  # a container's cwd is /
        found = resolve(roots, full)
        if found is None:
            return Missing(
                f'{PREFIX}exec: "{name}": stat {name}: no such file or directory', EXIT_NOT_FOUND
            )
        if not _runnable(found):
            return Missing(f'{PREFIX}exec: "{name}": permission denied', EXIT_NOT_EXECUTABLE)
        return None
    for d in path_env.split(":"):
        found = resolve(roots, f"/{d or '.'}/{name}")
        if found is not None and _runnable(found):
            return None
    return Missing(f'{PREFIX}exec: "{name}": executable file not found in $PATH', EXIT_NOT_FOUND)


def path_of(env: Sequence[str], default: str) -> str:
    """The PATH a container's command is looked up in: the last PATH= of its environment."""
    found = default
    for item in env:
        key, _, value = item.partition("=")
        if key == "PATH":
            found = value
    return found
