"""`swarm init` in a lab not named "default": the join line it prints for each other host is
pasted as is (no OVERLAYNET_LAB) and joins that host of this lab."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.integration.labs import Lab


def test_the_pasted_join_line_joins_this_labs_host(lab2: Lab) -> None:
    init = lab2.ok("node1", "swarm", "init", "--advertise-addr", "eth0")
    pasted = [line.split() for line in init.splitlines() if "-H node2 swarm join" in line]
    assert len(pasted) == 1, init
    assert pasted[0][:5] == ["overlaynet", "--lab", lab2.name, "-H", "node2"], pasted
    env = {k: v for k, v in os.environ.items() if k not in ("OVERLAYNET_LAB", "OVERLAYNET_HOST")}
    out = subprocess.run(
        [sys.executable, "-m", "overlaynet", *pasted[0][1:]],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "This node joined a swarm as a worker.\n"
    nodes = lab2.ok("node1", "node", "ls", "--format", "{{.Hostname}}").split()
    assert sorted(nodes) == ["node1", "node2"]
    lab2.ok("node2", "swarm", "leave")
    lab2.ok("node1", "swarm", "leave", "--force")
