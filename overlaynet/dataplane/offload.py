"""Offload helpers, sans-IO: the virtio-net header a TAP reads and writes with IFF_VNET_HDR, the
super-frame the receive side builds from in-order TCP segments, and the classic-BPF program that
sorts received VXLAN by UDP checksum (zero: unprotected inner bytes; non-zero: kernel-verified).

Why the receive side merges: one TAP write per 64 KB instead of one per 1.4 KB frame is the
difference between ~0.03x and ~0.2x of kernel VXLAN (FASTPATH.md). A merged super-frame is
written with VIRTIO_NET_HDR_F_NEEDS_CSUM, so the kernel takes the inner TCP checksum as done;
that is only sound when something else protected those bytes: the outer UDP checksum, which
the kernel verified before our socket saw the datagram. Datagrams with UDP checksum 0 (RFC
7348's SHOULD; a Linux vxlan device made with `noudpcsum` — iproute2 6.x makes them with
`udpcsum` unless told) are never merged: they are written frame by frame and the kernel checks
every inner checksum itself.
"""

from __future__ import annotations

import ctypes
import os
import re
import struct
from collections import Counter
from collections.abc import Sequence

#: From <linux/virtio_net.h>: struct virtio_net_hdr (no num_buffers: the TAP's default size).
VNET_HDR_LEN = 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
#: A header that says "nothing to do": the frame is complete, the kernel checks it as usual.
PLAIN_VNET_HDR = bytes(VNET_HDR_LEN)
_VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset

#: Inner header offsets: Ethernet (14), IPv4 without options (20), then TCP.
ETH_LEN = 14
IPV4_LEN = 20
TCP_OFFSET = ETH_LEN + IPV4_LEN
#: Where the TCP checksum sits inside the TCP header (RFC 9293 section 3.1).
TCP_CHECKSUM_AT = 16
TCP_FLAGS_AT = 13
TCP_PSH = 0x08
IPPROTO_TCP = 6
#: The IPv4 total length is 16 bits (RFC 791): a merged super-frame must stay below it.
IPV4_MAX_TOTAL = 65535


def vnet_header(gso_size: int, headers_len: int, *, gso: bool) -> bytes:
    """The virtio-net header for a TCP/IPv4 frame whose checksum the kernel must treat as
    partial (NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum) and, with `gso`,
    that is a super-frame of `gso_size`-octet segments."""
    return _VNET.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_TCPV4 if gso else VIRTIO_NET_HDR_GSO_NONE,
        headers_len,
        gso_size if gso else 0,
        TCP_OFFSET,
        TCP_CHECKSUM_AT,
    )


def fold(total: int) -> int:
    """Fold a ones'-complement sum to 16 bits (RFC 1071 section 4.1)."""
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ipv4_header_checksum(header: bytes) -> int:
    """RFC 791 header checksum of `header` (its checksum field must be zero)."""
    words = struct.unpack(f"!{len(header) // 2}H", header)
    return ~fold(sum(words)) & 0xFFFF


def super_frame_headers(
    first: bytes, headers_len: int, payload_len: int, *, push: bool = False
) -> bytes:
    """Ethernet + IPv4 + TCP headers for a super-frame: `first`'s headers (the first merged
    segment's, `headers_len` octets), with the IPv4 total length and header checksum for
    `payload_len` payload octets, PSH added when `push` (the last segment had it) and, in the
    TCP checksum field, the pseudo-header sum that NEEDS_CSUM asks for (Linux:
    `~tcp_v4_check(len, saddr, daddr, 0)`)."""
    tcp_len = headers_len - TCP_OFFSET + payload_len
    ip, pseudo = _resized_ipv4(first[ETH_LEN:TCP_OFFSET], IPPROTO_TCP, tcp_len)
    tcp = bytearray(first[TCP_OFFSET:headers_len])
    tcp[TCP_CHECKSUM_AT : TCP_CHECKSUM_AT + 2] = pseudo.to_bytes(2, "big")
    if push:
        tcp[TCP_FLAGS_AT] |= TCP_PSH
    return first[:ETH_LEN] + ip + bytes(tcp)


