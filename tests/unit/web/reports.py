"""Agent answers as the real agent shapes them (overlaynet/agent/daemon.py), for the web tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from overlaynet.web.model import HostReport

IPS = {"node1": "192.168.0.11", "node2": "192.168.0.12", "node3": "192.168.0.13"}
NODE_IDS = {"node1": "id1aaaaaaaaaa", "node2": "id2bbbbbbbbbb", "node3": "id3cccccccccc"}
OVERLAY = "ovlnet0000000000000000001"


def members(states: dict[str, str]) -> list[dict[str, Any]]:
    """gossip.members rows: host name -> SWIM state."""
    return [
        {"name": NODE_IDS[h], "addr": IPS[h], "state": s, "incarnation": 1}
        for h, s in sorted(states.items())
    ]


def report(
    host: str,
    *,
    containers: Sequence[tuple[str, str]] = (),
    on_overlay: bool = True,
    gossip: dict[str, str] | None = None,
    status: str = "Up 5 seconds",
) -> HostReport:
    """What `host` answers: its bridge, the overlay (joined or not), containers (name, state)
    attached to the overlay when it is joined, and its gossip view (all alive by default)."""
    bridge_id = f"br{host}"
    rows = [
        {"id": f"host{host}", "name": "host", "driver": "host", "scope": "local"},
        {"id": bridge_id, "name": "bridge", "driver": "bridge", "scope": "local"},
        {"id": OVERLAY, "name": "webnet", "driver": "overlay", "scope": "swarm"},
    ]
    ctr_rows = [
        {
            "id": f"{host}-{name}",
            "image": "alpine",
            "names": name,
            "state": state,
            "status": status if state == "running" else "Exited (137) 2 seconds ago",
        }
        for name, state in containers
    ]
    overlay_doc: dict[str, Any] = {
        "Name": "webnet",
        "IPAM": {"Config": [{"Subnet": "10.0.1.0/24"}]},
        "Containers": {
            r["id"]: {"Name": r["names"], "IPv4Address": f"10.0.1.{i + 2}/24"}
            for i, r in enumerate(ctr_rows)
        }
        if on_overlay
        else {},
        "Overlay": {"VNI": 4097, "VTEP": f"{IPS[host]}:4789"} if on_overlay else {"VNI": 4097},
    }
    bridge_doc = {"Name": "bridge", "IPAM": {"Config": [{"Subnet": "172.17.0.0/16"}]}}
    endpoints = (
        {
            OVERLAY: [
                {
                    "name": r["names"],
                    "ip": f"10.0.1.{i + 2}",
                    "mac": "02:42:0a:00:01:02",
                    "host": IPS[host],
                    "owner": NODE_IDS[host],
                    "ltime": i + 1,
                }
                for i, r in enumerate(ctr_rows)
            ]
        }
        if on_overlay
        else {}
    )
    return HostReport(
        host,
        IPS[host],
        info={"Swarm": {"Role": "worker", "NodeID": NODE_IDS[host]}},
        networks=rows,
        network_docs={bridge_id: bridge_doc, OVERLAY: overlay_doc},
        containers=ctr_rows,
        members=members(dict.fromkeys(IPS, "alive") if gossip is None else gossip),
        endpoints=endpoints,
    )


def silent(host: str, error: str = "no agent: connection refused") -> HostReport:
    return HostReport(host, IPS[host], error=error)
