"""Real labs for integration tests: a unique name each, removed even when a test fails."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator
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


def make_lab(hosts: int) -> Iterator[Lab]:
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, hosts)
        yield Lab(name)
    finally:
        labmod.down(name)
