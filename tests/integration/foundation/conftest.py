"""Fixtures the foundation tests share: a host namespace of the test's own, and running a
script inside it."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.host import netns


@pytest.fixture
def host_ns() -> Iterator[tuple[str, str]]:
    """A namespace standing for one host (`onet-t…-h`) and the prefix of the namespaces made
    under it; all of them removed afterwards, also after a failure."""
    lab = "t" + uuid.uuid4().hex[:8]
    host = f"onet-{lab}-h"
    netns.create(host)
    try:
        yield host, f"{host}-"
    finally:
        for name in netns.list_names(f"{host}-"):
            netns.remove(name)
        netns.remove(host)


def run_in_host(host: str, script: str, prefix: str) -> dict[str, Any]:
    """Run `script` (python -c, argv[1] = `prefix`) inside `host`; the JSON it printed."""
    run = subprocess.run(
        ["ip", "netns", "exec", host, sys.executable, "-c", script, prefix],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    return out
