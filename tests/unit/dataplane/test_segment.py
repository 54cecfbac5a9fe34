"""Finishing offloaded frames for the RFC wire (dataplane/segment.py): segments of a TCP
super-frame and finished partial checksums are exactly what scapy computes."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from overlaynet.dataplane import offload, segment


def super_frame(payload: bytes, flags: str = "PA") -> bytes:
    return bytes(
        Ether(src="02:42:0a:00:00:02", dst="02:42:0a:00:00:03")
        / IP(src="10.0.0.2", dst="10.0.0.3", id=65530)
        / TCP(sport=40000, dport=5201, seq=2**32 - 1000, flags=flags, window=512)
        / payload
    )


def rechecksummed(frame: bytes) -> bytes:
    """The frame with scapy's own IPv4 and TCP/UDP checksums."""
    pkt = Ether(frame)
    del pkt[IP].chksum
    layer = TCP if TCP in pkt else UDP
    del pkt[layer].chksum
    return bytes(pkt)


def partial(frame: bytes) -> bytes:
    """What a TAP with CSUM offload hands over: the TCP/UDP checksum field holding the
    pseudo-header sum (not complemented)."""
    ip = frame[14:34]
    l4_len = len(frame) - 34
    proto = frame[23]
    pseudo = segment.checksum(ip[12:20] + bytes((0, proto)) + l4_len.to_bytes(2, "big"))
    at = 34 + (16 if proto == 6 else 6)
    return frame[:at] + pseudo.to_bytes(2, "big") + frame[at + 2 :]


@settings(max_examples=60, deadline=None)
@given(
    payload=st.binary(min_size=1, max_size=9000),
    mss=st.integers(min_value=100, max_value=1448),
)
def test_segments_carry_the_payload_with_scapy_checksums(payload: bytes, mss: int) -> None:
    frame = partial(super_frame(payload))
    vnet = offload.vnet_header(mss, 54, gso=True)
    out = segment.wire_frames(vnet, frame)
    assert len(out) == -(-len(payload) // mss)
    assert b"".join(bytes(Ether(f)[TCP].payload) for f in out) == payload
    seq = 2**32 - 1000
    for i, f in enumerate(out):
        assert f == rechecksummed(f), i  # both checksums already right
        pkt = Ether(f)
        assert len(f) <= 54 + mss
        assert pkt[IP].id == (65530 + i) & 0xFFFF and pkt[IP].len == len(f) - 14
        assert pkt[TCP].seq == (seq + i * mss) & 0xFFFFFFFF
        last = i == len(out) - 1
        assert ("P" in str(pkt[TCP].flags)) == last


def test_a_partial_udp_checksum_is_finished() -> None:
    frame = bytes(
        Ether(src="02:42:0a:00:00:02", dst="ff:ff:ff:ff:ff:ff")
        / IP(src="10.0.0.2", dst="10.0.0.255")
        / UDP(sport=68, dport=67)
        / b"discover"
    )
    vnet = struct.pack("<BBHHHH", offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6)
    (out,) = segment.wire_frames(vnet, partial(frame))
    assert out == rechecksummed(out) == frame


def test_a_plain_header_leaves_the_frame_alone() -> None:
    frame = super_frame(b"x" * 10)
    assert segment.wire_frames(offload.PLAIN_VNET_HDR, frame) == [frame]


def test_unsupported_gso_and_bad_offsets_are_named_errors() -> None:
    frame = super_frame(b"x" * 10)
    udp_gso = struct.pack("<BBHHHH", 1, 5, 42, 1000, 34, 6)
    with pytest.raises(segment.SegmentError) as caught:
        segment.wire_frames(udp_gso, frame)
    assert caught.value.reason == "offload_gso_unsupported"
    bad = struct.pack("<BBHHHH", 1, 0, 0, 0, 9000, 16)
    with pytest.raises(segment.SegmentError) as caught:
        segment.wire_frames(bad, frame)
    assert caught.value.reason == "offload_bad_csum_offsets"
    with pytest.raises(segment.SegmentError):
        segment.wire_frames(offload.vnet_header(1000, 54, gso=True), frame[:40])


@given(st.binary(max_size=3000), st.integers(min_value=0, max_value=0xFFFF))
def test_checksum_is_the_rfc1071_sum(data: bytes, initial: int) -> None:
    padded = data + b"\x00" * (len(data) & 1)
    total = initial + sum(
        int.from_bytes(padded[i : i + 2], "big") for i in range(0, len(padded), 2)
    )
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    assert segment.checksum(data, initial) == total
