"""The address invariant every scenario must keep: no IP and no MAC twice in one network.

Pure: it takes address uses from wherever a test saw them (the managers' allocations, each host's
endpoint table, the links in each container) and says which ones collide, across all hosts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from overlaynet.cluster import ipam
from overlaynet.cluster.state import ClusterState


@dataclass(frozen=True)
class AddressUse:
    """One endpoint's address as one observer saw it."""

    network: str
    endpoint: str
    ip: str
    mac: str
    host: str


@dataclass(frozen=True)
class Duplicate:
    """An IP or MAC held by more than one endpoint of one network."""

    network: str
    field: str
    value: str
    holders: tuple[tuple[str, str], ...]

    def __str__(self) -> str:
        who = ", ".join(f"{endpoint} on {host}" for endpoint, host in self.holders)
        return f"{self.field} {self.value} is given twice on network {self.network}: {who}"


def duplicate_addresses(uses: Iterable[AddressUse]) -> list[Duplicate]:
    """Every IP or MAC that two different endpoints of one network hold (empty when sound).

    The same endpoint reported by several observers (its host, the managers) is one holder.
    """
    holders: dict[tuple[str, str, str], set[tuple[str, str]]] = defaultdict(set)
    endpoints: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for use in uses:
        for name, value in (("IP", use.ip), ("MAC", use.mac.lower())):
            holders[(use.network, name, value)].add((use.endpoint, use.host))
            endpoints[(use.network, name, value)].add(use.endpoint)
    return [
        Duplicate(network, name, value, tuple(sorted(holders[(network, name, value)])))
        for (network, name, value), eps in sorted(endpoints.items())
        if len(eps) > 1
    ]


def allocated_uses(state: ClusterState) -> list[AddressUse]:
    """The managers' view: every allocation, with the MAC an agent derives from its IP."""
    return [
        AddressUse(
            network=alloc.network_id,
            endpoint=alloc.endpoint_id,
            ip=alloc.ip,
            mac=ipam.mac_for(IPv4Address(alloc.ip)),
            host=alloc.node_id,
        )
        for alloc in state.allocations.values()
    ]
