"""Forwarding database: (VNI, inner MAC) → remote VTEP address, with per-entry counters.

Fed through one interface (`EndpointSink`) by whatever knows where endpoints live: static peers
today, the gossip endpoint table later. There is no learning from received frames, like a Linux
vxlan device created with `nolearning`, because a forged inner source MAC must not steer traffic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from overlaynet.wire.ethernet import MAC_LEN, mac_to_bytes, mac_to_str
from overlaynet.wire.vxlan import check_vni


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
    bumps the counters in place, which is why this is a slotted class and not a frozen record."""

    __slots__ = ("remote_ip", "rx_bytes", "rx_frames", "tx_bytes", "tx_frames")

    def __init__(self, remote_ip: str) -> None:
        self.remote_ip = remote_ip
        self.tx_frames = 0
        self.tx_bytes = 0
        self.rx_frames = 0
        self.rx_bytes = 0


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


class ForwardingDatabase:
    """Per-VNI tables of MAC (six octets) → FdbEntry.

    The hot path holds a reference to one VNI's dict (`table(vni)`) and reads it directly;
    writers only add, replace or delete keys, each a single atomic dict operation under the GIL,
    so a loop running in another thread always sees a consistent entry.
    """

    def __init__(self) -> None:
        self._tables: dict[int, dict[bytes, FdbEntry]] = {}

    def table(self, vni: int) -> dict[bytes, FdbEntry]:
        """The live table for `vni`, created empty on first use."""
        return self._tables.setdefault(check_vni(vni), {})

    def add(self, vni: int, mac: str | bytes, remote_ip: str) -> None:
        """Point `mac` on `vni` at `remote_ip`; moving an endpoint resets its counters."""
        key, ip = as_mac(mac), as_ipv4(remote_ip)
        table = self.table(vni)
        current = table.get(key)
        if current is None or current.remote_ip != ip:
            table[key] = FdbEntry(ip)

    def remove(self, vni: int, mac: str | bytes) -> bool:
        """Forget `mac` on `vni`; False if it was not there."""
        return self._tables.get(vni, {}).pop(as_mac(mac), None) is not None

    def lookup(self, vni: int, mac: str | bytes) -> FdbEntry | None:
        """The entry for `mac` on `vni`, or None (the frame is then flooded)."""
        return self._tables.get(vni, {}).get(as_mac(mac))

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