def _resized_ipv4(header: bytes, proto: int, l4_len: int) -> tuple[bytes, int]:
    """An IPv4 header (20 octets, no options) given the total length for `l4_len` octets of
    protocol `proto` and its header checksum, and the pseudo-header sum of that length (what a
    NEEDS_CSUM write carries in the TCP or UDP checksum field)."""
    ip = bytearray(header)
    ip[2:4] = (IPV4_LEN + l4_len).to_bytes(2, "big")
    ip[10:12] = b"\x00\x00"
    ip[10:12] = ipv4_header_checksum(bytes(ip)).to_bytes(2, "big")
    pseudo = fold(
        int.from_bytes(ip[12:14], "big")
        + int.from_bytes(ip[14:16], "big")
        + int.from_bytes(ip[16:18], "big")
        + int.from_bytes(ip[18:20], "big")
        + proto
        + l4_len
    )
    return bytes(ip), pseudo


# -- sorting received datagrams by UDP checksum --------------------------------------------------

#: From <asm-generic/socket.h> and <linux/filter.h>.
SO_REUSEPORT = 15
SO_ATTACH_REUSEPORT_CBPF = 51
SKF_NET_OFF = -0x100000
#: Classic BPF opcodes (<linux/bpf_common.h>): LDX|B|MSH, LD|H|IND, JMP|JEQ|K, RET|K.
_BPF_LDX_MSH = 0xB1
_BPF_LDH_IND = 0x48
_BPF_LDB_IND = 0x50
_BPF_JEQ_K = 0x15
_BPF_RET_K = 0x06
#: The inner IPv4 protocol octet, from the end of the outer IPv4 header: UDP 8 + VXLAN 8 +
#: Ethernet 14 + 9.
_INNER_PROTOCOL_AT = 39
#: VXLAN's last reserved octet, which carries the key id of a sealed datagram (`seal`): UDP 8 +
#: 7. Its inner protocol is ciphertext, so a checksummed sealed datagram is sorted by this.
_KEY_ID_AT = 15
#: Index, in the SO_REUSEPORT group, of the socket for datagrams with a non-zero UDP checksum.
CHECKSUMMED = 1
UNCHECKSUMMED = 0


def checksum_sorter_program() -> list[tuple[int, int, int, int]]:
    """A reuseport program: socket CHECKSUMMED when the UDP checksum field is non-zero and the
    inner IPv4 protocol is TCP (what may be merged), else UNCHECKSUMMED. X = IPv4 header length
    from the network header; the UDP checksum (RFC 768) is the 16 bits at network header + X +
    6; the inner protocol the octet at X + 39 (UDP 8, VXLAN 8, Ethernet 14, IPv4 offset 9). So
    a checksummed ping or DNS datagram from a kernel VTEP does not queue behind TCP bulk in the
    merging socket: the other socket writes every frame as it came, which is always safe. A
    load past the packet's end returns 0: unchecksummed, the safe side too. A sealed datagram
    (key id octet non-zero: an encrypted overlay's, between agents) with a checksum is part
    of a GSO batch and goes to the merging socket too; its lone frames have checksum 0."""

    def k(value: int) -> int:
        return value & 0xFFFFFFFF

    return [
        (_BPF_LDX_MSH, 0, 0, k(SKF_NET_OFF)),
        (_BPF_LDH_IND, 0, 0, k(SKF_NET_OFF + 6)),
        (_BPF_JEQ_K, 5, 0, 0),
        (_BPF_LDB_IND, 0, 0, k(SKF_NET_OFF + _KEY_ID_AT)),
        (_BPF_JEQ_K, 0, 2, 0),
        (_BPF_LDB_IND, 0, 0, k(SKF_NET_OFF + _INNER_PROTOCOL_AT)),
        (_BPF_JEQ_K, 0, 1, IPPROTO_TCP),
        (_BPF_RET_K, 0, 0, CHECKSUMMED),
        (_BPF_RET_K, 0, 0, UNCHECKSUMMED),
    ]


class SockFprog:
    """A struct sock_fprog for setsockopt, with the instruction array it points to kept alive
    as long as this object."""

    def __init__(self, program: list[tuple[int, int, int, int]]) -> None:
        code = b"".join(struct.pack("HBBI", *insn) for insn in program)
        self._array = (ctypes.c_ubyte * len(code)).from_buffer_copy(code)
        self.value = struct.pack("HP", len(program), ctypes.addressof(self._array))


# -- merging received UDP datagrams into one GSO write -------------------------------------------

