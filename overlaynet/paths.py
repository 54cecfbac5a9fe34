"""Where an agent keeps its socket and its state, in a lab or on a real host (DESIGN.md)."""

from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from overlaynet.names import NAMESPACE_PREFIX, KernelNames, lab_namespace

log = logging.getLogger("overlaynet.paths")

#: State holds the gossip key, join secrets, the root key and node credentials: owner only.
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def run_root() -> Path:
    return Path(os.environ.get("OVERLAYNET_RUN_DIR", "/run/overlaynet"))


def state_root() -> Path:
    return Path(os.environ.get("OVERLAYNET_STATE_DIR", "/var/lib/overlaynet"))


@dataclass(frozen=True)
class HostPaths:
    """One host's agent: `lab` is None on a real host (a VM), where the agent owns the machine."""

    host: str
    lab: str | None = None

    @property
    def socket(self) -> Path:
        if self.lab is None:
            return run_root() / f"{self.host}.sock"
        return run_root() / self.lab / f"{self.host}.sock"

    @property
    def state_dir(self) -> Path:
        if self.lab is None:
            return state_root() / self.host
        return lab_dir(self.lab) / self.host

    @property
    def netns(self) -> str | None:
        """The host's own namespace in a lab; None on a real host (the root namespace)."""
        return None if self.lab is None else lab_namespace(self.lab, self.host)

    @property
    def kernel_names(self) -> KernelNames:
        return KernelNames(NAMESPACE_PREFIX if self.netns is None else f"{self.netns}-")

    @property
    def log_file(self) -> Path:
        return self.state_dir / "agent.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "agent.pid"


def lab_dir(lab: str) -> Path:
    return state_root() / "labs" / lab


def make_private_dir(path: Path) -> list[Path]:
    """Create `path` (and any missing parent) as an owner-only folder; narrow the modes of the
    folder, the state folders above it and the files directly in it that are wider than owner
    only. Returns what was narrowed, so the caller can warn about it."""
    root = state_root()
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir(mode=PRIVATE_DIR_MODE)
    narrowed: list[Path] = []
    ours = [p for p in [path, *path.parents] if p == root or root in p.parents]
    for folder in ours:
        if _narrow(folder, PRIVATE_DIR_MODE):
            narrowed.append(folder)
    for entry in path.iterdir():
        if entry.is_file() and not entry.is_symlink() and _narrow(entry, PRIVATE_FILE_MODE):
            narrowed.append(entry)
    for p in narrowed:
        log.warning("narrowed the mode of %s to owner only (it holds secrets)", p)
    return narrowed


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically, owner-only from the first byte (a temporary file
    beside it, created 0600, renamed over it): no window in which it is readable by others."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, PRIVATE_FILE_MODE)  # an old temporary file kept its wider mode
    tmp.replace(path)


def _narrow(path: Path, mode: int) -> bool:
    current = stat.S_IMODE(path.stat().st_mode)
    if current & 0o077 == 0:
        return False
    os.chmod(path, mode)
    return True
