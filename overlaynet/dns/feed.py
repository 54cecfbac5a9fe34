"""What the embedded DNS should know, computed from the agent's records (pure).

Docker's rules: a running container's name, its short id and its aliases resolve on each
user-defined network it is attached to; a stopped container's names do not. Names of endpoints
on other hosts (from the control plane) come in as extra records.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlaynet.dns.records import DnsTable, NameRecord, RecordKind
from overlaynet.dns.records import Network as DnsNetwork
from overlaynet.model import Container, Network, Status


@dataclass(frozen=True)
class DnsView:
    networks: dict[str, DnsNetwork]
    records: dict[str, set[NameRecord]]
    attachments: dict[str, set[str]]

    def served_containers(self) -> set[str]:
        """Containers that get a resolver: those on at least one network that resolves."""
        return {
            cid
            for cid, nets in self.attachments.items()
            if any(self.networks[n].resolves_names for n in nets if n in self.networks)
        }


def container_records(c: Container) -> list[NameRecord]:
    out = []
    for ep in c.endpoints:
        if not ep.ip:
            continue
        ip = IPv4Address(ep.ip)
        out.append(NameRecord(ep.network_id, c.name, ip, RecordKind.CONTAINER))
        out.append(NameRecord(ep.network_id, c.id[:12], ip, RecordKind.SHORT_ID))
        out += [NameRecord(ep.network_id, a, ip, RecordKind.ALIAS) for a in ep.aliases]
    return out


def build_view(
    networks: Iterable[Network],
    containers: Iterable[Container],
    remote: Mapping[str, Iterable[NameRecord]] | None = None,
) -> DnsView:
    nets = {
        n.id: DnsNetwork(n.id, n.name, resolves_names=n.has_name_resolution)
        for n in networks
        if n.subnet
    }
    records: dict[str, set[NameRecord]] = {nid: set() for nid in nets}
    attachments: dict[str, set[str]] = {}
    for c in containers:
        attachments[c.id] = {ep.network_id for ep in c.endpoints if ep.network_id in nets}
        if c.status != Status.RUNNING:
            continue
        for rec in container_records(c):
            if rec.network_id in records:
                records[rec.network_id].add(rec)
    for nid, extra in (remote or {}).items():
        if nid in records:
            records[nid].update(extra)
    return DnsView(nets, records, attachments)


def apply(table: DnsTable, view: DnsView) -> None:
    """Bring the table in line with the view (only what differs is touched)."""
    for nid in table.network_ids():
        if nid not in view.networks:
            table.remove_network(nid)
    for nid, net in view.networks.items():
        if table.network(nid) != net:
            table.set_network(net)
        if table.records_of(nid) != view.records[nid]:
            table.replace_records(nid, view.records[nid])
    for cid in table.container_ids():
        if cid not in view.attachments:
            table.forget_container(cid)
    for cid, nets in view.attachments.items():
        have = table.attached(cid)
        for nid in nets - have:
            table.attach(cid, nid)
        for nid in have - nets:
            table.detach(cid, nid)
