"""The VTEP's decisions, sans-IO: what to do with one frame from a TAP or one datagram from UDP.

The hot loop (`hotpath`) calls these per frame and performs the resulting I/O; everything here
is pure apart from bumping counters on the objects it is given, so it is unit-tested directly.
"""

from __future__ import annotations

import enum
import zlib
from collections import Counter

from overlaynet.dataplane.fdb import FdbEntry, learn
from overlaynet.dataplane.offload import VNET_HDR_LEN
from overlaynet.dataplane.seal import Sealer
from overlaynet.wire import vxlan
from overlaynet.wire.arp import ArpOp, decode_arp, reply_frame
from overlaynet.wire.errors import MalformedFrame
from overlaynet.wire.ethernet import ETHERTYPE_ARP, ETHERTYPE_VLAN, VLAN_TAG_LEN
from overlaynet.wire.ethernet import HEADER_LEN as ETH_LEN

#: Docker's default container MTU on overlays: 1500 underlay minus the 50 octets of VXLAN
#: overhead (libnetwork drivers/overlay, "vxlanEncap = 50").
DEFAULT_MTU = 1450
#: Width of the source port range RFC 7348 recommends (49152-65535).
SOURCE_PORT_SPAN = vxlan.SOURCE_PORT_MAX - vxlan.SOURCE_PORT_MIN + 1

_ETHERTYPE_ARP = ETHERTYPE_ARP.to_bytes(2, "big")
_ETHERTYPE_IPV4 = b"\x08\x00"
_ETHERTYPE_VLAN = ETHERTYPE_VLAN.to_bytes(2, "big")
#: Ethernet (14) + IPv4 header without options (20) + source and destination port (4).
_IPV4_PORTS_END = 38
#: IP protocols whose first four octets are the source and destination ports: TCP, UDP, DCCP,
#: SCTP, UDP-Lite (Linux `proto_ports_offset` returns 0 for the same set).
_PORTED = frozenset((6, 17, 33, 132, 136))
_ICMP = 1
_TCP = 6
#: ICMP echo reply and echo request (RFC 792): their identifier (octets 4-5) names the `ping`.
_ICMP_ECHO = frozenset((0, 8))
_ICMP_ECHO_ID_END = 14 + 20 + 6


_MIN_DATAGRAM = vxlan.HEADER_LEN + ETH_LEN
_STRICT_FLAGS = bytes((vxlan.FLAG_I, 0, 0, 0))


class Verdict(enum.IntEnum):
    """What the loop does with an egress frame."""

    DROP = 0
    UNICAST = 1  # send the datagram to the one host in `targets`
    FLOOD = 2  # head-end replication: send the datagram to every host in `targets`
    REPLY = 3  # write the payload back into the TAP (a locally answered ARP request)


