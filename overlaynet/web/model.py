"""What the agents answered, turned into one flat view of the cluster: key -> JSON record.

Pure: no sockets, no clock. The poller (agents.py) fills a `HostReport` per host from the agents'
API; `build_view` joins them. A flat mapping keeps the rest simple: a change is a key set or
deleted (diff.py), a browser's backlog coalesces per key (feed.py), and the page keeps the same
mapping and redraws what a patch touches.

Keys:
    underlay                  the lab's switch
    host/<name>               a host: address, state, role, agent up or not
    net/<id>                  an overlay network (cluster-wide: one node on the graph)
    net/<host>/<id>           a bridge network of one host
    ctr/<host>/<id>           a container, with the networks it is attached to
    members/<host>            that host's gossip member table
    endpoints/<host>          that host's endpoint tables, one per overlay network
    tables/<host>             that host's data-plane tables per network (tables.py): FDB with
                              counters, ARP answers, DNS records, VIPs, published ports
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from overlaynet.web.tables import host_tables

Record = dict[str, Any]
View = dict[str, Record]

# Docker's default networks of these drivers attach a container to nothing drawable (it shares
# the host's stack, or has no network): they are left off the graph.
UNDRAWN_DRIVERS = ("host", "null")
_EXITED = re.compile(r"Exited \((-?\d+)\)")
# A member state gossip has given up on: the host is Down for the cluster.
GONE_STATES = ("dead", "left")


class HostState(enum.StrEnum):
    READY = "Ready"  # its agent answers and no peer's gossip doubts it
    SUSPECT = "Suspect"  # some peer's gossip suspects it (SWIM's suspect state)
    DOWN = "Down"  # some peer's gossip declared it dead, or no agent and no gossip to ask
    UNREACHABLE = "Unreachable"  # its agent does not answer, gossip has not decided yet


@dataclass(frozen=True)
class HostReport:
    """One host's answers in one polling round; `error` is set when its agent did not answer."""

    name: str
    ip: str
    error: str | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    networks: Sequence[Mapping[str, Any]] = ()  # network.ls rows
    network_docs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # id -> inspect
    containers: Sequence[Mapping[str, Any]] = ()  # container.ls --all rows
    members: Sequence[Mapping[str, Any]] = ()  # gossip.members rows
    endpoints: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=dict)
    dns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # id -> dns.records
    lb: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # id -> network.lb
    # node.ls rows, from a manager only (a worker cannot list nodes): each node's availability.
    nodes: Sequence[Mapping[str, Any]] = ()

    @property
    def answered(self) -> bool:
        return self.error is None


def build_view(lab: str, reports: Iterable[HostReport], previous: Mapping[str, Record]) -> View:
    """The whole cluster as the agents describe it, in one mapping.

    A host whose agent did not answer keeps what `previous` had of it, marked `stale`: its
    containers are not gone, only unknown (a killed agent leaves them running).
    """
    reports = list(reports)
    by_ip = {r.ip: r.name for r in reports}
    view: View = {}
    if reports:
        view["underlay"] = {"kind": "underlay", "name": f"underlay ({lab})"}
    for report in reports:
        view[f"host/{report.name}"] = _host(report, reports)
        if not report.answered:
            continue
        _networks(view, report)
        _containers(view, report)
        view[f"members/{report.name}"] = {
            "kind": "members",
            "host": report.name,
            "rows": sorted(
                (_member_row(m, by_ip) for m in report.members),
                key=lambda r: (r["host"] or "~", r["node"]),
            ),
        }
        view[f"endpoints/{report.name}"] = {
            "kind": "endpoints",
            "host": report.name,
            "tables": _endpoint_tables(report, by_ip),
        }
        view[f"tables/{report.name}"] = host_tables(report, by_ip)
    for report in reports:
        if not report.answered:
            _keep_stale(view, report.name, previous)
    return view


def _keep_stale(view: View, host: str, previous: Mapping[str, Record]) -> None:
    own = (f"net/{host}/", f"ctr/{host}/", f"members/{host}", f"endpoints/{host}", f"tables/{host}")
    for key, rec in previous.items():
        if key.startswith(own):
            view[key] = {**rec, "stale": True}
        elif rec.get("kind") == "network" and host in rec.get("hosts", ()):
            # An overlay the silent host was on: it stays drawn there until the host answers.
            now = view.setdefault(key, {**rec, "hosts": []})
            now["hosts"] = sorted({*now["hosts"], host})


def host_state(report: HostReport, reports: Sequence[HostReport]) -> HostState:
    """The cluster's word on a host: what the other answering hosts' gossip says of its address,
    the worst verdict winning, and whether its own agent answers."""
    seen = [
        str(m.get("state", ""))
        for other in reports
        if other.answered and other.name != report.name
        for m in other.members
        if m.get("addr") == report.ip
    ]
    if any(s in GONE_STATES for s in seen):
        return HostState.DOWN
    if "suspect" in seen:
        return HostState.SUSPECT
    if report.answered:
        return HostState.READY
    gossip_runs = any(other.answered and other.members for other in reports)
    return HostState.UNREACHABLE if gossip_runs else HostState.DOWN


