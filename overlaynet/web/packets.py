"""Captured underlay frames for the page: decoded layer by layer and joined to the table entry
that sent each one. Pure: bytes and the server's view in, JSON-ready records out.

The layers are overlaynet/lab/capture.py's (`describe`, the CLI's `lab capture`), so the page and
the terminal read the same. The join: a VXLAN datagram left the host whose underlay address is
its outer source; that host's VTEP chose the outer destination from its FDB entry for the
inner destination MAC in that VNI (or flooded a broadcast to every member: head-end
replication), and that entry was learned from a gossip endpoint record (owner, Lamport time).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from overlaynet.lab.capture import describe
from overlaynet.web.model import Record

BROADCAST = "ff:ff:ff:ff:ff:ff"


@dataclass(frozen=True)
class Packet:
    length: int
    layers: list[dict[str, str]]
    outer_src: str | None = None
    outer_dst: str | None = None
    vni: int | None = None
    inner_src: str | None = None
    inner_dst: str | None = None


def decode(frame: bytes) -> Packet:
    """The layers of one underlay frame, and the addresses the join needs."""
    from scapy.layers.inet import IP
    from scapy.layers.l2 import Ether
    from scapy.layers.vxlan import VXLAN

    layers = [{"name": layer.name, "fields": layer.fields} for layer in describe(frame)]
    pkt: Any = Ether(frame)
    if not pkt.haslayer(VXLAN) or not pkt.haslayer(IP):
        return Packet(len(frame), layers)
    vxlan = pkt[VXLAN]
    inner = vxlan.payload
    inner_src = inner_dst = None
    if isinstance(inner, Ether):
        inner_src, inner_dst = str(inner.src), str(inner.dst)
    return Packet(
        len(frame),
        layers,
        outer_src=str(pkt[IP].src),
        outer_dst=str(pkt[IP].dst),
        vni=int(vxlan.vni),
        inner_src=inner_src,
        inner_dst=inner_dst,
    )


def is_group(mac: str) -> bool:
    """Broadcast or multicast: the I/G bit, the low bit of the first octet (IEEE 802)."""
    try:
        return bool(int(mac.split(":")[0], 16) & 1)
    except ValueError:
        return False


def decided_by(packet: Packet, view: Mapping[str, Record]) -> str:
    """Which table entry sent this datagram, in words; "" for a frame that is no VXLAN."""
    if packet.vni is None or packet.outer_src is None:
        return ""
    hosts = {r["ip"]: r["name"] for r in view.values() if r.get("kind") == "host"}
    sender = hosts.get(packet.outer_src)
    if sender is None:
        return f"sent by {packet.outer_src}, which is no host of this lab"
    net = _network(view.get(f"tables/{sender}") or {}, packet.vni)
    if net is None:
        return f"sent by {sender}, which has no table for VNI {packet.vni}"
    mac = packet.inner_dst or ""
    if is_group(mac):
        return (
            f"flooded by {sender}'s VTEP to every member of {net['name']} "
            f"(head-end replication of {mac})"
        )
    receiver = hosts.get(packet.outer_dst or "", packet.outer_dst)
    for entry in net["fdb"]:
        if entry["mac"] == mac and entry["remote_ip"] == packet.outer_dst:
            text = (
                f"FDB entry on {sender}: VNI {packet.vni} {mac} -> {entry['remote_ip']} "
                f"({receiver}), {entry['tx_frames']} frames sent"
            )
            origin = _gossip_record(view.get(f"endpoints/{sender}") or {}, net["name"], mac)
            return f"{text}; {origin}" if origin else text
    return f"no FDB entry on {sender} for {mac} in VNI {packet.vni} (sent to {receiver})"


def _network(tables: Mapping[str, Any], vni: int) -> Mapping[str, Any] | None:
    for net in tables.get("networks") or []:
        if net.get("vni") == vni:
            found: Mapping[str, Any] = net
            return found
    return None


def _gossip_record(endpoints: Mapping[str, Any], network: str, mac: str) -> str:
    for row in (endpoints.get("tables") or {}).get(network) or []:
        if row.get("mac") == mac:
            return (
                f"learned from gossip: endpoint {row['name']} {row['ip']} owned by "
                f"{row['owner']} (Lamport {row['ltime']})"
            )
    return ""


def to_json(packet: Packet, view: Mapping[str, Record]) -> Record:
    return {
        "length": packet.length,
        "layers": packet.layers,
        "vni": packet.vni,
        "outer_src": packet.outer_src,
        "outer_dst": packet.outer_dst,
        "inner_src": packet.inner_src,
        "inner_dst": packet.inner_dst,
        "decided_by": decided_by(packet, view),
    }
