"""The names the embedded DNS knows: records per network, which container sits on which network.

The agent owns one `DnsTable` and updates it from its own containers and from the control
plane's endpoint table; every change bumps `generation`, which drops the answers prepared from
the old contents. Lookups are per container: a container sees only the networks it is attached
to, and only those that resolve names (Docker's default `bridge` does not).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

#: Answers change when containers come and go, so keep caches short. Docker's fixed 600 s keeps
#: stale addresses for ten minutes; CoreDNS's kubernetes plugin defaults to 5 s.
DEFAULT_TTL = 5
#: How long a resolver may cache "no such name" or "no such type" (RFC 2308 §5: the lower of the
#: SOA's TTL and MINIMUM, both set to this). As short as the positive TTL, as CoreDNS does, so a
#: container that starts is found as soon as one that was looked up too early.
DEFAULT_NEGATIVE_TTL = 5
#: libnetwork reads at most 3 nameservers from the host, as glibc's MAXNS does.
MAX_UPSTREAMS = 3
#: Docker's default network name; it has no embedded name resolution.
DEFAULT_BRIDGE = "bridge"


class RecordKind(enum.Enum):
    """Where a name comes from; reverse lookups prefer the kinds earlier in this list."""

    CONTAINER = "container"
    SERVICE = "service"
    TASK = "task"
    ALIAS = "alias"
    #: Docker also resolves a container's 12-digit short id; never the preferred PTR name.
    SHORT_ID = "short-id"


_PTR_PREFERENCE = {kind: rank for rank, kind in enumerate(RecordKind)}


@dataclass(frozen=True, slots=True)
class NameRecord:
    """One name on one network: a container name, a short id, an alias, a service or tasks.X."""

    network_id: str
    name: str
    address: ipaddress.IPv4Address
    kind: RecordKind = RecordKind.CONTAINER


@dataclass(frozen=True, slots=True)
class Network:
    """A network as DNS sees it: its id, its name (also a lookup suffix) and whether it resolves."""

    network_id: str
    name: str
    resolves_names: bool = True

    @classmethod
    def docker(cls, network_id: str, name: str) -> Network:
        """As Docker does it: every network resolves names except the default `bridge`."""
        return cls(network_id, name, resolves_names=name != DEFAULT_BRIDGE)


@dataclass(frozen=True, slots=True)
class Upstream:
    """A resolver that gets the names not known locally."""

    address: str
    port: int = 53


def normalize(name: str) -> str:
    """DNS names compare case-insensitively (RFC 4343) and without the root dot."""
    return name.rstrip(".").lower()


@dataclass
class DnsTable:
    """The agent's mutable name table; `generation` changes with every update."""

    ttl: int = DEFAULT_TTL
    negative_ttl: int = DEFAULT_NEGATIVE_TTL
    generation: int = 0
    _networks: dict[str, Network] = field(default_factory=dict)
    _records: dict[str, set[NameRecord]] = field(default_factory=dict)
    _attachments: dict[str, set[str]] = field(default_factory=dict)
    _upstreams: tuple[Upstream, ...] = ()
    # Names that exist with no address now (a service between tasks): NOERROR and no answer,
    # never NXDOMAIN, which resolvers would cache as "no such service" (moby#34327).
    _empty_names: dict[str, frozenset[str]] = field(default_factory=dict)
    # Lookup indexes, rebuilt on the first lookup after a change: lookups stay O(1) however
    # many endpoints the control plane feeds in, and updates stay trivial.
    _index_generation: int = -1
    _by_name: dict[tuple[str, str], set[ipaddress.IPv4Address]] = field(default_factory=dict)
    _by_address: dict[tuple[str, ipaddress.IPv4Address], tuple[int, str]] = field(
        default_factory=dict
    )

    # -- updates (the agent calls these) -------------------------------------------------------

    def set_network(self, network: Network) -> None:
        self._networks[network.network_id] = network
        self._records.setdefault(network.network_id, set())
        self.generation += 1

    def remove_network(self, network_id: str) -> None:
        self._networks.pop(network_id, None)
        self._records.pop(network_id, None)
        for networks in self._attachments.values():
            networks.discard(network_id)
        self.generation += 1

    def set_empty_names(self, network_id: str, names: Iterable[str]) -> None:
        """Names on a network that exist even when no record gives them an address."""
        wanted = frozenset(n.lower() for n in names)
        if self._empty_names.get(network_id, frozenset()) != wanted:
            self._empty_names[network_id] = wanted
            self.generation += 1

    def add_record(self, record: NameRecord) -> None:
        self._records.setdefault(record.network_id, set()).add(record)
        self.generation += 1

    def remove_record(self, record: NameRecord) -> None:
        self._records.get(record.network_id, set()).discard(record)
        self.generation += 1

    def replace_records(self, network_id: str, records: Iterable[NameRecord]) -> None:
        """Set all records of one network at once (e.g. from the control plane's table)."""
        self._records[network_id] = {r for r in records if r.network_id == network_id}
        self.generation += 1

    def attach(self, container_id: str, network_id: str) -> None:
        self._attachments.setdefault(container_id, set()).add(network_id)
        self.generation += 1

    def detach(self, container_id: str, network_id: str) -> None:
        self._attachments.get(container_id, set()).discard(network_id)
        self.generation += 1

    def forget_container(self, container_id: str) -> None:
        self._attachments.pop(container_id, None)
        self.generation += 1

    # -- reads for whoever keeps the table in step (the agent's feed) ---------------------------

    def network(self, network_id: str) -> Network | None:
        return self._networks.get(network_id)

    def network_ids(self) -> list[str]:
        return list(self._networks)

    def records_of(self, network_id: str) -> frozenset[NameRecord]:
        return frozenset(self._records.get(network_id, ()))

    def container_ids(self) -> list[str]:
        return list(self._attachments)

    def attached(self, container_id: str) -> frozenset[str]:
        return frozenset(self._attachments.get(container_id, ()))

    def set_upstreams(self, upstreams: Iterable[Upstream | tuple[str, int]]) -> None:
        """The host's resolvers, at most `MAX_UPSTREAMS` of them (later ones are ignored)."""
        chosen = [u if isinstance(u, Upstream) else Upstream(u[0], u[1]) for u in upstreams]
        self._upstreams = tuple(chosen[:MAX_UPSTREAMS])
        self.generation += 1

    @property
    def upstreams(self) -> tuple[Upstream, ...]:
        return self._upstreams

    # -- lookups (the answering core calls these) -------------------------------------------

    def _index(self) -> None:
        if self._index_generation == self.generation:
            return
        self._by_name = {}
        self._by_address = {}
        for network_id, names in self._empty_names.items():
            if network_id in self._networks:
                for name in names:
                    self._by_name[(network_id, name)] = set()
        for network_id, records in self._records.items():
            network = self._networks.get(network_id)
            if network is None:
                continue
            for record in records:
                key = (network_id, record.name.lower())
                self._by_name.setdefault(key, set()).add(record.address)
                candidate = (_PTR_PREFERENCE[record.kind], f"{record.name}.{network.name}")
                where = (network_id, record.address)
                best = self._by_address.get(where)
                if best is None or candidate < best:
                    self._by_address[where] = candidate
        self._index_generation = self.generation

    def visible_networks(self, container_id: str) -> list[Network]:
        """The container's networks that resolve names, in a stable order."""
        ids = sorted(self._attachments.get(container_id, ()))
        found = (self._networks.get(i) for i in ids)
        return [n for n in found if n is not None and n.resolves_names]

    def resolve(self, container_id: str, name: str) -> list[ipaddress.IPv4Address] | None:
        """Addresses of `name` as `container_id` sees it; None when the name is not known here.

        `name` matches a record on any visible network, or is `<record>.<network name>` for
        one network, as in Docker (libnetwork strips the network name suffix).

        The network-qualified meaning wins: a container may be called `f3.ovf` (Docker allows
        dots), but while `f3` exists on network `ovf`, `f3.ovf` means that one. Otherwise any
        container could shadow another by taking its qualified name.
        """
        self._index()
        wanted = normalize(name)
        qualified: set[ipaddress.IPv4Address] | None = None
        literal: set[ipaddress.IPv4Address] | None = None
        for network in self.visible_networks(container_id):
            suffix = "." + network.name.lower()
            if wanted.endswith(suffix):
                found = self._by_name.get((network.network_id, wanted[: -len(suffix)]))
                if found is not None:
                    qualified = (qualified or set()) | found
            found = self._by_name.get((network.network_id, wanted))
            if found is not None:
                literal = (literal or set()) | found
        if qualified is not None:
            return sorted(qualified)
        return sorted(literal) if literal is not None else None

    def in_network_zone(self, container_id: str, name: str) -> bool:
        """Is `name` below a visible network's name? Then its absence is ours to state."""
        wanted = normalize(name)
        return any(
            wanted.endswith("." + n.name.lower()) for n in self.visible_networks(container_id)
        )

    def negative_zone(self, container_id: str, name: str) -> str | None:
        """The zone of a negative answer for `name` (RFC 2308 §3): the network's name when
        `name` is below it, else None (a bare container name is its own zone)."""
        wanted = normalize(name)
        for network in self.visible_networks(container_id):
            if wanted.endswith("." + network.name.lower()):
                return network.name.lower()
        return None

    def reverse(self, container_id: str, address: ipaddress.IPv4Address) -> str | None:
        """The name for a PTR answer, `<name>.<network name>` as Docker gives it, or None."""
        self._index()
        found = (
            self._by_address.get((n.network_id, address))
            for n in self.visible_networks(container_id)
        )
        ranked = [f for f in found if f is not None]
        return min(ranked)[1] if ranked else None