def _host(report: HostReport, reports: Sequence[HostReport]) -> Record:
    swarm = report.info.get("Swarm") or {}
    return {
        "kind": "host",
        "name": report.name,
        "ip": report.ip,
        "state": str(host_state(report, reports)),
        "agent": "up" if report.answered else "down",
        "error": report.error or "",
        "role": str(swarm.get("Role", "")),
        "node_id": str(swarm.get("NodeID", "")),
        "availability": _availability(report, reports),
    }


def _availability(report: HostReport, reports: Sequence[HostReport]) -> str:
    """`node ls`'s AVAILABILITY of this host (active, pause, drain) as a manager that answered
    lists it; empty outside a swarm or when no manager answered."""
    node_id = str((report.info.get("Swarm") or {}).get("NodeID", ""))
    for other in reports:
        for row in other.nodes:
            if (node_id and row.get("id") == node_id) or row.get("hostname") == report.name:
                return str(row.get("availability", ""))
    return ""


def _networks(view: View, report: HostReport) -> None:
    for row in report.networks:
        driver = str(row.get("driver", ""))
        net_id = str(row.get("id", ""))
        if driver in UNDRAWN_DRIVERS or not net_id:
            continue
        doc = report.network_docs.get(net_id, {})
        if driver == "overlay":
            key = f"net/{net_id}"
            rec = view.setdefault(
                key,
                {
                    "kind": "network",
                    "driver": "overlay",
                    "id": net_id,
                    "name": str(row.get("name", "")),
                    "vni": (doc.get("Overlay") or {}).get("VNI"),
                    "subnet": _subnet(doc),
                    "hosts": [],
                },
            )
            if _present(doc) and report.name not in rec["hosts"]:
                rec["hosts"] = sorted([*rec["hosts"], report.name])
            if rec["vni"] is None:
                rec["vni"] = (doc.get("Overlay") or {}).get("VNI")
        else:
            view[f"net/{report.name}/{net_id}"] = {
                "kind": "network",
                "driver": driver,
                "id": net_id,
                "name": str(row.get("name", "")),
                "host": report.name,
                "subnet": _subnet(doc),
            }


def _present(doc: Mapping[str, Any]) -> bool:
    """Whether an overlay exists on the host that answered: it has a VTEP there (a manager also
    lists the swarm's other overlays, answered from the managers' records) or a container."""
    return "VTEP" in (doc.get("Overlay") or {}) or bool(doc.get("Containers"))


def _subnet(doc: Mapping[str, Any]) -> str:
    config = (doc.get("IPAM") or {}).get("Config") or []
    return str(config[0].get("Subnet", "")) if config else ""


def _network_key(report: HostReport, net_id: str) -> str | None:
    for row in report.networks:
        if row.get("id") == net_id:
            driver = str(row.get("driver", ""))
            if driver in UNDRAWN_DRIVERS:
                return None
            return f"net/{net_id}" if driver == "overlay" else f"net/{report.name}/{net_id}"
    return None


def _containers(view: View, report: HostReport) -> None:
    attached: dict[str, list[Record]] = {}
    for net_id, doc in sorted(report.network_docs.items()):
        key = _network_key(report, net_id)
        for cid, member in sorted((doc.get("Containers") or {}).items()):
            attached.setdefault(cid, []).append(
                {
                    "key": key,
                    "name": str(doc.get("Name", "")),
                    "ip": str(member.get("IPv4Address", "")),
                }
            )
    for row in report.containers:
        cid = str(row.get("id", ""))
        if not cid:
            continue
        view[f"ctr/{report.name}/{cid}"] = {
            "kind": "container",
            "id": cid,
            "name": str(row.get("names", "")),
            "host": report.name,
            "image": str(row.get("image", "")),
            "state": str(row.get("state", "")),
            "exit_code": _exit_code(str(row.get("status", ""))),
            "networks": attached.get(cid, []),
        }


def _exit_code(status: str) -> int | None:
    """The code in Docker's "Exited (137) 2 minutes ago". The rest of the status is an age
    that changes every second: kept out of the view, or every round would be a patch."""
    match = _EXITED.match(status)
    return int(match.group(1)) if match else None


def _member_row(m: Mapping[str, Any], by_ip: Mapping[str, str]) -> Record:
    addr = str(m.get("addr", ""))
    return {
        "host": by_ip.get(addr, ""),
        "node": str(m.get("name", "")),
        "addr": addr,
        "state": str(m.get("state", "")),
        "incarnation": m.get("incarnation", 0),
    }


def _endpoint_tables(report: HostReport, by_ip: Mapping[str, str]) -> dict[str, list[Record]]:
    names = {str(r.get("id", "")): str(r.get("name", "")) for r in report.networks}
    # Gossip names owners by node id; the members table says which address (so host) that is.
    owners = {str(m.get("name", "")): by_ip.get(str(m.get("addr", ""))) for m in report.members}
    tables: dict[str, list[Record]] = {}
    for net_id, rows in sorted(report.endpoints.items()):
        tables[names.get(net_id, net_id)] = [
            {
                "name": str(r.get("name", "")),
                "ip": str(r.get("ip", "")),
                "mac": str(r.get("mac", "")),
                "host": by_ip.get(str(r.get("host", "")), str(r.get("host", ""))),
                "owner": owners.get(str(r.get("owner", ""))) or str(r.get("owner", "")),
                "ltime": r.get("ltime", 0),
            }
            for r in rows
        ]
    return tables
