"""One host's data-plane tables for the page, per network: the FDB with its per-entry counters,
the ARP answers the VTEP gives, the DNS records, the VIPs with their backends, and the published
ports (the ingress network's VIPs). Pure: built from what the agent answered (network.inspect's
DataPlane, dns.records, network.lb), the same views the CLI prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from overlaynet.web.model import HostReport, Record

# Docker's routing-mesh network: its VIPs are the swarm's published ports.
INGRESS = "ingress"


def host_tables(report: HostReport, by_ip: Mapping[str, str]) -> Record:
    """The `tables/<host>` record: one entry per network that has a table on this host."""
    names = {str(r.get("id", "")): r for r in report.networks}
    networks = []
    for net_id, doc in sorted(report.network_docs.items()):
        row = names.get(net_id, {})
        overlay = doc.get("Overlay") or {}
        dataplane = overlay.get("DataPlane") or {}
        if overlay and "VTEP" not in overlay:
            continue  # a swarm overlay this host only knows by name
        name = str(row.get("name") or doc.get("Name", net_id))
        networks.append(
            {
                "id": net_id,
                "name": name,
                "driver": str(row.get("driver", "")),
                "vni": overlay.get("VNI"),
                "fdb": fdb_rows(dataplane, by_ip),
                "arp": [
                    {"ip": ip, "mac": mac}
                    for ip, mac in sorted((dataplane.get("arp") or {}).items())
                ],
                "dns": dns_rows(report.dns.get(net_id) or {}),
                "vips": vip_rows(report.lb.get(net_id) or {}),
                "published": name == INGRESS,
            }
        )
    return {"kind": "tables", "host": report.name, "networks": networks}


def fdb_rows(dataplane: Mapping[str, Any], by_ip: Mapping[str, str]) -> list[Record]:
    rows = []
    for entry in dataplane.get("fdb") or []:
        remote = str(entry.get("remote_ip", ""))
        rows.append(
            {
                "mac": str(entry.get("mac", "")),
                "remote_ip": remote,
                "remote_host": by_ip.get(remote, ""),
                "tx_frames": int(entry.get("tx_frames", 0)),
                "tx_bytes": int(entry.get("tx_bytes", 0)),
                "rx_frames": int(entry.get("rx_frames", 0)),
                "rx_bytes": int(entry.get("rx_bytes", 0)),
                "learned": bool(entry.get("learned", False)),
            }
        )
    return sorted(rows, key=lambda r: (r["mac"], r["remote_ip"]))


def dns_rows(doc: Mapping[str, Any]) -> list[Record]:
    rows = []
    for r in doc.get("Records") or []:
        origin = r.get("Origin") or {}
        source = str(origin.get("Source", ""))
        owner = str(origin.get("Owner", ""))
        rows.append(
            {
                "name": str(r.get("Name", "")),
                "kind": str(r.get("Kind", "")),
                "address": str(r.get("Address", "")),
                "origin": f"{source} ({owner})" if owner else source,
            }
        )
    return rows


def vip_rows(doc: Mapping[str, Any]) -> list[Record]:
    return [
        {
            "vip": str(v.get("VIP", "")),
            "service": str(v.get("Service", "")),
            "backends": [
                {
                    "address": str(b.get("Address", "")),
                    "task": str(b.get("Task", "")),
                    "connections": b.get("Connections", 0),
                    "active": b.get("Active", 0),
                }
                for b in v.get("Backends") or []
            ],
        }
        for v in doc.get("VIPs") or []
    ]
