"""Network-scoped tables (Docker networkdb's model): entries keyed by (table, network, key) with
an owner and a Lamport time, tombstones that outlive any resync, and per-network participation.
Pure: events in, changes out; the owner's liveness is asked of the membership."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from overlaynet.wire.gossip import NetworkEvent, TableEvent

# Values ride in single datagrams next to other updates: keep room for the headers.
MAX_VALUE_BYTES = 1024


class NotInNetwork(ValueError):
    """A table write for a network this host has no local endpoint in."""


class EntryChange(enum.Enum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True)
class EntryEvent:
    """A visible change of one entry here (data plane: FDB/ARP; service plane: DNS)."""

    change: EntryChange
    table: str
    network: str
    key: str
    value: bytes
    owner: str


@dataclass(frozen=True)
class TableEntry:
    value: bytes
    owner: str
    ltime: int


class LamportClock:
    """One clock per host for table and network events, so an owner's leave orders after
    every write it made before it."""

    def __init__(self) -> None:
        self.time = 0

    def tick(self) -> int:
        self.time += 1
        return self.time

    def witness(self, ltime: int) -> None:
        self.time = max(self.time, ltime)


def _newer(a: TableEvent, b: TableEvent) -> bool:
    """Total order on versions of one key: Lamport time, then a tombstone beats a live entry
    at the same time, then owner and value break the last ties the same way everywhere."""
    return (a.ltime, a.deleted, a.owner, a.value) > (b.ltime, b.deleted, b.owner, b.value)


class NetworkTables:
    """All tables of the networks this host takes part in, plus who takes part in which."""

    def __init__(
        self, me: str, clock: LamportClock, tombstone_ttl: float, is_live: Callable[[str], bool]
    ) -> None:
        self.me = me
        self.clock = clock
        self.tombstone_ttl = tombstone_ttl
        self.is_live = is_live
        self.local_networks: set[str] = set()
        self.events: list[EntryEvent] = []
        self._participation: dict[tuple[str, str], NetworkEvent] = {}
        self._participants: dict[str, set[str]] = {}
        # network -> (table, key) -> latest version, tombstones included.
        self._entries: dict[str, dict[tuple[str, str], TableEvent]] = {}
        self._reap_at: dict[tuple[str, str, str], float] = {}
        #: Advertised in our participation events: this host's VTEP takes offload-mode
        #: datagrams on a network that has offload on (issue 15). Every agent of this version
        #: can; peers that do not say so (older agents) are sent RFC 7348 only.
        self.advertise_offload = True

    # ---- reads -------------------------------------------------------------------------

    def participants(self, network: str) -> set[str]:
        return self._participants.get(network, set())

    def offload_participants(self, network: str) -> set[str]:
        """The participants whose latest participation event advertised offload."""
        return {
            node
            for node in self.participants(network)
            if (ev := self._participation.get((node, network))) is not None and ev.offload
        }

    def entries(self, table: str, network: str) -> dict[str, TableEntry]:
        """Visible entries: not deleted, and owned by a live member (or us)."""
        return {
            key: TableEntry(ev.value, ev.owner, ev.ltime)
            for (tbl, key), ev in self._entries.get(network, {}).items()
            if tbl == table and self._visible(ev)
        }

    def snapshot(self) -> tuple[list[NetworkEvent], list[TableEvent]]:
        """Everything a push-pull peer needs: all participation and our networks' entries."""
        tables = [ev for net in self._entries.values() for ev in net.values()]
        return list(self._participation.values()), tables

    def raw(self, network: str, table: str, key: str) -> TableEvent | None:
        return self._entries.get(network, {}).get((table, key))

    # ---- local writes ------------------------------------------------------------------

    def join_network(self, network: str) -> NetworkEvent:
        self.local_networks.add(network)
        self._entries.setdefault(network, {})
        event = NetworkEvent(
            self.me, network, self.clock.tick(), True, offload=self.advertise_offload
        )
        self._store_participation(event)
        return event

    def leave_network(self, network: str) -> NetworkEvent:
        """Stop taking part: forget the network's entries here; peers drop ours on the event."""
        self.local_networks.discard(network)
        for ev in self._entries.pop(network, {}).values():
            if self._visible(ev):
                self._emit(EntryChange.DELETED, ev)
            self._reap_at.pop((ev.network, ev.table, ev.key), None)
        event = NetworkEvent(self.me, network, self.clock.tick(), False)
        self._store_participation(event)
        return event

    def set_entry(self, table: str, network: str, key: str, value: bytes, now: float) -> TableEvent:
        if network not in self.local_networks:
            raise NotInNetwork(f"no local endpoint in network {network}")
        if len(value) > MAX_VALUE_BYTES:
            raise ValueError(f"value of {len(value)} bytes exceeds {MAX_VALUE_BYTES}")
        event = TableEvent(table, network, key, self.me, self.clock.tick(), False, value)
        self._store(event, now)
        return event

    def delete_entry(self, table: str, network: str, key: str, now: float) -> TableEvent | None:
        current = self.raw(network, table, key)
        if network not in self.local_networks or current is None or current.deleted:
            return None
        event = TableEvent(table, network, key, self.me, self.clock.tick(), True, b"")
        self._store(event, now)
        return event

    # ---- remote events -----------------------------------------------------------------

    def apply_network_event(self, event: NetworkEvent, now: float) -> NetworkEvent | None:
        """Take a participation change; returns what to (re)broadcast, if anything."""
        self.clock.witness(event.ltime)
        current = self._participation.get((event.node, event.network))
        if current is not None and event.ltime <= current.ltime:
            return None
        if event.node == self.me:
            # A claim about us newer than our own record (an earlier life): restate the truth.
            joined = event.network in self.local_networks
            truth = NetworkEvent(
                self.me,
                event.network,
                self.clock.tick(),
                joined,
                offload=joined and self.advertise_offload,
            )
            self._store_participation(truth)
            return truth
        self._store_participation(event)
        if not event.joined:
            self._drop_owner_entries(event.node, event.network, event.ltime, now)
        return event

    def apply_table_event(
        self, event: TableEvent, now: float, rebroadcast: bool = True
    ) -> TableEvent | None:
        """Merge one remote version; returns what to broadcast (the event when it was news and
        `rebroadcast`, or our restatement when it contradicts what we own)."""
        if event.network not in self.local_networks:
            return None  # networkdb: only nodes in a network keep its tables
        self.clock.witness(event.ltime)
        current = self.raw(event.network, event.table, event.key)
        if current is not None and not _newer(event, current):
            return None
        left = self._participation.get((event.owner, event.network))
        stale = left is not None and not left.joined and left.ltime > event.ltime
        if event.owner != self.me and stale:
            return None  # written before its owner left the network
        if event.owner == self.me:
            held = current if current is not None and current.owner == self.me else None
            if (held is not None and not held.deleted) or not event.deleted:
                # A newer version in our name than we wrote (an earlier life, or our entries
                # tombstoned while we were gone): we own the key, so restate our truth later.
                live = held is not None and not held.deleted
                value = held.value if held is not None and live else b""
                restated = TableEvent(
                    event.table,
                    event.network,
                    event.key,
                    self.me,
                    self.clock.tick(),
                    not live,
                    value,
                )
                self._store(restated, now)
                return restated
        self._store(event, now)
        return event if rebroadcast else None

    def owner_liveness_changed(self, owner: str, live: bool) -> None:
        """An owner came up or went down: its entries appear or disappear here."""
        change = EntryChange.CREATED if live else EntryChange.DELETED
        for net in self._entries.values():
            for ev in net.values():
                if ev.owner == owner and not ev.deleted:
                    self._emit(change, ev)

    def forget_owner(self, owner: str, now: float) -> None:
        """A member is forgotten for good: its hidden entries become tombstones, so a stale
        copy elsewhere can never bring them back."""
        for net in self._entries.values():
            for (table, key), ev in list(net.items()):
                if ev.owner == owner and not ev.deleted:
                    tomb = TableEvent(table, ev.network, key, owner, ev.ltime, True, b"")
                    net[(table, key)] = tomb
                    self._reap_at[(ev.network, table, key)] = now + self.tombstone_ttl

    def reap(self, now: float) -> int:
        """Drop tombstones older than tombstone_ttl; returns how many went."""
        due = [k for k, at in self._reap_at.items() if at <= now]
        for network, table, key in due:
            del self._reap_at[(network, table, key)]
            net = self._entries.get(network)
            if net is not None:
                ev = net.get((table, key))
                if ev is not None and ev.deleted:
                    del net[(table, key)]
        return len(due)

    # ---- internals ---------------------------------------------------------------------

    def _visible(self, ev: TableEvent) -> bool:
        return not ev.deleted and (ev.owner == self.me or self.is_live(ev.owner))

    def _store(self, event: TableEvent, now: float) -> None:
        net = self._entries.setdefault(event.network, {})
        slot = (event.table, event.key)
        before = net.get(slot)
        net[slot] = event
        reap_key = (event.network, event.table, event.key)
        if event.deleted:
            self._reap_at[reap_key] = now + self.tombstone_ttl
        else:
            self._reap_at.pop(reap_key, None)
        was = before is not None and self._visible(before)
        if self._visible(event):
            self._emit(EntryChange.UPDATED if was else EntryChange.CREATED, event)
        elif was and before is not None:
            self._emit(EntryChange.DELETED, before)

    def _store_participation(self, event: NetworkEvent) -> None:
        self._participation[(event.node, event.network)] = event
        members = self._participants.setdefault(event.network, set())
        if event.joined:
            members.add(event.node)
        else:
            members.discard(event.node)

    def _drop_owner_entries(self, owner: str, network: str, ltime: int, now: float) -> None:
        net = self._entries.get(network)
        if net is None:
            return
        for (table, key), ev in list(net.items()):
            if ev.owner == owner and not ev.deleted and ev.ltime < ltime:
                tomb = TableEvent(table, network, key, owner, ltime, True, b"")
                net[(table, key)] = tomb
                self._reap_at[(network, table, key)] = now + self.tombstone_ttl
                if self._visible(ev):
                    self._emit(EntryChange.DELETED, ev)

    def _emit(self, change: EntryChange, ev: TableEvent) -> None:
        self.events.append(EntryEvent(change, ev.table, ev.network, ev.key, ev.value, ev.owner))
