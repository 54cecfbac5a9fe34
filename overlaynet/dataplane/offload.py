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
import struct

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
    ip = bytearray(first[ETH_LEN:TCP_OFFSET])
    ip[2:4] = (IPV4_LEN + tcp_len).to_bytes(2, "big")
    ip[10:12] = b"\x00\x00"
    ip[10:12] = ipv4_header_checksum(bytes(ip)).to_bytes(2, "big")
    pseudo = fold(
        int.from_bytes(ip[12:14], "big")
        + int.from_bytes(ip[14:16], "big")
        + int.from_bytes(ip[16:18], "big")
        + int.from_bytes(ip[18:20], "big")
        + IPPROTO_TCP
        + tcp_len
    )
    tcp = bytearray(first[TCP_OFFSET:headers_len])
    tcp[TCP_CHECKSUM_AT : TCP_CHECKSUM_AT + 2] = pseudo.to_bytes(2, "big")
    if push:
        tcp[TCP_FLAGS_AT] |= TCP_PSH
    return first[:ETH_LEN] + bytes(ip) + bytes(tcp)


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
