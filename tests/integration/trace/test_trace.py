"""`overlaynet trace` on a real 2-host lab: a static overlay (no control plane, so each case can
break exactly one thing) with c1 on node1 and c2 on node2, c3 on another overlay on node1.

Each test asserts the stopping point the trace names, as a user reads it in `--json`: the
happy path across hosts (ICMP and tcp:PORT to a listening port), the name of a container on
another network, a destination on no network of FROM, a DF probe of 1460 bytes on the overlay
MTU 1450, a deleted FDB entry, and a peer whose agent is down."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet.lab import lifecycle
from tests.integration.labs import Lab, make_lab, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET, OTHER, NOFLOOD = "ovt", "ovb", "ovf"
NODE1_IP, NODE2_IP = "192.168.0.11", "192.168.0.12"
HTTP_PORT = "8080"


def _ep(lab: Lab, host: str, c: str, net: str, field: str) -> str:
    template = "{{.NetworkSettings.Networks." + net + "." + field + "}}"
    return lab.ok(host, "inspect", "-f", template, c).strip()


def _overlay(lab: Lab, name: str, vni: str, third: int, hosts: tuple[str, ...]) -> None:
    for i, host in enumerate(hosts):
        lab.ok(
            host, "network", "create", "-d", "overlay", "--subnet", f"10.0.{third}.0/24",
            "--ip-range", f"10.0.{third}.{128 * i}/25", "--opt", f"vni={vni}", name,
        )  # fmt: skip


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    for lab in make_lab(2):
        _overlay(lab, NET, "4400", 41, ("node1", "node2"))
        _overlay(lab, OTHER, "4401", 42, ("node1",))
        _overlay(lab, NOFLOOD, "4402", 43, ("node1", "node2"))
        lab.ok("node1", "run", "-dit", "--name", "c1", "--network", NET, "alpine")
        lab.ok("node2", "run", "-d", "--name", "c2", "--network", NET, "alpine", "httpd", "-f",
               "-p", HTTP_PORT)  # fmt: skip
        lab.ok("node1", "run", "-dit", "--name", "c3", "--network", OTHER, "alpine")
        lab.ok("node1", "run", "-dit", "--name", "c7", "--network", NET, "alpine")
        lab.ok("node1", "run", "-dit", "--name", "c5", "--network", NOFLOOD, "alpine")
        lab.ok("node2", "run", "-dit", "--name", "c6", "--network", NOFLOOD, "alpine")
        # NET: peers both ways (they are the hosts each VTEP accepts) and each other's endpoint
        # (MAC behind host, IP answered by ARP), so known unicast is an FDB hit.
        for here, peer in (("node1", NODE2_IP), ("node2", NODE1_IP)):
            lab.ok(here, "network", "peer", "add", NET, peer)
        for here, there, c, ip in (
            ("node1", "node2", "c2", NODE2_IP),
            ("node2", "node1", "c1", NODE1_IP),
        ):
            mac, addr = _ep(lab, there, c, NET, "MacAddress"), _ep(lab, there, c, NET, "IPAddress")
            lab.ok(here, "network", "fdb", "add", NET, mac, ip, "--ip", addr)
        # NOFLOOD: node1 has no peer to flood to, only c6's FDB entry: without it, a drop.
        mac, addr = (
            _ep(lab, "node2", "c6", NOFLOOD, "MacAddress"),
            _ep(lab, "node2", "c6", NOFLOOD, "IPAddress"),
        )
        lab.ok("node1", "network", "fdb", "add", NOFLOOD, mac, NODE2_IP, "--ip", addr)
        lab.ok("node2", "network", "peer", "add", NOFLOOD, NODE1_IP)
        yield lab


def trace(lab: Lab, *args: str, host: str = "node1") -> dict[str, Any]:
    out = lab.cli(host, "trace", *args, "--json", timeout=90)
    assert out.stdout, out.stderr
    doc: dict[str, Any] = json.loads(out.stdout)
    assert out.returncode == (0 if doc["reached"] else 1), out.stderr
    return doc


def _stages(doc: dict[str, Any]) -> list[str]:
    return [h["stage"] for h in doc["hops"]]


def test_icmp_across_hosts_is_answered_and_shows_both_vteps(lab: Lab) -> None:
    c2 = _ep(lab, "node2", "c2", NET, "IPAddress")
    doc = trace(lab, "c1", c2)
    assert doc["reached"], doc["stop"]
    stages = _stages(doc)
    for stage in ("container", "veth", "bridge", "vtep", "underlay", "peer-vtep", "reply"):
        assert stage in stages, stages
    vtep = next(h for h in doc["hops"] if h["stage"] == "vtep")
    assert "FDB hit" in vtep["decision"] and "VNI 4400" in vtep["decision"]
    underlay = next(h for h in doc["hops"] if h["stage"] == "underlay")
    assert f"> {NODE2_IP}:4789" in underlay["decision"] and NODE1_IP in underlay["decision"]
    peer = next(h for h in doc["hops"] if h["stage"] == "peer-vtep")
    assert peer["host"] == "node2" and f"member {NODE1_IP}" in peer["decision"]
    assert "echo-reply" in doc["hops"][-1]["decision"]
    # The table form says the same.
    text = lab.cli("node1", "trace", "c1", c2).stdout
    assert "Result: answered" in text and "peer-vtep" in text


def test_tcp_to_a_listening_port_is_answered_with_syn_ack(lab: Lab) -> None:
    c2 = _ep(lab, "node2", "c2", NET, "IPAddress")
    doc = trace(lab, "c1", c2, "--proto", f"tcp:{HTTP_PORT}")
    assert doc["reached"], doc["stop"]
    assert "SYN-ACK" in doc["hops"][-1]["decision"]


def test_a_name_on_the_same_host_resolves_and_stays_on_the_bridge(lab: Lab) -> None:
    c7 = _ep(lab, "node1", "c7", NET, "IPAddress")
    doc = trace(lab, "c1", "c7")
    assert doc["reached"], doc["stop"]
    assert doc["resolution"]["address"] == c7 and doc["hops"][0]["stage"] == "dns"
    assert f"IN A {c7}" in doc["hops"][0]["decision"]
    stages = _stages(doc)
    assert "vtep" not in stages and "underlay" not in stages, stages
    bridge = next(h for h in doc["hops"] if h["stage"] == "bridge")
    assert "on-ve" in bridge["decision"] and "on-tap" not in bridge["decision"]


def test_a_container_on_another_network_is_not_resolvable_there(lab: Lab) -> None:
    doc = trace(lab, "c1", "c3")
    assert doc["stop"]["where"] == "dns"
    assert f"name c3 not resolvable on network {NET}" in doc["stop"]["why"]


def test_a_destination_on_no_network_of_the_source_has_no_route(lab: Lab) -> None:
    c3 = _ep(lab, "node1", "c3", OTHER, "IPAddress")
    doc = trace(lab, "c1", c3)
    assert doc["stop"]["where"] == "container"
    assert f"{c3} is not on a network of c1" in doc["stop"]["why"]


def test_a_df_probe_of_1460_bytes_is_too_big_for_mtu_1450(lab: Lab) -> None:
    c2 = _ep(lab, "node2", "c2", NET, "IPAddress")
    doc = trace(lab, "c1", c2, "--size", "1460")
    assert doc["stop"]["where"] == "container"
    assert "too big for the MTU 1450 with DF" in doc["stop"]["why"]
    # 1450 itself fits: the limit is the MTU, not the probe.
    assert trace(lab, "c1", c2, "--size", "1450")["reached"]


def test_a_deleted_fdb_entry_stops_at_the_vtep(lab: Lab) -> None:
    c6_ip = _ep(lab, "node2", "c6", NOFLOOD, "IPAddress")
    c6_mac = _ep(lab, "node2", "c6", NOFLOOD, "MacAddress")
    # The ping gets c6's MAC into c5's neighbour cache (node1's VTEP answers the ARP from the
    # FDB entry's --ip); its reply is not the point. Then the VTEP loses the entry.
    lab.cli("node1", "exec", "c5", "ping", "-c", "1", "-W", "1", c6_ip)
    lab.ok("node1", "network", "fdb", "rm", NOFLOOD, c6_mac)
    try:
        doc = trace(lab, "c5", c6_ip)
        assert doc["stop"]["where"] == "vtep", doc["stop"]
        assert f"no FDB entry for {c6_mac}" in doc["stop"]["why"]
    finally:
        lab.ok("node1", "network", "fdb", "add", NOFLOOD, c6_mac, NODE2_IP, "--ip", c6_ip)
    # With the entry back, the same probe leaves the VTEP (an FDB hit).
    doc = trace(lab, "c5", c6_ip)
    assert any(h["stage"] == "vtep" and "FDB hit" in h["decision"] for h in doc["hops"]), doc


def test_an_address_nobody_answers_arp_for_stops_in_the_container(lab: Lab) -> None:
    # On NOFLOOD node1 has no peer: an ARP request the VTEP cannot answer goes nowhere.
    doc = trace(lab, "c5", "10.0.43.200")
    assert doc["stop"]["where"] == "container", doc["stop"]
    assert "ARP for 10.0.43.200 unanswered" in doc["stop"]["why"]


def test_a_host_whose_agent_is_down_is_named(lab: Lab) -> None:
    c2 = _ep(lab, "node2", "c2", NET, "IPAddress")
    lifecycle.stop_agent(lab.name, "node2")
    try:
        assert wait_until(lambda: lifecycle.supervisor_pid(lab.name, "node2") is None, 10)
        doc = trace(lab, "c1", c2)
        assert doc["stop"]["host"] == "node2"
        assert "peer VTEP never received it; host node2 is Down" in doc["stop"]["why"]
    finally:
        lifecycle.start_agent(lab.name, "node2")
