"""Finishing what a TAP with offloads hands over, sans-IO: a frame read with a virtio-net header
that says NEEDS_CSUM (checksum left partial) and/or GSO_TCPV4 (a TCP super-frame) becomes the
wire-ready frames the RFC wire carries (each at most the MTU, every checksum complete), as the
kernel would have made them before a TAP without offloads.

Used in offload mode toward peers that are not overlaynet offload agents (a kernel VTEP, a
static peer, an agent without offload), and for what a plain network's TAP queued under offloads
that the C egress drain does not finish (a trace armed meanwhile, a super-frame it has no room
to cut: `HotLoop._egress_offloaded`). That is the costly path (FASTPATH.md: ~3.8 us per segment,
most of it the TCP checksum), taken only where needed; `accel/egress.c` does the same in C
(~0.1-0.2 us) and is tested octet for octet against this module (test_fastegress_tso).
"""

from __future__ import annotations

import struct

from overlaynet.dataplane.offload import (
    ETH_LEN,
    IPPROTO_TCP,
    VIRTIO_NET_HDR_F_NEEDS_CSUM,
    VIRTIO_NET_HDR_GSO_NONE,
    VIRTIO_NET_HDR_GSO_TCPV4,
    VNET_HDR_LEN,
)

_VNET = struct.Struct("<BBHHHH")
_ETHERTYPE_IPV4 = b"\x08\x00"
_TCP_FIN_PSH = 0x09
_TCP_CWR = 0x80
_IPPROTO_UDP = b"\x11"  # the IPv4 protocol octet, as a slice compares


class SegmentError(ValueError):
    """A frame whose virtio-net header cannot be honoured here; `reason` is its counter."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def checksum(data: bytes | bytearray | memoryview, initial: int = 0) -> int:
    """The 16-bit ones'-complement sum of `data` (RFC 1071), not complemented, folded.

    One big integer and a few folds: the fastest pure-Python way found (FASTPATH.md)."""
    n = len(data)
    if n & 1:
        data = bytes(data) + b"\x00"
    total = int.from_bytes(data, "big") + initial
    # Folding at 16-bit multiples keeps the value modulo 0xFFFF (2**16 = 1 there) and makes
    # the final modulo cheap; a nonzero sum that is 0 modulo 0xFFFF is 0xFFFF (ones' complement).
    bits = total.bit_length()
    while bits > 64:
        half = (bits >> 5) << 4
        total = (total >> half) + (total & ((1 << half) - 1))
        bits = total.bit_length()
    folded = total % 0xFFFF
    return folded if folded or not total else 0xFFFF


def finish_checksum(frame: bytes, start: int, offset: int, *, udp: bool = False) -> bytes:
    """`frame` with its partial checksum completed: the field at start + offset holds the
    pseudo-header sum (what NEEDS_CSUM means), the sum from `start` to the end goes in, as
    Linux's skb_checksum_help. UDP sends a computed 0 as 0xFFFF (RFC 768)."""
    at = start + offset
    if start < ETH_LEN or at + 2 > len(frame):
        raise SegmentError("offload_bad_csum_offsets")
    value = ~checksum(memoryview(frame)[start:]) & 0xFFFF
    if udp and not value:
        value = 0xFFFF
    return frame[:at] + value.to_bytes(2, "big") + frame[at + 2 :]


def _ipv4_header_checksum(ip: bytearray) -> None:
    ip[10:12] = b"\x00\x00"
    ip[10:12] = (~checksum(ip) & 0xFFFF).to_bytes(2, "big")


def segment_tcp4(frame: bytes, gso_size: int) -> list[bytes]:
    """A TCP/IPv4 super-frame (TSO) → its MTU-sized segments with complete checksums, as the
    kernel's tcp_gso_segment makes them: payload cut every `gso_size` octets, IPv4 id counting
    up, sequence numbers advanced, FIN and PSH only on the last segment, CWR only on the first."""
    if frame[12:14] != _ETHERTYPE_IPV4 or len(frame) < ETH_LEN + 40:
        raise SegmentError("offload_gso_not_ipv4")
    ihl = (frame[ETH_LEN] & 0x0F) * 4
    tcp_at = ETH_LEN + ihl
    if frame[ETH_LEN + 9] != IPPROTO_TCP or ihl < 20 or len(frame) < tcp_at + 20:
        raise SegmentError("offload_gso_not_tcp")
    doff = (frame[tcp_at + 12] >> 4) * 4
    payload_at = tcp_at + doff
    if doff < 20 or payload_at > len(frame) or gso_size <= 0:
        raise SegmentError("offload_gso_bad_header")
    eth = frame[:ETH_LEN]
    ip0 = bytearray(frame[ETH_LEN:tcp_at])
    tcp0 = bytearray(frame[tcp_at:payload_at])
    ip_id = int.from_bytes(ip0[4:6], "big")
    seq = int.from_bytes(tcp0[4:8], "big")
    flags = tcp0[13]
    # Pseudo-header sum without the length: addresses and protocol (RFC 9293 section 3.1).
    pseudo = checksum(bytes(ip0[12:20])) + IPPROTO_TCP
    view = memoryview(frame)
    total = len(frame) - payload_at
    out: list[bytes] = []
    first = True
    for start in range(0, total or 1, gso_size):
        piece = view[payload_at + start : payload_at + min(total, start + gso_size)]
        last = start + gso_size >= total
        ip = bytearray(ip0)
        ip[2:4] = (ihl + doff + len(piece)).to_bytes(2, "big")
        ip[4:6] = (ip_id & 0xFFFF).to_bytes(2, "big")
        _ipv4_header_checksum(ip)
        tcp = bytearray(tcp0)
        tcp[4:8] = (seq & 0xFFFFFFFF).to_bytes(4, "big")
        f = flags if last else flags & ~_TCP_FIN_PSH
        tcp[13] = f if first else f & ~_TCP_CWR
        tcp[16:18] = b"\x00\x00"
        segment = bytes(tcp) + piece
        value = ~checksum(segment, pseudo + len(segment)) & 0xFFFF
        tcp[16:18] = value.to_bytes(2, "big")
        out.append(eth + bytes(ip) + bytes(tcp) + piece)
        ip_id += 1
        seq += len(piece)
        first = False
    return out


def wire_frames(vnet: bytes, frame: bytes) -> list[bytes]:
    """What a frame read with virtio-net header `vnet` is on the RFC wire: itself (nothing
    to do), itself with its checksum finished, or its TCP segments."""
    if len(vnet) != VNET_HDR_LEN:
        raise SegmentError("offload_bad_vnet_header")
    flags, gso_type, _hdr_len, gso_size, start, offset = _VNET.unpack(vnet)
    if gso_type == VIRTIO_NET_HDR_GSO_NONE:
        if not flags & VIRTIO_NET_HDR_F_NEEDS_CSUM:
            return [frame]
        # frame[23:24]: empty for a runt, which finish_checksum then refuses (no IndexError).
        udp = frame[12:14] == _ETHERTYPE_IPV4 and frame[ETH_LEN + 9 : ETH_LEN + 10] == _IPPROTO_UDP
        return [finish_checksum(frame, start, offset, udp=udp)]
    if gso_type & 0x7F != VIRTIO_NET_HDR_GSO_TCPV4:
        raise SegmentError("offload_gso_unsupported")
    return segment_tcp4(frame, gso_size)