class Network:
    """One overlay network on this host: its VNI, TAP, MTU, peers, FDB table and ARP table.

    Mutable state shared with the hot loop; writers replace `peers` wholesale (a tuple) and
    touch the dicts one key at a time, so the loop never sees a half-done update.
    """

    __slots__ = (
        "arp",
        "counters",
        "fdb",
        "header",
        "latency_fd",
        "learn_limit",
        "learned",
        "mtu",
        "offload",
        "offload_peers",
        "peers",
        "seal",
        "tap_fd",
        "tap_fds",
        "tap_tso",
        "tso_allowed",
        "tso_backlog",
        "vnet_len",
        "vni",
    )

    def __init__(
        self,
        vni: int,
        tap_fd: int,
        mtu: int,
        fdb: dict[bytes, FdbEntry],
        *,
        vnet_hdr: bool = False,
        queues: tuple[int, ...] = (),
    ) -> None:
        self.vni = vxlan.check_vni(vni)
        #: The TAP's queues (fds), all read; `tap_fd` (the first) also takes TCP frames written
        #: to the TAP, `latency_fd` (the second, if any) every other frame: the kernel then
        #: queues each flow's outgoing frames where its incoming ones were written, so pings,
        #: DNS and ARP never wait in a queue behind TCP bulk (`tap.open_tap_queues`).
        self.tap_fds = (tap_fd, *queues)
        self.tap_fd = tap_fd
        self.latency_fd = self.tap_fds[1] if queues else tap_fd
        self.mtu = mtu
        #: Octets of virtio-net header before each frame read from or written to the TAP
        #: (IFF_VNET_HDR), 0 for a plain TAP; the header is what lets ingress write super-frames.
        self.vnet_len = VNET_HDR_LEN if vnet_hdr else 0
        #: The constant VXLAN header: prepending it beat struct.pack per frame (FASTPATH.md).
        self.header = vxlan.encode_header(vni)
        self.peers: tuple[str, ...] = ()
        self.fdb = fdb
        #: Remote endpoints' IPv4 (four octets) → MAC, for answering ARP locally.
        self.arp: dict[bytes, bytes] = {}
        self.counters: Counter[str] = Counter()
        #: Learned FDB entries allowed (`fdb.learn`); 0: no learning, the default.
        self.learn_limit = 0
        #: Learned entries in `fdb` now: kept by `learn_source`, recounted by each aging sweep.
        self.learned = 0
        #: Encrypted overlay: seals egress (`seal.Sealer`, swapped whole on a key change);
        #: None, the default, sends plain RFC 7348.
        self.seal: Sealer | None = None
        #: Offload mode (`--opt offload=on`): the TAP hands over TCP super-frames and partial
        #: checksums (`tap.set_offloads`); they cross whole to `offload_peers` (agents that
        #: advertised offload: `wire.chunks`) and are finished (`segment`) for every other.
        self.offload = False
        #: Peers sent offload datagrams, replaced wholesale; every other peer gets RFC 7348.
        self.offload_peers: frozenset[str] = frozenset()
        #: Offload mode: whether every peer takes offload datagrams (set by the VTEP's control
        #: side). While any peer needs RFC 7348, the TAP's offloads are off and the kernel
        #: segments and checksums before the TAP: Python segmentation ran at 1.3 Gb/s where
        #: the kernel's did 3.1 (benchmarks/profiles/offload-mode.md).
        self.tso_allowed = True
        #: Whether the TAP's offloads (TSO4 and partial checksums) are on now; only the hot
        #: loop changes it (`HotLoop._drain_tap`), with the ioctl.
        self.tap_tso = False
        #: TAP queues that may still hold frames read under offloads just switched off (super-
        #: frames, partial checksums): drained by the offload path until they run empty.
        self.tso_backlog: frozenset[int] = frozenset()

    @property
    def vni_key(self) -> bytes:
        """The three VNI octets as they appear at offset 4 of a VXLAN header."""
        return self.header[4:7]


def flow_hash(frame: bytes) -> int:
    """A stable hash of the inner flow, so one flow keeps one outer source port (no reordering
    across ECMP paths) while different flows spread (RFC 7348 section 5, "Source Port").

    IPv4 with a 20-octet header, not a fragment: addresses plus, for protocols with ports
    (TCP, UDP, DCCP, SCTP, UDP-Lite), the two ports; for ICMP, type and code plus the echo
    identifier of an echo request or reply (what stays the same over one `ping`; the checksum
    and sequence number after it change with every request, as Linux's flow dissector also
    leaves them out); anything else over IPv4: addresses and protocol. Not IPv4: the Ethernet
    header. Kept to a few slices: it runs for every batch and every lone frame.
    """
    if frame[12:14] == _ETHERTYPE_IPV4 and len(frame) >= _IPV4_PORTS_END:
        if frame[14] == 0x45 and not (frame[20] & 0x3F or frame[21]):
            protocol = frame[23]
            if protocol == _TCP or protocol in _PORTED:  # TCP first: the bulk
                return zlib.crc32(frame[26:38])
            if protocol == _ICMP:
                if frame[34] in _ICMP_ECHO and len(frame) >= _ICMP_ECHO_ID_END:
                    return zlib.crc32(frame[38:40], zlib.crc32(frame[26:36]))
                return zlib.crc32(frame[26:36])
        return zlib.crc32(frame[23:24], zlib.crc32(frame[26:34]))
    return zlib.crc32(frame[0:ETH_LEN])


def source_port(frame: bytes) -> int:
    """The outer UDP source port for `frame`, within 49152-65535."""
    return vxlan.SOURCE_PORT_MIN + flow_hash(frame) % SOURCE_PORT_SPAN


def max_frame_len(mtu: int) -> int:
    """Largest inner frame for a network MTU: Ethernet header plus an optional 802.1Q tag."""
    return mtu + ETH_LEN + VLAN_TAG_LEN


def too_big(mtu: int, frame: bytes) -> bool:
    """Whether `frame` (Ethernet, no virtio-net header) is over what the overlay carries: its
    payload above the MTU, beyond a VLAN tag's 4 octets when it has one."""
    size = len(frame)
    return size > mtu + ETH_LEN and (size > max_frame_len(mtu) or frame[12:14] != _ETHERTYPE_VLAN)


