"""An overlay in offload mode on a 2-host swarm (issue 15): the agents advertise offload through
gossip, so each sends the other super-frames whole; ping and iperf3 work both ways; `network
inspect` and `network vtep` show offload and each peer's wire. A network without it beside it
stays on the RFC wire.

A swarm network's options do not reach the managers, its labels do: `--opt offload=on` is
folded into OFFLOAD_LABEL at create (`options.fold_offload_into_labels`, in the create handler),
the label every agent reads; a bad value is refused at create."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet import lab as labmod
from overlaynet.dataplane.options import OFFLOAD_LABEL
from tests.integration.labs import Lab, wait_until

NODE1, NODE2 = "192.168.0.11", "192.168.0.12"


@pytest.fixture
def swarm2() -> Iterator[Lab]:
    name = "of" + secrets.token_hex(4)
    try:
        labmod.up(name, 2, swarm=True)
        yield Lab(name)
    finally:
        labmod.down(name)


def _dataplane(lab: Lab, host: str, net: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.ok(host, "network", "inspect", net))[0]
    return doc


def _ip(lab: Lab, host: str, container: str, net: str) -> str:
    template = "{{.NetworkSettings.Networks." + net + ".IPAddress}}"
    return lab.ok(host, "inspect", "-f", template, container).strip()


def _wire(lab: Lab, host: str, net: str) -> dict[str, str] | None:
    offload = _dataplane(lab, host, net)["Overlay"]["DataPlane"]["offload"]
    return None if offload is None else dict(offload["wire"])


def test_offload_option_between_two_agents(swarm2: Lab) -> None:
    lab = swarm2
    bad = lab.cli("node1", "network", "create", "-d", "overlay", "--opt", "offload=maybe", "x")
    assert bad.returncode != 0 and "offload" in bad.stderr
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "--opt", "offload=on",
           "ofnet")  # fmt: skip
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "plainnet")
    for net, a, b in (("ofnet", "o1", "o2"), ("plainnet", "p1", "p2")):
        lab.ok("node1", "run", "-dit", "--name", a, "--network", net, "host", "sh")
        lab.ok("node2", "run", "-dit", "--name", b, "--network", net, "host", "sh")
    assert _dataplane(lab, "node1", "ofnet")["Labels"].get(OFFLOAD_LABEL) == "on"
    # Negotiated: each side learns from gossip that the other takes offload datagrams.
    assert wait_until(lambda: _wire(lab, "node1", "ofnet") == {NODE2: "offload"}, 30)
    assert wait_until(lambda: _wire(lab, "node2", "ofnet") == {NODE1: "offload"}, 30)
    assert _wire(lab, "node1", "plainnet") is None
    vtep = lab.ok("node1", "network", "vtep", "ofnet")
    assert f"offload: on, tap: tso, wire per peer: {NODE2}=offload" in vtep, vtep
    assert "offload" not in lab.ok("node1", "network", "vtep", "plainnet")

    o1, o2 = _ip(lab, "node1", "o1", "ofnet"), _ip(lab, "node2", "o2", "ofnet")
    assert lab.cli("node1", "exec", "o1", "ping", "-c", "3", "-W", "2", o2).returncode == 0
    assert lab.cli("node2", "exec", "o2", "ping", "-c", "3", "-W", "2", o1).returncode == 0
    lab.ok("node2", "exec", "o2", "iperf3", "-s", "-1", "-D", "-B", o2)
    assert wait_until(lambda: ":5201" in lab.ok("node2", "exec", "o2", "ss", "-ltn"), 15)
    out = lab.ok("node1", "exec", "o1", "iperf3", "-c", o2, "-t", "1", "-J")
    assert int(json.loads(out)["end"]["sum_received"]["bytes"]) > 0
    counters = _dataplane(lab, "node1", "ofnet")["Overlay"]["DataPlane"]["counters"]
    assert counters.get("tx_offload_frames", 0) > 0, counters
    rx = _dataplane(lab, "node2", "ofnet")["Overlay"]["DataPlane"]["counters"]
    assert rx.get("rx_offload_frames", 0) > 0, rx