#: From <linux/virtio_net.h>: a UDP super-frame the kernel cuts into `gso_size`-octet datagrams
#: (USO; tun has taken it on writes since Linux 6.2).
VIRTIO_NET_HDR_GSO_UDP_L4 = 5
IPPROTO_UDP = 17
UDP_LEN = 8
#: Where the UDP checksum sits inside the UDP header (RFC 768).
UDP_CHECKSUM_AT = 6
#: Inner offsets in a virtio-net header + frame (offload mode's unit): the IPv4 header, the
#: UDP header and the payload.
_IP_AT = VNET_HDR_LEN + ETH_LEN
_UDP_AT = _IP_AT + IPV4_LEN
_PAYLOAD_AT = _UDP_AT + UDP_LEN
#: The virtio-net header a TAP with TUN_F_CSUM gives a UDP/IPv4 datagram whose checksum it left
#: to us (partial: the field holds the pseudo-header sum): the only kind merged.
_UDP_PARTIAL_VNET = _VNET.pack(
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, 0, 0, TCP_OFFSET, UDP_CHECKSUM_AT
)
#: Datagrams per merged write: the kernel refuses a UDP GSO write of more than UDP_MAX_SEGMENTS
#: (64 before Linux 6.2's 128) segments.
UDP_MERGE_MAX_SEGMENTS = 64
#: Octets of payload per merged write: its IPv4 total length is 16 bits (RFC 791).
UDP_MERGE_MAX_PAYLOAD = IPV4_MAX_TOTAL - IPV4_LEN - UDP_LEN
#: The first kernel whose tun takes GSO_UDP_L4 on a write (virtio_net_hdr_to_skb learned USO in
#: Linux 6.2); an older one refuses the write (EINVAL), so there every datagram goes alone.
USO_WRITE_KERNEL = (6, 2)


def kernel_takes_uso_writes(release: str | None = None) -> bool:
    """Whether the running kernel (or `release`, as `uname -r` prints it) is USO_WRITE_KERNEL
    or later."""
    numbers = re.match(r"(\d+)\.(\d+)", release if release is not None else os.uname().release)
    return numbers is not None and (int(numbers[1]), int(numbers[2])) >= USO_WRITE_KERNEL


#: Decided once: the kernel does not change under a running VTEP.
USO_WRITES = kernel_takes_uso_writes()


def udp_merge_key(data: bytes) -> bytes | None:
    """What a virtio-net header + frame must share with the datagrams it is merged with (Ethernet
    header, IPv4 header but its length, id and checksum, the UDP ports), or None when it must be
    written alone: not a partial-checksum UDP/IPv4 datagram without options or fragments, or
    lengths that disagree (a frame with Ethernet padding, garbage)."""
    if len(data) <= _PAYLOAD_AT or data[:VNET_HDR_LEN] != _UDP_PARTIAL_VNET:
        return None
    if data[22:25] != b"\x08\x00\x45" or data[_IP_AT + 9] != IPPROTO_UDP:
        return None
    if data[_IP_AT + 6] & 0x3F or data[_IP_AT + 7]:  # MF or a fragment offset
        return None
    total = len(data) - _IP_AT
    if int.from_bytes(data[_IP_AT + 2 : _IP_AT + 4], "big") != total:
        return None
    if int.from_bytes(data[_UDP_AT + 4 : _UDP_AT + 6], "big") != total - IPV4_LEN:
        return None
    return (
        data[VNET_HDR_LEN : _IP_AT + 2]
        + data[_IP_AT + 6 : _IP_AT + 10]
        + data[_IP_AT + 12 : _UDP_AT + 4]
    )


def udp_payload(data: bytes) -> memoryview:
    """The UDP payload of a virtio-net header + frame that has a `udp_merge_key`."""
    return memoryview(data)[_PAYLOAD_AT:]


def udp_super_frame(first: bytes, payloads: Sequence[bytes | memoryview]) -> bytes:
    """One virtio-net header + frame that the kernel cuts back into the datagrams whose payloads
    are `payloads` (all as long as the first, the last maybe shorter; 2 or more, at most
    UDP_MERGE_MAX_SEGMENTS, UDP_MERGE_MAX_PAYLOAD octets in all), with `first`'s headers
    (`first` has a `udp_merge_key` that every merged datagram shared): GSO_UDP_L4 with gso_size
    the first payload's length, IPv4 and UDP lengths for the whole, and in the UDP checksum
    field the pseudo-header sum for that length, as NEEDS_CSUM asks (the kernel's segmentation
    adjusts it per datagram: `__udp_gso_segment`)."""
    size = len(payloads[0])
    total = sum(len(p) for p in payloads)
    udp_len = UDP_LEN + total
    ip, pseudo = _resized_ipv4(first[_IP_AT:_UDP_AT], IPPROTO_UDP, udp_len)
    vnet = _VNET.pack(
        VIRTIO_NET_HDR_F_NEEDS_CSUM,
        VIRTIO_NET_HDR_GSO_UDP_L4,
        _PAYLOAD_AT - VNET_HDR_LEN,
        size,
        TCP_OFFSET,
        UDP_CHECKSUM_AT,
    )
    udp = first[_UDP_AT : _UDP_AT + 4] + udp_len.to_bytes(2, "big") + pseudo.to_bytes(2, "big")
    return b"".join([vnet, first[VNET_HDR_LEN:_IP_AT], ip, udp, *payloads])