def egress(net: Network, frame: bytes) -> tuple[Verdict, bytes, tuple[str, ...]]:
    """Decide what to do with `frame`, read from `net`'s TAP.

    Returns the verdict, the bytes to send (a whole VXLAN payload, or for REPLY an Ethernet
    frame for the TAP) and the target hosts. Counts every outcome in `net.counters`.
    """
    counters = net.counters
    size = len(frame)
    if size < ETH_LEN:
        counters["tx_drop_malformed"] += 1
        return Verdict.DROP, b"", ()
    if too_big(net.mtu, frame):
        # Never fragment a VXLAN packet (RFC 7348 section 4.3): too big is dropped and counted.
        counters["tx_drop_too_big"] += 1
        return Verdict.DROP, b"", ()
    if frame[0] & 0x01:
        if frame[12:14] == _ETHERTYPE_ARP:
            reply = _answer_arp(net, frame)
            if reply is not None:
                counters["arp_answered"] += 1
                return Verdict.REPLY, reply, ()
        return _flood(net, frame, "tx_flood")
    entry = net.fdb.get(frame[0:6])
    if entry is None:
        return _flood(net, frame, "tx_unknown_unicast")
    # Known unicast, the bulk of traffic, is counted on its FDB entry only: one fewer dict
    # update per frame.
    entry.tx_frames += 1
    entry.tx_bytes += size
    return Verdict.UNICAST, net.header + frame, (entry.remote_ip,)


def _flood(net: Network, frame: bytes, counter: str) -> tuple[Verdict, bytes, tuple[str, ...]]:
    """Head-end replication: one copy to every peer host of the network."""
    if not net.peers:
        net.counters["tx_drop_no_peers"] += 1
        return Verdict.DROP, b"", ()
    net.counters[counter] += 1
    return Verdict.FLOOD, net.header + frame, net.peers


def _answer_arp(net: Network, frame: bytes) -> bytes | None:
    """The reply frame for an ARP request about a known remote endpoint, else None (flood it)."""
    if not net.arp:
        return None
    try:
        packet = decode_arp(frame[ETH_LEN:])
    except MalformedFrame:
        return None  # not ours to judge; the remote hosts see it as the kernel would send it
    if packet.op is not ArpOp.REQUEST or packet.sender_ip == packet.target_ip:
        return None  # replies and gratuitous ARP announcements travel as they are
    mac = net.arp.get(packet.target_ip)
    return None if mac is None else reply_frame(packet, mac)


def ingress(
    networks: dict[bytes, Network],
    members: frozenset[str],
    datagram: bytes,
    sender: str,
    counters: Counter[str],
    *,
    strict: bool = False,
) -> tuple[Network | None, bytes]:
    """Decide what to do with a UDP payload received on port 4789 from `sender`.

    Returns the network whose TAP gets the inner frame, or (None, b"") when dropped; every
    drop is counted in `counters` under its reason. `networks` is keyed by `Network.vni_key`.
    """
    if sender not in members:
        counters["rx_drop_not_member"] += 1
        return None, b""
    # Fast path: I flag set, whole inner Ethernet header, reserved bits allowed (or all zero).
    if (
        len(datagram) >= _MIN_DATAGRAM
        and datagram[0] & vxlan.FLAG_I
        and (not strict or (datagram[0:4] == _STRICT_FLAGS and not datagram[7]))
    ):
        inner = datagram[vxlan.HEADER_LEN :]
    else:
        try:
            _vni, inner = vxlan.decode(datagram, strict=strict)
        except MalformedFrame as error:
            counters["rx_drop_malformed"] += 1
            counters["rx_drop_" + error.reason] += 1
            return None, b""
    # Look the network up by the raw VNI octets: one slice, no int conversion per frame.
    net = networks.get(datagram[4:7])
    if net is None:
        counters["rx_drop_unknown_vni"] += 1
        return None, b""
    if len(inner) > net.mtu + ETH_LEN + VLAN_TAG_LEN:
        net.counters["rx_drop_too_big"] += 1
        return None, b""
    entry = net.fdb.get(inner[6:12])
    if entry is not None:
        entry.rx_frames += 1
        entry.rx_bytes += len(inner)
        if entry.learned and entry.remote_ip != sender:
            learn_source(net, inner[6:12], sender)
    else:
        net.counters["rx_frames_unknown_source"] += 1
        if net.learn_limit:
            learn_source(net, inner[6:12], sender)
    return net, inner


def learn_source(net: Network, mac: bytes, sender: str) -> None:
    """With learning on, remember that `mac` (a received frame's source) lives behind member
    host `sender`; counted under what happened (`fdb.learn`)."""
    outcome = learn(net.fdb, mac, sender, full=net.learned >= net.learn_limit)
    if outcome is not None:
        net.counters[outcome] += 1
        if outcome == "fdb_learned":
            net.learned += 1
