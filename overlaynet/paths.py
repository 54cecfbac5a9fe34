"""Where an agent keeps its socket and its state, in a lab or on a real host (DESIGN.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from overlaynet.names import NAMESPACE_PREFIX, KernelNames, lab_namespace


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
