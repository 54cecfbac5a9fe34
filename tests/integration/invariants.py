"""The address invariant checked after every integration scenario (issue 18): no IP and no MAC
twice in one network, across all of a lab's hosts.

One pass of API calls per host (overlaynet.api.Client, no CLI subprocesses): every container's
inspect (`ps -a`), each overlay's gossip endpoint table as that host has it, and the managers'
allocations read from their cluster.db. Bridge networks are per host, so their uses are keyed by
host; overlays are cluster-wide, keyed by network id. The verdict is
overlaynet.cluster.invariants.duplicate_addresses.

The observers name one endpoint differently: an agent by its endpoint id, the managers a task's
address by the task id and a node's load-balancer address by `lb-<node id>`. Both sides are
mapped to one identity (`task:<id>`, `lb@<node address>`) before comparing, so the same
endpoint seen twice is one holder, and anything else holding its address is a second one.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from overlaynet import api
from overlaynet.cluster import ipam
from overlaynet.cluster.invariants import AddressUse, Duplicate, duplicate_addresses
from overlaynet.errors import ApiError
from overlaynet.lab.lifecycle import read_hosts
from overlaynet.paths import HostPaths

# A healthy agent answers these in milliseconds; a hung one must fail the check, not the suite.
AGENT_TIMEOUT = 10.0
# Docker's scope for networks every host shares.
SWARM_SCOPE = "swarm"
# The managers' endpoint ids for a node's load-balancer address (cluster/state.py LB_PREFIX),
# and the agents' names of the sandboxes holding them (agent/servicedns.py sandbox_name).
MANAGER_LB_PREFIX = "lb-"
SANDBOX_NAMES = ("ingress-sbox", "lb_")


@dataclass
class ManagerView:
    """What the managers' stores say: allocations, task ids, node id -> address."""

    allocations: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[str] = field(default_factory=set)
    node_addr: dict[str, str] = field(default_factory=dict)


def _ask(client: api.Client, op: str, **args: Any) -> Any:
    """The answer, or None when the agent is down (a scenario may leave a host stopped)."""
    try:
        return client.call(op, **args)
    except (api.AgentDown, ApiError):
        return None


def _read_manager(cluster_db: Path, view: ManagerView) -> None:
    """Add one manager's persisted records (read-only: the running manager keeps writing).
    Only the fields this check needs are read, so a record kind growing fields cannot break it."""
    db = sqlite3.connect(f"file:{cluster_db}?mode=ro", uri=True, timeout=AGENT_TIMEOUT)
    try:
        rows = db.execute(
            "SELECT kind, key, doc FROM records WHERE kind IN ('allocation', 'task', 'node')"
        ).fetchall()
    finally:
        db.close()
    for kind, key, doc in rows:
        if kind == "task":
            view.tasks.add(key)
        elif kind == "node":
            view.node_addr[key] = json.loads(doc)["addr"]
        else:
            view.allocations.append(json.loads(doc))


def _agent_identity(name: str, endpoint: str, addr: str, view: ManagerView) -> str:
    """An agent's endpoint as the managers would name it (a task's, or a node's LB sandbox)."""
    name = name.lstrip("/")
    task_id = name.rpartition(".")[2]
    if "." in name and task_id in view.tasks:
        return f"task:{task_id}"
    if name.startswith(SANDBOX_NAMES):
        return f"lb@{addr}"
    return endpoint


def _manager_uses(view: ManagerView) -> Iterator[AddressUse]:
    for alloc in view.allocations:
        endpoint = alloc["endpoint_id"]
        if endpoint in view.tasks:
            endpoint = f"task:{endpoint}"
        elif endpoint.startswith(MANAGER_LB_PREFIX):
            node_id = endpoint.removeprefix(MANAGER_LB_PREFIX)
            endpoint = f"lb@{view.node_addr.get(node_id, node_id)}"
        mac = ipam.mac_for(IPv4Address(alloc["ip"]))
        yield AddressUse(alloc["network_id"], endpoint, alloc["ip"], mac, "managers")


def lab_address_uses(lab: str) -> list[AddressUse]:
    """Every address use every observer of `lab` reports."""
    hosts = read_hosts(lab)
    view = ManagerView()
    for h in hosts:
        db = HostPaths(h.name, lab).state_dir / "cluster.db"
        if db.exists():
            try:
                _read_manager(db, view)
            except sqlite3.Error:
                continue  # a store being created or removed this instant
    uses = list(_manager_uses(view))
    for h in hosts:
        client = api.Client(HostPaths(h.name, lab).socket, timeout=AGENT_TIMEOUT)
        addr = h.ip.partition("/")[0]
        overlays = {
            n["id"] for n in _ask(client, "network.ls") or [] if n.get("scope") == SWARM_SCOPE
        }
        for row in _ask(client, "container.ls", all=True) or []:
            doc = _ask(client, "container.inspect", container=row["id"])
            if doc is None:
                continue  # removed between the listing and the inspect
            nets = doc.get("NetworkSettings", {}).get("Networks") or {}
            for net_name, ep in nets.items():
                if not ep.get("IPAddress") and not ep.get("MacAddress"):
                    continue  # host/none: no address of its own
                net_id = ep.get("NetworkID") or net_name
                network = net_id if net_id in overlays else f"{h.name}/{net_name}"
                who = _agent_identity(
                    doc.get("Name", ""), ep.get("EndpointID") or doc["Id"], addr, view
                )
                uses.append(AddressUse(network, who, ep["IPAddress"], ep["MacAddress"], h.name))
        for net_id in sorted(overlays):
            for r in _ask(client, "gossip.endpoints", network=net_id) or []:
                who = _agent_identity(r["name"], r["key"], r["host"], view)
                seen = f"{r['host']} (gossip on {h.name})"
                uses.append(AddressUse(net_id, who, r["ip"], r["mac"], seen))
    return uses


def duplicates_in_lab(lab: str) -> list[Duplicate]:
    return duplicate_addresses(lab_address_uses(lab))
