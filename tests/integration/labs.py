"""Real labs for integration tests: a unique name each, removed even when a test fails."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from overlaynet import lab as labmod


@dataclass
class Lab:
    name: str

    def cli(
        self, host: str, *args: str, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """`overlaynet --lab NAME -H host ARGS…` as a user types it."""
        argv = [sys.executable, "-m", "overlaynet", "--lab", self.name, "-H", host, *args]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({out.returncode}): {out.stderr}")
        return out

    def ok(self, host: str, *args: str) -> str:
        return self.cli(host, *args, check=True).stdout

    def netns_of(self, host: str) -> str:
        return f"onet-{self.name}-{host}"


def make_lab(hosts: int, *, swarm: bool = False) -> Iterator[Lab]:
    """A lab of `hosts` hosts (in a swarm: node1 the manager, the others workers), removed
    even when a test fails."""
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, hosts, swarm=swarm)
        yield Lab(name)
    finally:
        labmod.down(name)


def wait_until(check: Callable[[], bool], seconds: float = 15.0) -> bool:
    """Poll `check` until it holds or `seconds` pass (convergence, not speed, is under test)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False
