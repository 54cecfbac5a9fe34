"""Offload helpers: the virtio-net header, super-frame headers a kernel accepts (checked with
scapy as an independent implementation), and the checksum-sorting BPF program's shape."""

from __future__ import annotations

import struct

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether

from overlaynet.dataplane import offload

HEADERS = bytes(
    Ether(src="02:42:0a:00:00:02", dst="02:42:0a:00:00:03")
    / IP(src="10.0.0.2", dst="10.0.0.3", id=7, flags="DF")
    / TCP(sport=40000, dport=5201, seq=1000, ack=5, flags="A", options=[("NOP", None)] * 12)
)


def test_vnet_header_describes_a_tcp_super_frame_with_a_partial_checksum() -> None:
    header = offload.vnet_header(1398, 66, gso=True)
    assert len(header) == offload.VNET_HDR_LEN
    flags, gso_type, hdr_len, gso_size, start, offset = struct.unpack("<BBHHHH", header)
    assert flags == offload.VIRTIO_NET_HDR_F_NEEDS_CSUM
    assert gso_type == offload.VIRTIO_NET_HDR_GSO_TCPV4
    assert (hdr_len, gso_size, start, offset) == (66, 1398, 34, 16)


def test_plain_vnet_header_asks_nothing_of_the_kernel() -> None:
    assert bytes(10) == offload.PLAIN_VNET_HDR


@given(st.binary(min_size=1, max_size=3000))
def test_super_frame_headers_yield_valid_ipv4_and_completable_tcp_checksums(payload: bytes) -> None:
    headers = offload.super_frame_headers(HEADERS, len(HEADERS), len(payload))
    frame = Ether(headers + payload)
    # IPv4: the length covers the whole payload and the header checksum verifies.
    assert frame[IP].len == 20 + len(HEADERS) - 34 + len(payload)
    ip = bytes(frame[IP])[:20]
    assert offload.fold(sum(struct.unpack("!10H", ip))) == 0xFFFF
    # TCP: the field holds the pseudo-header sum; adding the segment's own sum, as the kernel
    # does for NEEDS_CSUM, gives the checksum scapy computes from scratch.
    segment = bytes(frame[TCP])
    padded = segment + b"\x00" * (len(segment) % 2)
    total = offload.fold(sum(struct.unpack(f"!{len(padded) // 2}H", padded)))
    completed = ~total & 0xFFFF
    reference = Ether(headers + payload)
    del reference[TCP].chksum
    assert completed == Ether(bytes(reference))[TCP].chksum
    # Everything else is the first segment's.
    assert headers[:14] == HEADERS[:14]
    assert frame[TCP].seq == 1000 and frame[TCP].flags == "A"


def test_ipv4_header_checksum_matches_scapy() -> None:
    packet = IP(src="192.168.0.11", dst="192.168.0.12", ttl=3, id=99)
    raw = bytearray(bytes(packet))
    expected = int.from_bytes(raw[10:12], "big")
    raw[10:12] = b"\x00\x00"
    assert offload.ipv4_header_checksum(bytes(raw)) == expected


def run_classic_bpf(program: list[tuple[int, int, int, int]], packet: bytes) -> int:
    """The few classic BPF instructions the sorter uses, over `packet` as its network header
    (SKF_NET_OFF-relative loads); a load past the end returns 0, as the kernel's does."""
    a = x = pc = 0
    while True:
        code, jt, jf, k = program[pc]
        offset = (k - (offload.SKF_NET_OFF & 0xFFFFFFFF)) & 0xFFFFFFFF
        if code == 0xB1:  # LDX MSH: 4 * (P[k] & 0xf)
            if offset >= len(packet):
                return 0
            x = 4 * (packet[offset] & 0x0F)
        elif code in (0x48, 0x50):  # LD H / LD B, indirect: P[X + k]
            size = 2 if code == 0x48 else 1
            if x + offset + size > len(packet):
                return 0
            a = int.from_bytes(packet[x + offset : x + offset + size], "big")
        elif code == 0x15:  # JEQ K
            pc += jt if a == k else jf
        elif code == 0x06:  # RET K
            return k
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")
        pc += 1


def outer(inner: bytes, checksum: int) -> bytes:
    """An outer IPv4 + UDP header (checksum field as given) + VXLAN around `inner`."""
    udp = UDP(sport=50000, dport=4789, chksum=checksum) / (
        bytes([8, 0, 0, 0, 0, 0x10, 1, 0]) + inner
    )
    return bytes(IP(src="192.168.0.11", dst="192.168.0.12") / udp)


def test_checksum_sorter_merges_only_checksummed_tcp() -> None:
    """Checksummed TCP to the merging socket; checksum 0 (unprotected inner bytes), and any
    other protocol (a ping, DNS: never merged, and must not queue behind the bulk there), to
    the other socket; truncated datagrams too."""
    program = offload.checksum_sorter_program()
    tcp = bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.3") / TCP() / b"x")
    ping = bytes(Ether() / IP(src="10.0.0.2", dst="10.0.0.3") / ICMP())
    assert run_classic_bpf(program, outer(tcp, 0x1234)) == offload.CHECKSUMMED
    assert run_classic_bpf(program, outer(tcp, 0)) == offload.UNCHECKSUMMED
    assert run_classic_bpf(program, outer(ping, 0x1234)) == offload.UNCHECKSUMMED
    assert run_classic_bpf(program, outer(ping, 0)) == offload.UNCHECKSUMMED
    assert run_classic_bpf(program, outer(tcp, 0x1234)[:50]) == offload.UNCHECKSUMMED
    # Sealed (encrypted overlay, key id in VXLAN octet 7): the inner protocol is ciphertext;
    # a GSO batch (checksummed) merges whatever the ciphertext holds, lone frames do not.
    sealed_ping = bytearray(outer(ping, 0x1234))
    sealed_ping[20 + 8 + 7] = 1
    assert run_classic_bpf(program, bytes(sealed_ping)) == offload.CHECKSUMMED
    sealed_ping = bytearray(outer(ping, 0))
    sealed_ping[20 + 8 + 7] = 1
    assert run_classic_bpf(program, bytes(sealed_ping)) == offload.UNCHECKSUMMED
    fprog = offload.SockFprog(program)
    assert struct.unpack("HP", fprog.value)[0] == len(program)


def test_super_frame_headers_can_carry_push() -> None:
    headers = offload.super_frame_headers(HEADERS, len(HEADERS), 10, push=True)
    assert Ether(headers + bytes(10))[TCP].flags == "PA"
