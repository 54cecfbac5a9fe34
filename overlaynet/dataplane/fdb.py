"""Forwarding database: (VNI, inner MAC) → remote VTEP address, with per-entry counters.

Fed through one interface (`EndpointSink`) by whatever knows where endpoints live: static peers
today, the gossip endpoint table later. By default there is no learning from received frames,
like a Linux vxlan device created with `nolearning` (and Docker's overlay), because a forged inner
source MAC must not steer traffic. A network may opt in (`learn`): toward a kernel VTEP whose
endpoints nobody announces, learning the source MACs of what arrives from member hosts is what
the kernel's own `learning` does. Learned entries are bounded in number, aged, never replace a
given one, and are marked as learned wherever entries are shown.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Protocol

from overlaynet.wire.ethernet import MAC_LEN, mac_to_bytes, mac_to_str
from overlaynet.wire.vxlan import check_vni

#: Linux vxlan's default `ageing` is 300 s (drivers/net/vxlan: FDB_AGE_DEFAULT); the bridge's too.
LEARNED_MAX_AGE = 300.0
#: Learned entries per network: far above what one overlay network holds (Docker's /24 default
#: has 254 addresses), low enough that a member spraying source MACs costs a bounded table.
LEARNED_LIMIT = 1024


def as_mac(mac: str | bytes) -> bytes:
    """Accept a MAC as text or six octets; ValueError otherwise."""
    if isinstance(mac, bytes):
        if len(mac) != MAC_LEN:
            raise ValueError(f"a MAC address is {MAC_LEN} octets, got {len(mac)}")
        return mac
    return mac_to_bytes(mac)


def as_ipv4(ip: str) -> str:
    """Normalise an IPv4 address given as text; ValueError otherwise (the underlay is IPv4)."""
    return str(ipaddress.IPv4Address(ip))


class FdbEntry:
    """Where one inner MAC lives, plus what went to and came from it. Mutable: the hot path
    bumps the counters in place, which is why this is a slotted class and not a frozen record.

    `targets` is `(remote_ip,)`, ready for the hot loop's sends; a `learned` entry also keeps
    what `age_learned` needs: its receive count at the last sweep and since when it is unchanged.
    """

    __slots__ = (
        "learned",
        "remote_ip",
        "rx_bytes",
        "rx_frames",
        "seen_at",
        "seen_frames",
        "targets",
        "tx_bytes",
        "tx_frames",
    )

    def __init__(self, remote_ip: str, *, learned: bool = False) -> None:
        self.remote_ip = remote_ip
        self.targets = (remote_ip,)
        self.learned = learned
        self.tx_frames = 0
        self.tx_bytes = 0
        self.rx_frames = 0
        self.rx_bytes = 0
        # -1: no sweep has seen it yet; the first one starts its age (no clock in the hot path).
        self.seen_frames = -1
        self.seen_at = 0.0


def learn(table: dict[bytes, FdbEntry], mac: bytes, remote_ip: str, *, full: bool) -> str | None:
    """Learn that source `mac` lives behind member host `remote_ip`, as a Linux vxlan device
    with `learning` does for frames it receives; returns the counter to bump, or None when
    nothing changed. Never learned: group (multicast/broadcast) and all-zero source MACs, which
    no endpoint sends from; a given (not learned) entry is never moved; a learned one moves
    with its MAC (a container that changed hosts); a new one only when the table is not `full`
    (the caller keeps the count of learned entries: counting here would cost a scan per frame
    exactly when a member sprays source MACs)."""
    if mac[0] & 0x01 or mac == b"\x00\x00\x00\x00\x00\x00":
        return "fdb_learn_refused_group"
    current = table.get(mac)
    if current is not None:
        if not current.learned:
            return "fdb_learn_refused_static" if current.remote_ip != remote_ip else None
        if current.remote_ip == remote_ip:
            return None
        table[mac] = FdbEntry(remote_ip, learned=True)
        return "fdb_learn_moved"
    if full:
        return "fdb_learn_refused_full"
    table[mac] = FdbEntry(remote_ip, learned=True)
    return "fdb_learned"


def age_learned(table: dict[bytes, FdbEntry], now: float, max_age: float) -> tuple[int, int]:
    """Forget learned entries that received nothing for `max_age` seconds (`now` is any
    monotonic clock); given entries stay. An entry's age restarts at the first sweep that finds
    its receive count moved, so it lives between `max_age` and `max_age` plus one sweep interval
    after its last frame. Returns how many were forgotten and how many learned ones remain."""
    expired: list[tuple[bytes, FdbEntry]] = []
    kept = 0
    for mac, entry in list(table.items()):
        if not entry.learned:
            continue
        if entry.rx_frames != entry.seen_frames:
            entry.seen_frames, entry.seen_at = entry.rx_frames, now
        elif now - entry.seen_at >= max_age:
            expired.append((mac, entry))
            continue
        kept += 1
    for mac, entry in expired:
        # Only if it is still the entry judged here: the control side (another thread) may
        # have put a given one in its place meanwhile.
        if table.get(mac) is entry:
            del table[mac]
    return len(expired), kept


class FdbTable(dict[bytes, FdbEntry]):
    """One network's table (inner MAC → entry) that counts its changes: `generation` moves on
    every key added, replaced or removed, so the C drains (`fastegress`, `fastingress`) know
    when a copy they keep of where MACs live is stale with one integer comparison per drain,
    instead of rebuilding it. Reads (`get`, `[]`) are the plain dict's: no cost on the hot
    path. Counters inside an entry change in place and do not count as a change.

    The rule that makes it safe across threads (the control thread writes while the loop
    reads): a writer moves `generation` after its change, a reader takes `generation` before
    it reads entries. A reader that saw the old generation then finds it moved at its next
    check, whatever it read in between."""

    __slots__ = ("generation",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.generation = 0

    def __setitem__(self, key: bytes, value: FdbEntry) -> None:
        super().__setitem__(key, value)
        self.generation += 1

    def __delitem__(self, key: bytes) -> None:
        super().__delitem__(key)
        self.generation += 1

    def pop(self, key: bytes, *default: Any) -> Any:
        try:
            return super().pop(key, *default)
        finally:
            self.generation += 1

    def popitem(self) -> tuple[bytes, FdbEntry]:
        try:
            return super().popitem()
        finally:
            self.generation += 1

    def clear(self) -> None:
        super().clear()
        self.generation += 1

    def update(self, *args: Any, **kwargs: Any) -> None:
        super().update(*args, **kwargs)
        self.generation += 1

    def setdefault(self, key: bytes, default: Any = None) -> Any:
        try:
            return super().setdefault(key, default)
        finally:
            self.generation += 1

    def __ior__(self, other: Any) -> FdbTable:  # type: ignore[override,misc]
        self.update(other)
        return self


def generation(table: dict[bytes, FdbEntry]) -> int:
    """`table`'s change count, or -1 for a plain dict (a test's): then always treated as
    changed."""
    return table.generation if isinstance(table, FdbTable) else -1


@dataclass(frozen=True, slots=True)
class FdbRecord:
    """A snapshot of one entry, for `network inspect` and tests."""

    vni: int
    mac: str
    remote_ip: str
    tx_frames: int
    tx_bytes: int
    rx_frames: int
    rx_bytes: int
    learned: bool = False


class ForwardingDatabase:
    """Per-VNI tables of MAC (six octets) → FdbEntry.

    The hot path holds a reference to one VNI's dict (`table(vni)`) and reads it directly;
    writers only add, replace or delete keys, each a single atomic dict operation under the GIL,
    so a loop running in another thread always sees a consistent entry.
    """

    def __init__(self) -> None:
        self._tables: dict[int, FdbTable] = {}

    def table(self, vni: int) -> FdbTable:
        """The live table for `vni`, created empty on first use."""
        return self._tables.setdefault(check_vni(vni), FdbTable())

    def add(self, vni: int, mac: str | bytes, remote_ip: str) -> None:
        """Point `mac` on `vni` at `remote_ip`; moving an endpoint resets its counters. A given
        entry replaces a learned one for the same MAC (it is then no longer aged)."""
        key, ip = as_mac(mac), as_ipv4(remote_ip)
        table = self.table(vni)
        current = table.get(key)
        if current is None or current.remote_ip != ip or current.learned:
            table[key] = FdbEntry(ip)

    def remove(self, vni: int, mac: str | bytes) -> bool:
        """Forget `mac` on `vni`; False if it was not there."""
        table = self._tables.get(vni)
        return table is not None and table.pop(as_mac(mac), None) is not None

    def lookup(self, vni: int, mac: str | bytes) -> FdbEntry | None:
        """The entry for `mac` on `vni`, or None (the frame is then flooded)."""
        table = self._tables.get(vni)
        return None if table is None else table.get(as_mac(mac))

    def drop_vni(self, vni: int) -> None:
        """Forget every entry of a network that is going away (the dict is emptied in place so
        a loop still holding it stops forwarding at once)."""
        table = self._tables.pop(vni, None)
        if table is not None:
            table.clear()

    def records(self, vni: int | None = None) -> list[FdbRecord]:
        """Snapshots of the entries, of one VNI or all, sorted by VNI then MAC."""
        vnis = sorted(self._tables) if vni is None else [vni]
        out: list[FdbRecord] = []
        for v in vnis:
            for mac, e in sorted(self._tables.get(v, {}).items()):
                out.append(
                    FdbRecord(
                        v,
                        mac_to_str(mac),
                        e.remote_ip,
                        e.tx_frames,
                        e.tx_bytes,
                        e.rx_frames,
                        e.rx_bytes,
                        e.learned,
                    )
                )
        return out

    def __len__(self) -> int:
        return sum(len(t) for t in self._tables.values())


@dataclass(frozen=True, slots=True)
class RemoteEndpoint:
    """An endpoint (container interface) that lives behind another host's VTEP."""

    vni: int
    mac: str
    ip: str | None
    host_ip: str


class EndpointSink(Protocol):
    """The one interface through which endpoint knowledge reaches the data plane."""

    def endpoint_added(self, endpoint: RemoteEndpoint) -> None:
        """Install FDB (and, when `ip` is known, ARP) state for a remote endpoint."""

    def endpoint_removed(self, endpoint: RemoteEndpoint) -> None:
        """Remove what `endpoint_added` installed."""
