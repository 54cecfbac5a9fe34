"""The page's data-plane tables (web/tables.py) and captured frames joined to the FDB entry that
sent them (web/packets.py): pure, from agent answers shaped as the agent shapes them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from overlaynet.web import packets
from overlaynet.web.model import View, build_view
from overlaynet.web.tables import host_tables
from tests.unit.web.reports import IPS, NODE_IDS, OVERLAY, report

scapy_l2 = pytest.importorskip("scapy.layers.l2")
from scapy.layers.inet import ICMP, IP, UDP  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402
from scapy.layers.vxlan import VXLAN  # noqa: E402

WEB_MAC = "02:42:0a:00:01:03"
DATAPLANE = {
    "fdb": [
        {
            "vni": 4097,
            "mac": WEB_MAC,
            "remote_ip": IPS["node2"],
            "tx_frames": 7,
            "tx_bytes": 700,
            "rx_frames": 5,
            "rx_bytes": 500,
            "learned": False,
        }
    ],
    "arp": {"10.0.1.3": WEB_MAC},
}


def with_tables(host: str, **kwargs: Any) -> Any:
    """`report(host)` whose overlay inspect carries the VTEP's tables, and DNS/LB answers."""
    rep = report(host, **kwargs)
    docs = {k: dict(v) for k, v in rep.network_docs.items()}
    docs[OVERLAY]["Overlay"] = {**docs[OVERLAY]["Overlay"], "DataPlane": DATAPLANE}
    dns = {
        OVERLAY: {
            "Records": [
                {
                    "Name": "web",
                    "Kind": "container",
                    "Address": "10.0.1.3",
                    "Origin": {"Source": "gossip", "Owner": "node2"},
                }
            ]
        }
    }
    lb = {
        OVERLAY: {
            "VIPs": [
                {
                    "VIP": "10.0.1.9",
                    "Service": "websvc",
                    "Backends": [
                        {"Address": "10.0.1.3", "Task": "websvc.1", "Connections": 4, "Active": 1}
                    ],
                }
            ]
        }
    }
    return replace(rep, network_docs=docs, dns=dns, lb=lb)


def lab_view() -> View:
    node1 = with_tables("node1", containers=[("client", "running")])
    node1 = replace(
        node1,
        endpoints={
            OVERLAY: [
                {
                    "name": "web",
                    "ip": "10.0.1.3",
                    "mac": WEB_MAC,
                    "host": IPS["node2"],
                    "owner": NODE_IDS["node2"],
                    "ltime": 12,
                }
            ]
        },
    )
    return build_view("lab", [node1, report("node2", containers=[("web", "running")])], {})


def test_tables_carry_the_fdb_with_counters_arp_dns_and_vips() -> None:
    tables = host_tables(with_tables("node1"), {v: k for k, v in IPS.items()})
    (net,) = [n for n in tables["networks"] if n["id"] == OVERLAY]
    assert net["vni"] == 4097
    assert net["fdb"] == [
        {
            "mac": WEB_MAC,
            "remote_ip": IPS["node2"],
            "remote_host": "node2",
            "tx_frames": 7,
            "tx_bytes": 700,
            "rx_frames": 5,
            "rx_bytes": 500,
            "learned": False,
        }
    ]
    assert net["arp"] == [{"ip": "10.0.1.3", "mac": WEB_MAC}]
    assert net["dns"] == [
        {"name": "web", "kind": "container", "address": "10.0.1.3", "origin": "gossip (node2)"}
    ]
    assert net["vips"][0]["backends"][0]["task"] == "websvc.1"
    assert not net["published"]


def test_an_overlay_not_joined_here_has_no_tables() -> None:
    tables = host_tables(report("node3", on_overlay=False), {})
    assert [n["id"] for n in tables["networks"]] == ["brnode3"]


def test_the_view_has_a_tables_record_per_answering_host() -> None:
    view = lab_view()
    assert view["tables/node1"]["kind"] == "tables"
    assert "tables/node2" in view


def vxlan_frame(src: str, dst: str, inner_dst: str, vni: int = 4097) -> bytes:
    inner = Ether(src="02:42:0a:00:01:02", dst=inner_dst) / IP(src="10.0.1.2", dst="10.0.1.3")
    inner = inner / ICMP(type=8, id=1, seq=1)
    outer = Ether() / IP(src=src, dst=dst) / UDP(sport=50000, dport=4789) / VXLAN(vni=vni)
    return bytes(outer / inner)


def test_a_vxlan_frame_decodes_layer_by_layer_with_its_vni() -> None:
    pkt = packets.decode(vxlan_frame(IPS["node1"], IPS["node2"], WEB_MAC))
    assert [layer["name"] for layer in pkt.layers] == [
        "Ether",
        "IPv4",
        "UDP",
        "VXLAN",
        "Ether",
        "IPv4",
        "ICMP",
    ]
    assert pkt.vni == 4097 and pkt.inner_dst == WEB_MAC
    assert "echo-request" in pkt.layers[-1]["fields"]


def test_a_unicast_frame_is_joined_to_the_senders_fdb_entry_and_gossip_record() -> None:
    pkt = packets.decode(vxlan_frame(IPS["node1"], IPS["node2"], WEB_MAC))
    text = packets.decided_by(pkt, lab_view())
    assert f"FDB entry on node1: VNI 4097 {WEB_MAC} -> {IPS['node2']} (node2)" in text
    assert "7 frames sent" in text
    assert "endpoint web 10.0.1.3 owned by node2 (Lamport 12)" in text


def test_a_broadcast_is_head_end_replication() -> None:
    pkt = packets.decode(vxlan_frame(IPS["node1"], IPS["node2"], "ff:ff:ff:ff:ff:ff"))
    assert "flooded by node1's VTEP" in packets.decided_by(pkt, lab_view())


def test_a_frame_without_an_entry_says_so() -> None:
    pkt = packets.decode(vxlan_frame(IPS["node1"], IPS["node2"], "02:42:0a:00:01:99"))
    assert "no FDB entry on node1" in packets.decided_by(pkt, lab_view())


def test_a_frame_from_outside_the_lab_is_named_as_such() -> None:
    pkt = packets.decode(vxlan_frame("192.168.0.99", IPS["node2"], WEB_MAC))
    assert "no host of this lab" in packets.decided_by(pkt, lab_view())


def test_a_frame_that_is_no_vxlan_has_no_join() -> None:
    frame = bytes(Ether() / IP(src="192.168.0.11", dst="192.168.0.12") / UDP(dport=7946))
    pkt = packets.decode(frame)
    assert pkt.vni is None and packets.decided_by(pkt, lab_view()) == ""
