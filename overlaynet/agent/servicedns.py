"""Service names in the embedded DNS: `<service>` and `tasks.<service>` on each of its networks.

Derived on every node the same way, so every node answers the same once gossip converged:
the services come from `task.assigned`'s `services` (name, endpoint mode, networks, VIPs, the
same list on every node), the tasks from the DNS view's container records (this host's running
containers and the endpoint table's, which carries only running ones) whose name is a task's,
`<service>.<slot or node id>.<task id>`. A service with no running task keeps its names with
no address (NOERROR, empty), never NXDOMAIN (moby#34327).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from overlaynet.dns.feed import DnsView
from overlaynet.dns.records import DnsTable, NameRecord, RecordKind

# Docker answers service names on every network but ingress (the routing mesh's, not a
# network containers talk on by name).
INGRESS = "ingress"
# Docker's name for the routing mesh's sandbox (agent/lb.py's INGRESS_SANDBOX).
SANDBOX_INGRESS = "ingress-sbox"
# `tasks.<service>`: every running task's address (Docker's name, dnsrr or vip alike).
TASKS_PREFIX = "tasks."


@dataclass(frozen=True)
class ServiceEndpoint:
    """What DNS needs of one service."""

    name: str
    endpoint_mode: str  # vip | dnsrr
    networks: tuple[str, ...]
    vips: tuple[tuple[str, IPv4Address], ...]  # (network id, VIP)
    ports: tuple[PortRow, ...] = ()
    # Task ids the managers say may receive traffic (running, healthy, not being stopped);
    # None: an answer without the list (every running task container serves).
    serving: frozenset[str] | None = None


@dataclass(frozen=True)
class PortRow:
    """A published port as the managers describe it (`published` None: as the target)."""

    protocol: str
    target: int
    published: int
    mode: str  # ingress | host

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> PortRow:
        target = int(doc["target"])
        published = doc.get("published")
        protocol, mode = str(doc.get("protocol") or "tcp"), str(doc.get("mode") or "ingress")
        if protocol not in ("tcp", "udp") or mode not in ("ingress", "host"):
            raise ValueError(f"bad port {doc!r}")
        return cls(protocol, target, int(published) if published else target, mode)


def parse_services(doc: Mapping[str, Any]) -> tuple[list[ServiceEndpoint], int]:
    """`task.assigned`'s `services` → (services, entries skipped as unreadable)."""
    out, bad = [], 0
    for s in doc.get("services") or ():
        try:
            vips = tuple(
                (str(v["network_id"]), IPv4Address(str(v["addr"]).split("/")[0]))
                for v in s.get("vips") or ()
            )
            out.append(
                ServiceEndpoint(
                    name=str(s["name"]),
                    endpoint_mode=str(s.get("endpoint_mode") or "vip"),
                    networks=tuple(str(n) for n in s.get("networks") or ()),
                    vips=vips,
                    ports=tuple(PortRow.from_doc(p) for p in s.get("ports") or ()),
                    serving=None
                    if s.get("serving") is None
                    else frozenset(str(t) for t in s["serving"]),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            bad += 1
    return out, bad


def task_service(container_name: str) -> str | None:
    """The service a task's container belongs to, by its name (None: not a task's)."""
    parts = container_name.split(".")
    return parts[0] if len(parts) == 3 and all(parts) else None


def task_addresses(
    services: Iterable[ServiceEndpoint],
    records: Mapping[str, Iterable[NameRecord]],
    *,
    serving_only: bool = True,
) -> dict[tuple[str, str], set[IPv4Address]]:
    """(network id, service name) → its serving tasks' addresses there (every running task
    container's with `serving_only` False)."""
    known = {s.name: s.serving if serving_only else None for s in services}
    task_ips: dict[tuple[str, str], set[IPv4Address]] = {}
    for nid, recs in records.items():
        for rec in recs:
            if rec.kind != RecordKind.CONTAINER:
                continue
            svc = task_service(rec.name)
            if svc not in known:
                continue
            serving = known[svc]
            if serving is not None and rec.name.rpartition(".")[2] not in serving:
                continue  # starting, unhealthy, or leaving: no traffic
            task_ips.setdefault((nid, svc), set()).add(rec.address)
    return task_ips


def known_tasks(
    services: Iterable[ServiceEndpoint], records: Mapping[str, Iterable[NameRecord]]
) -> dict[tuple[str, str], set[str]]:
    """(network id, service name) → the ids of its running task containers this node knows
    there (its own and gossip's), serving or not: what `ServiceEndpoint.serving` is checked
    against to tell whether this node has caught up with the managers."""
    names = {s.name for s in services}
    out: dict[tuple[str, str], set[str]] = {}
    for nid, recs in records.items():
        for rec in recs:
            if rec.kind != RecordKind.CONTAINER:
                continue
            svc = task_service(rec.name)
            if svc in names:
                out.setdefault((nid, svc), set()).add(rec.name.rpartition(".")[2])
    return out


def missing_serving(
    service: ServiceEndpoint, known: Mapping[tuple[str, str], set[str]], network_id: str
) -> frozenset[str]:
    """The tasks the managers say serve `service` that this node does not know on the network
    yet (gossip has not brought their records): empty when it has caught up, or when the
    managers sent no list."""
    if service.serving is None:
        return frozenset()
    return service.serving - known.get((network_id, service.name), set())


def service_records(
    services: Iterable[ServiceEndpoint],
    records: Mapping[str, Iterable[NameRecord]],
    network_names: Mapping[str, str],
) -> tuple[dict[str, set[NameRecord]], dict[str, set[str]]]:
    """(network id → service and task records, network id → the service names it has).

    `records`: each network's records as DNS has them (containers' names among them);
    `network_names`: the networks this host serves names on."""
    by_name = {s.name: s for s in services}
    task_ips = task_addresses(by_name.values(), records)
    out: dict[str, set[NameRecord]] = {}
    names: dict[str, set[str]] = {}
    for s in by_name.values():
        vips = dict(s.vips)
        for nid in s.networks:
            if nid not in network_names or network_names[nid] == INGRESS:
                continue
            ips = task_ips.get((nid, s.name), set())
            names.setdefault(nid, set()).update({s.name, TASKS_PREFIX + s.name})
            recs = out.setdefault(nid, set())
            recs.update(NameRecord(nid, TASKS_PREFIX + s.name, ip, RecordKind.TASK) for ip in ips)
            if s.endpoint_mode == "vip" and nid in vips:
                recs.add(NameRecord(nid, s.name, vips[nid], RecordKind.SERVICE))
            elif s.endpoint_mode == "dnsrr":
                recs.update(NameRecord(nid, s.name, ip, RecordKind.SERVICE) for ip in ips)
    return out, names


def sandbox_name(network_name: str) -> str:
    """The name of a node's load-balancer sandbox on a network (agent/lb.py names them so)."""
    return SANDBOX_INGRESS if network_name == INGRESS else f"lb_{network_name}"


def hide_sandboxes(view: DnsView) -> None:
    """Drop the load-balancer sandboxes' names (and short ids) from `view`: Docker's are no
    containers, so nothing resolves them. Other hosts' sandboxes arrive as endpoint records
    without labels, so they are known by the names the agents give them."""
    for nid, net in view.networks.items():
        recs = view.records.get(nid)
        if not recs:
            continue
        name = sandbox_name(net.name)
        hidden = {r.address for r in recs if r.kind == RecordKind.CONTAINER and r.name == name}
        if hidden:
            view.records[nid] = {r for r in recs if r.address not in hidden}


class ServiceNames:
    """The services this node knows (from the last `task.assigned`), fed into each DNS view."""

    def __init__(self) -> None:
        self.services: list[ServiceEndpoint] = []
        self.bad_entries = 0
        # (network id, service) → running task addresses, as of the last DNS view: the
        # load balancers' backends.
        self.task_ips: dict[tuple[str, str], set[IPv4Address]] = {}
        # Running task containers that serve no more (being stopped on purpose, or not healthy
        # yet): the load balancers let their open connections finish instead of cutting them.
        self.leaving_ips: set[IPv4Address] = set()
        # (network id, service) → ids of the running task containers this node knows there.
        self.known_tasks: dict[tuple[str, str], set[str]] = {}
        # Told when the services or their task addresses change (the load-balancer plane).
        self.on_change: Callable[[], None] | None = None

    def update(self, doc: Mapping[str, Any]) -> bool:
        """Take a new `task.assigned` answer; True when the services changed."""
        services, bad = parse_services(doc)
        self.bad_entries += bad
        if services == self.services:
            return False
        self.services = services
        if self.on_change is not None:
            self.on_change()
        return True

    def add_to(self, view: DnsView, table: DnsTable) -> None:
        """Add the service names to `view` (before the table follows it) and tell the table
        which of them exist even without an address; the agents' sandboxes leave it."""
        hide_sandboxes(view)
        served = {nid: n.name for nid, n in view.networks.items() if n.resolves_names}
        extra, names = service_records(self.services, view.records, served)
        for nid, recs in extra.items():
            view.records[nid] |= recs
        for nid in view.networks:
            table.set_empty_names(nid, names.get(nid, ()))
        task_ips = task_addresses(self.services, view.records)
        running = task_addresses(self.services, view.records, serving_only=False)
        self.leaving_ips = set().union(*running.values()) - set().union(*task_ips.values())
        known = known_tasks(self.services, view.records)
        if task_ips != self.task_ips or known != self.known_tasks:
            self.task_ips, self.known_tasks = task_ips, known
            if self.on_change is not None:
                self.on_change()
