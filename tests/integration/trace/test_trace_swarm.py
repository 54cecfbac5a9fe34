"""`overlaynet trace` on a real 3-host swarm: attachable overlays made on the manager, a2 on
node2 and a3 on node3 on a plain overlay (OVS) and an encrypted one (OVE), a service `web` with
no task on OVS (its VIP is balanced in node2's sandbox).

Each test asserts what the trace names, as a user reads it in `--json`: both VTEP hops and the
embedded resolver's answer by container name; the sealing key on an encrypted overlay and the
probe matched after opening; a closed port reset by the destination; a VIP with no task
filtered by its service rule (the sandbox's nft table); a partitioned host named with the nft
rule that drops the probe, then Down once gossip says so, and answered again after `lab heal`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.labs import Lab, make_lab, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

OVS, OVE = "ovs", "ove"
NODE2_IP, NODE3_IP = "192.168.0.12", "192.168.0.13"
HTTP_PORT = "8080"
CLOSED_PORT = "81"


def _ep(lab: Lab, host: str, c: str, net: str, field: str) -> str:
    template = "{{.NetworkSettings.Networks." + net + "." + field + "}}"
    return lab.ok(host, "inspect", "-f", template, c).strip()


def _gossip_names(lab: Lab, host: str, net: str) -> set[str]:
    out = lab.cli(host, "gossip", "endpoints", net).stdout
    return {line.split()[1] for line in out.splitlines()[1:] if len(line.split()) > 1}


def _gossip_state(lab: Lab, host: str, addr: str) -> str:
    out = lab.cli(host, "gossip", "members").stdout
    return next((ln.split()[2] for ln in out.splitlines() if ln.split()[1:2] == [addr]), "")


def _set_up(lab: Lab) -> None:
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", OVS)
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "--opt", "encrypted", OVE)
    lab.ok("node2", "run", "-dit", "--name", "a2", "--network", OVS, "alpine", "sh")
    lab.ok("node2", "network", "connect", OVE, "a2")
    lab.ok("node3", "run", "-d", "--name", "a3", "--network", OVS, "alpine", "httpd", "-f",
           "-p", HTTP_PORT)  # fmt: skip
    lab.ok("node3", "network", "connect", OVE, "a3")
    lab.ok("node1", "service", "create", "--name", "web", "--network", OVS, "--replicas", "0",
           "alpine", "httpd", "-f", "-p", "80")  # fmt: skip

    def both_known() -> bool:
        return all({"a2", "a3"} <= _gossip_names(lab, "node2", net) for net in (OVS, OVE))

    assert wait_until(both_known, 30)
    assert wait_until(lambda: "web" in lab.cli("node2", "network", "lb", OVS).stdout, 30)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    for lab in make_lab(3, swarm=True):
        _set_up(lab)
        yield lab


def trace(lab: Lab, *args: str, host: str = "node2") -> dict[str, Any]:
    out = lab.cli(host, "trace", *args, "--json", timeout=90)
    assert out.stdout, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    assert out.returncode == (0 if doc["reached"] else 1), out.stderr
    return doc


def _hop(doc: dict[str, Any], stage: str) -> dict[str, Any]:
    return next(h for h in doc["hops"] if h["stage"] == stage)


def test_by_name_across_swarm_hosts_shows_both_vteps_and_the_embedded_resolver(lab: Lab) -> None:
    a3 = _ep(lab, "node3", "a3", OVS, "IPAddress")
    doc = trace(lab, "a2", "a3", "--network", OVS)
    assert doc["reached"], doc["stop"]
    res = doc["resolution"]
    assert res["server"] == "127.0.0.11" and res["address"] == a3, res
    assert doc["hops"][0]["stage"] == "dns" and f"IN A {a3}" in doc["hops"][0]["decision"]
    vtep, peer = _hop(doc, "vtep"), _hop(doc, "peer-vtep")
    assert vtep["host"] == "node2" and f"-> {NODE3_IP}" in vtep["decision"], vtep
    assert peer["host"] == "node3" and f"member {NODE2_IP}" in peer["decision"], peer
    assert "sealed" not in vtep["decision"]  # OVS is a plain overlay
    assert "echo-reply" in doc["hops"][-1]["decision"]
    # Without --network the resolver answers from either network of a2: the trace names the
    # one the answer is on, and takes it.
    doc = trace(lab, "a2", "a3")
    on = OVS if doc["resolution"]["address"] == a3 else OVE
    assert doc["resolution"]["network"] == on == doc["source"]["network"], doc["resolution"]


def test_an_encrypted_overlay_shows_the_sealing_key_and_matches_after_opening(lab: Lab) -> None:
    a3 = _ep(lab, "node3", "a3", OVE, "IPAddress")
    doc = trace(lab, "a2", "a3", "--network", OVE)
    assert doc["reached"], doc["stop"]
    assert doc["resolution"]["address"] == a3
    inspect = json.loads(lab.ok("node2", "network", "inspect", OVE))[0]
    keys = re.search(r'"KeyIds": \[\s*(\d+)', json.dumps(inspect, indent=4))
    assert keys is not None, inspect
    sealed = re.search(r"sealed with key (\d+)", _hop(doc, "vtep")["decision"])
    opened = re.search(r"opened with key (\d+)", _hop(doc, "peer-vtep")["decision"])
    assert sealed and opened, doc["hops"]
    assert sealed[1] == opened[1] == keys[1]  # the primary key, end to end
    assert "AES-GCM sealed" in _hop(doc, "underlay")["decision"]
    # Matched after opening on node3 and back: the reply's VTEP hops are there too.
    assert [h["host"] for h in doc["hops"] if h["stage"] == "reply"][:2] == ["node3", "node2"]


def test_tcp_to_a_closed_port_is_reset_by_the_destination(lab: Lab) -> None:
    doc = trace(lab, "a2", "a3", "--network", OVS, "--proto", f"tcp:{CLOSED_PORT}")
    assert doc["reached"], doc["stop"]
    assert "RST" in doc["hops"][-1]["decision"]
    assert (
        f"reset by the destination {_ep(lab, 'node3', 'a3', OVS, 'IPAddress')}" in (doc["outcome"])
    )
    assert f"nothing listens on tcp/{CLOSED_PORT}" in doc["outcome"]
    # The listening port is told apart.
    doc = trace(lab, "a2", "a3", "--network", OVS, "--proto", f"tcp:{HTTP_PORT}")
    assert doc["reached"] and f"listens on tcp/{HTTP_PORT}" in doc["outcome"], doc


def test_a_vip_with_no_task_is_filtered_by_the_service_rule(lab: Lab) -> None:
    doc = trace(lab, "a2", "web", "--network", OVS, "--proto", "tcp:80")
    assert not doc["reached"]
    stop = doc["stop"]
    assert stop["host"] == "node2" and stop["where"] == "destination", stop
    assert "filtered by a service rule" in stop["why"] and "service web" in stop["why"]
    assert "table ip onet_lb in lb_ovs" in stop["why"] and "RST" in stop["why"], stop
    # The probe went to the sandbox's port on this host's bridge, not to the VXLAN TAP.
    assert "vtep" not in [h["stage"] for h in doc["hops"]]
    assert doc["source"]["lb"]["rule"] == "reject" and doc["source"]["lb"]["backends"] == []


def test_a_partitioned_host_is_named_then_down_and_heal_brings_it_back(lab: Lab) -> None:
    a3 = _ep(lab, "node3", "a3", OVS, "IPAddress")
    lab.ok("node1", "lab", "partition", "node2", "node3")
    try:
        doc = trace(lab, "a2", a3)
        stop = doc["stop"]
        assert stop["host"] == "node3" and stop["where"] == "peer-vtep", stop
        assert "peer VTEP never received it" in stop["why"]
        assert "node3 is partitioned from node2" in stop["why"]
        assert f"ip saddr {NODE3_IP} drop" in stop["why"], stop  # the rule, as installed
        # Once gossip on node2 has node3 dead, the trace says Down.
        assert wait_until(lambda: _gossip_state(lab, "node2", NODE3_IP) == "dead", 60)
        # (node2 has dropped node3's endpoints by then: the VTEP says why it has none.)
        stop = trace(lab, "a2", a3)["stop"]
        assert "host node3 is Down (gossip on node2" in stop["why"], stop
        assert "partitioned from node2" in stop["why"], stop
    finally:
        lab.ok("node1", "lab", "heal")
    assert wait_until(lambda: trace(lab, "a2", a3)["reached"], 60)
