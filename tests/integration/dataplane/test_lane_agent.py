"""The lane through the agent (issue 15): `OVERLAYNET_LANE=fifo overlaynet lab up` gives every
agent's VTEP a lane (the agents inherit the environment of `lab up`), `network inspect` and
`network vtep` show it, and pings between containers on two hosts wake it; a bad value is
refused by the agent at start, saying what it accepts."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from overlaynet.dataplane.lane import LANE_ENV
from tests.integration.labs import Lab, make_lab

HOSTS = (("node1", "192.168.0.12", "10.0.42.0/25"), ("node2", "192.168.0.11", "10.0.42.128/25"))


@pytest.fixture(scope="module")
def lane_lab() -> Iterator[Lab]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(LANE_ENV, "fifo")
        yield from make_lab(2)


def test_agents_started_with_a_lane_serve_pings_through_it(lane_lab: Lab) -> None:
    for host, peer, ip_range in HOSTS:
        lane_lab.ok(host, "network", "create", "-d", "overlay", "--subnet", "10.0.42.0/24",
                    "--ip-range", ip_range, "--opt", "vni=4320", "ovl")  # fmt: skip
        lane_lab.ok(host, "network", "peer", "add", "ovl", peer)
    lane_lab.ok("node1", "run", "-dit", "--name", "p1", "--network", "ovl", "alpine")
    lane_lab.ok("node2", "run", "-dit", "--name", "p2", "--network", "ovl", "alpine")
    template = "{{.NetworkSettings.Networks.ovl.IPAddress}}"
    ip2 = lane_lab.ok("node2", "inspect", "-f", template, "p2").strip()
    out = lane_lab.cli("node1", "exec", "p1", "ping", "-c", "3", "-W", "2", ip2)
    assert out.returncode == 0, out.stdout
    doc = json.loads(lane_lab.ok("node1", "network", "inspect", "ovl"))[0]
    lane = doc["Overlay"]["DataPlane"]["lane"]
    # "nice" where SCHED_FIFO is refused (counted): either way a lane that woke for the pings.
    assert lane["mode"] == "fifo" or lane["fifo_refused"] == 1, lane
    assert lane["wakeups"] >= 1, lane
    vtep = lane_lab.ok("node1", "network", "vtep", "ovl")
    assert f"lane: {lane['mode']} (" in vtep, vtep


def test_an_agent_refuses_an_unknown_lane_at_start() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "overlaynet.agent", "--host", "node9", "--lane", "rt"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 2
    assert "--lane (or $OVERLAYNET_LANE) must be one of off, fifo, nice, not 'rt'" in out.stderr