class UdpRuns:
    """Received virtio-net header + frames in, what to write to the TAP out, in the same order:
    consecutive datagrams of one UDP flow (same sender, network and `udp_merge_key`, equal
    payload sizes but the last) become one `udp_super_frame`, everything else passes as it came.
    One TAP write then carries a whole GRO buffer of datagrams through the bridge and the veth
    (the kernel segments at the receiving socket), instead of one write each: the write per
    datagram was most of the receiving VTEP's work for `iperf3 -u` in offload mode, and the
    iperf3 server lost datagrams whenever it had no CPU left (UdpRcvbufErrors). With `merge`
    False (a kernel before USO_WRITE_KERNEL) every frame passes as it came.
    Nothing waits: the owner calls `flush` at the end of every drain. Counters (in `counters`):
    offload_udp_merged (datagrams that left in a merged write), offload_udp_merged_writes."""

    __slots__ = ("_first", "_ident", "_parts", "_short", "_size", "_total", "counters", "merge")

    def __init__(self, counters: Counter[str], *, merge: bool = USO_WRITES) -> None:
        self.counters = counters
        self.merge = merge
        self._ident: tuple[str, int, bytes] | None = None
        self._first = b""
        self._parts: list[bytes | memoryview] = []
        self._size = 0
        self._total = 0
        self._short = False  # the run's last payload is shorter: nothing may follow it

    def add(self, sender: str, vni: int, data: bytes) -> list[tuple[str, int, bytes]]:
        """Take one frame from `sender` on `vni`; returns what must be written now (maybe
        nothing: the frame joined the open run)."""
        parts, first, ident = self._parts, self._first, self._ident
        if (
            parts
            and len(data) == len(first)
            and not self._short
            and data[: _IP_AT + 4] == first[: _IP_AT + 4]
            and data[_IP_AT + 6 : _IP_AT + 10] == first[_IP_AT + 6 : _IP_AT + 10]
            and data[_IP_AT + 12 : _UDP_AT + 6] == first[_IP_AT + 12 : _UDP_AT + 6]
            and ident is not None
            and ident[0] == sender
            and ident[1] == vni
            and len(parts) < UDP_MERGE_MAX_SEGMENTS
            and self._total + self._size <= UDP_MERGE_MAX_PAYLOAD
        ):
            # The common case, cheaply: the open run's flow and size again. Every header
            # octet `udp_merge_key` looks at is the first's (lengths included: equal sizes).
            parts.append(udp_payload(data))
            self._total += self._size
            return []
        key = udp_merge_key(data) if self.merge else None
        if key is None:
            alone = self.flush()
            alone.append((sender, vni, data))
            return alone
        n = len(data) - _PAYLOAD_AT
        ident = (sender, vni, key)
        out: list[tuple[str, int, bytes]] = []
        if self._parts and (
            self._short
            or n > self._size
            or ident != self._ident
            or len(self._parts) >= UDP_MERGE_MAX_SEGMENTS
            or self._total + n > UDP_MERGE_MAX_PAYLOAD
        ):
            out = self.flush()
        if not self._parts:
            self._ident, self._first, self._size, self._total = ident, data, n, 0
        self._parts.append(udp_payload(data))
        self._total += n
        self._short = n < self._size
        return out

    def flush(self) -> list[tuple[str, int, bytes]]:
        """The open run, written as it stands (one datagram: unchanged)."""
        parts, ident = self._parts, self._ident
        if not parts or ident is None:
            return []
        self._parts, self._ident, self._short = [], None, False
        if len(parts) == 1:
            return [(ident[0], ident[1], self._first)]
        self.counters["offload_udp_merged"] += len(parts)
        self.counters["offload_udp_merged_writes"] += 1
        return [(ident[0], ident[1], udp_super_frame(self._first, parts))]
