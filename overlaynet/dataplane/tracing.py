"""The VTEP's packet-trace flag: a small matcher, armed by the agent for a bounded time, that
records what each stage of the hot loop decided about the frames of one probe and its reply.

Unarmed, the hot loop pays one `is not None` check per drain and per frame (`HotLoop.tracer`).
Armed, each frame costs a few slice comparisons; the records are bounded in count, and the
matcher goes quiet by itself once its time is up, even if nobody collects it. The decisions are
read from the same state the loop is about to act on (FDB, peers, members, MTU), in the loop's
own thread, so a record says what the loop did to that frame.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass
from typing import Any

from overlaynet.dataplane.seal import KEY_ID_OFFSET
from overlaynet.dataplane.switching import Network, flow_hash
from overlaynet.wire.ethernet import mac_to_str

#: Records kept per arming: a probe and its reply cross a VTEP once each, a flood a few times;
#: a handful more leaves room for retransmissions without ever growing on a busy host.
MAX_RECORDS = 16
#: The longest a trace may stay armed: a probe's round trip plus collection takes seconds.
MAX_ARMED_SECONDS = 30.0

_ETHERTYPE_IPV4 = b"\x08\x00"
_ICMP, _TCP, _UDP = 1, 6, 17
#: ICMP errors that quote the offending datagram (RFC 792): destination unreachable and time
#: exceeded; a reply to a UDP probe is usually the first.
_ICMP_ERRORS = frozenset((3, 11))
_PROTOCOLS = {"icmp": _ICMP, "tcp": _TCP, "udp": _UDP}


@dataclass(frozen=True)
class TraceMatch:
    """One probe: inner IPv4 source/destination, protocol, IP identification, and the L4 key
    that its reply repeats (ICMP echo identifier, or TCP/UDP source and destination ports)."""

    src: str
    dst: str
    proto: str  # "icmp", "tcp" or "udp"
    ip_id: int
    sport: int = 0  # ICMP: the echo identifier
    dport: int = 0

    def __post_init__(self) -> None:
        ipaddress.IPv4Address(self.src)
        ipaddress.IPv4Address(self.dst)
        if self.proto not in _PROTOCOLS:
            raise ValueError(f"protocol {self.proto!r}: icmp, tcp or udp")
        for name, value in (("ip_id", self.ip_id), ("sport", self.sport), ("dport", self.dport)):
            if not 0 <= value <= 0xFFFF:
                raise ValueError(f"{name} {value} is not a 16-bit number")

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TraceMatch:
        return cls(
            str(doc["src"]),
            str(doc["dst"]),
            str(doc["proto"]),
            int(doc["ip_id"]),
            int(doc.get("sport", 0)),
            int(doc.get("dport", 0)),
        )


class Matcher:
    """Tells whether an Ethernet frame is the probe, its reply, or neither (pure)."""

    def __init__(self, match: TraceMatch) -> None:
        src = ipaddress.IPv4Address(match.src).packed
        dst = ipaddress.IPv4Address(match.dst).packed
        self.proto = _PROTOCOLS[match.proto]
        self._forward = src + dst
        #: The address the probe's sender must resolve with ARP (the destination, on-link).
        self.next_hop = dst
        self._backward = dst + src
        self._ip_id = match.ip_id.to_bytes(2, "big")
        if self.proto == _ICMP:
            self._reply_l4 = match.sport.to_bytes(2, "big")
        else:
            self._reply_l4 = match.dport.to_bytes(2, "big") + match.sport.to_bytes(2, "big")

    def classify(self, frame: bytes) -> str | None:
        """The frame's part in the trace: "probe", "reply" (echo reply, SYN-ACK or RST, or an
        ICMP error quoting the probe), or None. `frame` starts at the Ethernet header."""
        if frame[12:14] != _ETHERTYPE_IPV4 or len(frame) < 34:
            return None
        addresses = frame[26:34]
        proto = frame[23]
        if addresses == self._forward and proto == self.proto and frame[18:20] == self._ip_id:
            return "probe"
        if addresses[4:8] != self._forward[0:4]:
            return None
        l4 = 14 + (frame[14] & 0x0F) * 4
        if proto == _ICMP and len(frame) >= l4 + 8 and frame[l4] in _ICMP_ERRORS:
            quoted = l4 + 8  # the offending datagram's IPv4 header follows the ICMP header
            if frame[quoted + 12 : quoted + 20] == self._forward and (
                frame[quoted + 4 : quoted + 6] == self._ip_id
            ):
                return "reply"
            return None
        if addresses != self._backward or proto != self.proto:
            return None
        if self.proto == _ICMP:
            return "reply" if frame[l4] == 0 and frame[l4 + 4 : l4 + 6] == self._reply_l4 else None
        return "reply" if frame[l4 : l4 + 4] == self._reply_l4 else None


class Tracer:
    """The armed trace flag of one VTEP: the matcher, a deadline and the records.

    `egress`/`ingress` are called by the hot loop only while it is armed; they never raise
    (a record is advice, the frame's fate is the loop's)."""

    def __init__(
        self,
        match: TraceMatch,
        local_ip: str,
        source_ports: list[int],
        seconds: float,
        *,
        limit: int = MAX_RECORDS,
        clock: Any = time.time,
    ) -> None:
        if not 0 < seconds <= MAX_ARMED_SECONDS:
            raise ValueError(f"a trace is armed for 0 < seconds <= {MAX_ARMED_SECONDS:g}")
        self.match = match
        self.matcher = Matcher(match)
        self.local_ip = local_ip
        self.source_ports = source_ports
        self._clock = clock
        self.deadline = clock() + seconds
        self.limit = limit
        self.records: list[dict[str, Any]] = []
        # The last datagram recorded at ingress: with encrypted networks on the host the loop
        # offers each datagram twice (before and after opening); a plain one is recorded once.
        self._last_ingress: tuple[str, bytes] = ("", b"")
        # The key id of the last sealed datagram per sender: opening clears that octet, so it
        # is read before and reported with the opened frame's record.
        self._sealed_with: dict[str, int] = {}

    def _open(self) -> bool:
        return len(self.records) < self.limit and self._clock() < self.deadline

    def egress(self, net: Network, frame: bytes) -> None:
        """A frame read from `net`'s TAP (without a virtio-net header)."""
        kind = self.matcher.classify(frame)
        if kind is None or not self._open():
            return
        record: dict[str, Any] = {
            "stage": "vtep.egress",
            "t": self._clock(),
            "kind": kind,
            "vni": net.vni,
            "inner_src_mac": mac_to_str(frame[6:12]),
            "inner_dst_mac": mac_to_str(frame[0:6]),
            "length": len(frame),
            "mtu": net.mtu,
            "outer_src": self.local_ip,
            "source_port": self.source_ports[flow_hash(frame) % len(self.source_ports)]
            if self.source_ports
            else 0,
            "encrypted": net.seal is not None,
        }
        if net.seal is not None:
            # The key the loop is about to seal this frame with (the keyring's primary).
            record["key_id"] = net.seal.primary
        entry = net.fdb.get(frame[0:6])
        if len(frame) > net.mtu + 14:
            record.update(decision="drop_too_big", targets=[])
        elif entry is not None:
            record.update(decision="fdb_hit", targets=list(entry.targets), learned=entry.learned)
        elif net.peers:
            record.update(decision="flood", targets=list(net.peers))
        else:
            record.update(decision="drop_no_fdb_no_peers", targets=[])
        self.records.append(record)

    def ingress(
        self,
        datagram: bytes,
        sender: str,
        members: frozenset[str],
        networks: dict[bytes, Network],
        sealed: bool,
    ) -> None:
        """A datagram received on the VXLAN port (the first of a GRO buffer only: probes and
        their replies are lone datagrams). `sealed`: before the loop opened it, so a sealed
        network's datagram is left for the call after opening."""
        if len(datagram) < 8 + 34:
            return
        net = networks.get(datagram[4:7])
        if sealed and net is not None and net.seal is not None:
            # The inner frame is sealed here: the record comes after opening; keep its key id.
            if len(self._sealed_with) < self.limit or sender in self._sealed_with:
                self._sealed_with[sender] = datagram[KEY_ID_OFFSET]
            return
        kind = self.matcher.classify(datagram[8:])
        if kind is None or not self._open() or (sender, datagram) == self._last_ingress:
            return
        self._last_ingress = (sender, datagram)
        record: dict[str, Any] = {
            "stage": "vtep.ingress",
            "t": self._clock(),
            "kind": kind,
            "vni": int.from_bytes(datagram[4:7], "big"),
            "outer_src": sender,
            "outer_dst": self.local_ip,
            "member": sender in members,
            "length": len(datagram) - 8,
        }
        if net is not None and net.seal is not None:
            record["encrypted"] = True
            record["key_id"] = self._sealed_with.pop(sender, 0)  # 0: not seen sealed
        if sender not in members:
            record["decision"] = "drop_not_member"
        elif net is None:
            record["decision"] = "drop_unknown_vni"
        elif len(datagram) - 8 > net.mtu + 18:
            record["decision"] = "drop_too_big"
        else:
            record["decision"] = "to_tap"
        self.records.append(record)
