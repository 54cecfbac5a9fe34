"""Merging received UDP datagrams into one GSO write (offload mode, issue 15's UDP loss):
`offload.udp_merge_key`, `offload.udp_super_frame` and `offload.UdpRuns`.

The super-frame is checked against the kernel's own segmentation arithmetic (`__udp_gso_segment`
in net/ipv4/udp_offload.c: each datagram's checksum field is the super-frame's with the UDP
length swapped, `csum16_add(csum16_sub(check, len), newlen)`) and, through scapy as an
independent implementation, against the checksum a finished datagram must carry."""

from __future__ import annotations

import struct
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from overlaynet.dataplane import offload

SRC, DST = "10.0.0.2", "10.0.0.3"
PARTIAL = struct.pack("<BBHHHH", offload.VIRTIO_NET_HDR_F_NEEDS_CSUM, 0, 0, 0, 34, 6)


def _fold(total: int) -> int:
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _pseudo(udp_len: int, src: str = SRC, dst: str = DST) -> int:
    words = [int.from_bytes(bytes(map(int, a.split("."))), "big") for a in (src, dst)]
    return _fold(sum(w >> 16 for w in words) + sum(w & 0xFFFF for w in words) + 17 + udp_len)


def datagram(payload: bytes, *, sport: int = 40000, ident: int = 1, vnet: bytes = PARTIAL) -> bytes:
    """What a TAP with TUN_F_CSUM hands over for a container's UDP datagram: the partial
    checksum (pseudo-header sum) in the UDP checksum field."""
    frame = bytearray(
        bytes(
            Ether(src="02:42:0a:00:00:02", dst="02:42:0a:00:00:03")
            / IP(src=SRC, dst=DST, id=ident, flags="DF")
            / UDP(sport=sport, dport=5201, chksum=0)
            / payload
        )
    )
    frame[40:42] = _pseudo(8 + len(payload)).to_bytes(2, "big")
    return vnet + bytes(frame)


def _csum16_replace(check: int, old: int, new: int) -> int:
    """csum16_add(csum16_sub(check, old), new), as the kernel adjusts a segment's checksum."""
    value = check + ((~old) & 0xFFFF)
    value = (value & 0xFFFF) + (value >> 16)
    value += new
    return (value & 0xFFFF) + (value >> 16)


def kernel_segments(merged: bytes) -> list[bytes]:
    """What the kernel makes of a GSO_UDP_L4 write: datagrams of gso_size payload octets (the
    last the rest), each with its IPv4 and UDP length and the checksum field adjusted from the
    super-frame's, finished (complemented sum over pseudo-header, header and payload) as the
    NEEDS_CSUM contract says."""
    flags, gso_type, hdr_len, gso_size, start, offset = struct.unpack("<BBHHHH", merged[:10])
    assert (flags, gso_type, hdr_len, start, offset) == (1, 5, 42, 34, 6)
    frame = merged[10:]
    eth, ip, udp, body = frame[:14], frame[14:34], frame[34:42], frame[42:]
    check, old_len = int.from_bytes(udp[6:8], "big"), int.from_bytes(udp[4:6], "big")
    out = []
    for at in range(0, len(body), gso_size):
        piece = body[at : at + gso_size]
        new_len = 8 + len(piece)
        partial = _csum16_replace(check, old_len, new_len)
        seg_ip = bytearray(ip)
        seg_ip[2:4] = (20 + new_len).to_bytes(2, "big")
        seg_udp = bytearray(udp[:4] + new_len.to_bytes(2, "big") + b"\x00\x00")
        total = partial
        data = bytes(seg_udp) + piece + (b"\x00" if len(piece) % 2 else b"")
        total += sum(struct.unpack(f"!{len(data) // 2}H", data))
        seg_udp[6:8] = ((~_fold(total)) & 0xFFFF or 0xFFFF).to_bytes(2, "big")
        out.append(eth + bytes(seg_ip) + bytes(seg_udp) + piece)
    return out


@given(
    st.integers(min_value=1, max_value=1400).flatmap(
        lambda size: st.tuples(
            st.lists(st.binary(min_size=size, max_size=size), min_size=1, max_size=20),
            st.binary(min_size=1, max_size=size),
        )
    )
)
def test_the_kernel_cuts_a_merged_write_back_into_the_datagrams_with_valid_checksums(
    payloads_last: tuple[list[bytes], bytes],
) -> None:
    full, last = payloads_last
    payloads = [*full, last]
    first = datagram(payloads[0])
    merged = offload.udp_super_frame(first, payloads)
    ip = IP(merged[24:44])  # the IPv4 header alone: its checksum must verify
    assert ip.len == 20 + 8 + sum(map(len, payloads))
    rebuilt = ip.copy()
    del rebuilt.chksum
    assert IP(bytes(rebuilt)).chksum == ip.chksum
    segments = kernel_segments(merged)
    assert [s[42:] for s in segments] == payloads
    for segment in segments:
        packet = Ether(segment)
        expected = packet[UDP].chksum
        del packet[UDP].chksum
        assert Ether(bytes(packet))[UDP].chksum == expected  # scapy computes the same
        assert packet[IP].len == len(segment) - 14


def test_merge_key_takes_partial_checksum_udp_and_nothing_else() -> None:
    assert offload.udp_merge_key(datagram(b"x" * 100)) is not None
    # A finished checksum (plain header), TCP, IP options, a fragment, padded lengths.
    assert offload.udp_merge_key(datagram(b"x" * 100, vnet=bytes(10))) is None
    tcp = PARTIAL[:8] + b"\x10\x00" + bytes(Ether() / IP(src=SRC, dst=DST) / TCP() / (b"x" * 9))
    assert offload.udp_merge_key(tcp) is None
    options = PARTIAL + bytes(Ether() / IP(src=SRC, dst=DST, options=b"\x01" * 4) / UDP() / b"x")
    assert offload.udp_merge_key(options) is None
    fragment = PARTIAL + bytes(Ether() / IP(src=SRC, dst=DST, flags="MF") / UDP() / (b"x" * 9))
    assert offload.udp_merge_key(fragment) is None
    assert offload.udp_merge_key(datagram(b"x" * 5) + bytes(20)) is None
    # Two datagrams of one flow share the key whatever their IP id and length.
    a, b = datagram(b"x" * 100, ident=1), datagram(b"y" * 50, ident=2)
    assert offload.udp_merge_key(a) == offload.udp_merge_key(b)
    assert offload.udp_merge_key(a) != offload.udp_merge_key(datagram(b"x" * 100, sport=1))


def _run(frames: list[tuple[str, bytes]]) -> tuple[list[tuple[str, int, bytes]], Counter[str]]:
    counters: Counter[str] = Counter()
    runs = offload.UdpRuns(counters)
    out: list[tuple[str, int, bytes]] = []
    for sender, frame in frames:
        out += runs.add(sender, 7, frame)
    out += runs.flush()
    return out, counters


def _datagrams(written: list[tuple[str, int, bytes]]) -> list[tuple[str, bytes]]:
    """Each write as the datagrams (sender, Ethernet frame) it stands for."""
    out = []
    for sender, vni, data in written:
        assert vni == 7
        if data[1] == offload.VIRTIO_NET_HDR_GSO_UDP_L4:
            out += [(sender, s[42:]) for s in kernel_segments(data)]
        else:
            out.append((sender, data[52:] if offload.udp_merge_key(data) else data))
    return out


def test_a_run_of_one_flow_becomes_one_write_and_a_lone_datagram_passes_unchanged() -> None:
    frames = [("h1", datagram(bytes([i]) * 1400, ident=i)) for i in range(44)]
    written, counters = _run(frames)
    assert len(written) == 1
    assert _datagrams(written) == [("h1", bytes([i]) * 1400) for i in range(44)]
    assert counters == Counter(offload_udp_merged=44, offload_udp_merged_writes=1)
    lone = datagram(b"dns" * 10)
    assert _run([("h1", lone)])[0] == [("h1", 7, lone)]


def test_runs_end_at_a_shorter_datagram_another_flow_sender_or_a_tcp_frame() -> None:
    tcp = PARTIAL[:8] + b"\x10\x00" + bytes(Ether() / IP(src=SRC, dst=DST) / TCP() / (b"t" * 9))
    frames = [
        ("h1", datagram(b"a" * 100)),
        ("h1", datagram(b"b" * 100)),
        ("h1", datagram(b"c" * 60)),  # shorter: ends the run
        ("h1", datagram(b"d" * 100)),
        ("h1", datagram(b"e" * 100, sport=1)),  # another flow
        ("h2", datagram(b"f" * 100, sport=1)),  # another sender
        ("h2", tcp),
        ("h2", datagram(b"g" * 100, sport=1)),
    ]
    written, _counters = _run(frames)
    assert len(written) == 6
    payloads = [d for _s, d in _datagrams(written)]
    assert payloads[:6] == [b"a" * 100, b"b" * 100, b"c" * 60, b"d" * 100, b"e" * 100, b"f" * 100]
    assert payloads[6] == tcp and payloads[7] == b"g" * 100
    assert [s for s, _d in _datagrams(written)] == [s for s, _f in frames]


def test_a_merged_write_stays_within_the_kernels_segment_and_length_limits() -> None:
    many = [("h1", datagram(b"s" * 10)) for _ in range(offload.UDP_MERGE_MAX_SEGMENTS + 5)]
    written, _ = _run(many)
    assert [len(kernel_segments(w[2])) for w in written[:1]] == [offload.UDP_MERGE_MAX_SEGMENTS]
    assert len(_datagrams(written)) == len(many)
    big = [("h1", datagram(b"b" * 8000)) for _ in range(20)]
    written, _ = _run(big)
    assert all(len(w[2]) - 10 - 14 <= offload.IPV4_MAX_TOTAL for w in written)
    assert len(_datagrams(written)) == 20


@given(
    st.lists(
        st.tuples(st.sampled_from(["h1", "h2"]), st.sampled_from([1, 2]), st.integers(1, 300)),
        max_size=60,
    )
)
def test_every_datagram_comes_out_once_in_order(spec: list[tuple[str, int, int]]) -> None:
    frames = [
        (sender, datagram(i.to_bytes(2, "big") * (size // 2 + 1), sport=sport))
        for i, (sender, sport, size) in enumerate(spec)
    ]
    written, _ = _run(frames)
    assert _datagrams(written) == [(s, f[52:]) for s, f in frames]


def test_without_uso_writes_every_datagram_passes_alone() -> None:
    counters: Counter[str] = Counter()
    runs = offload.UdpRuns(counters, merge=False)
    frames = [datagram(bytes([i]) * 100) for i in range(5)]
    out = [w for f in frames for w in runs.add("h1", 7, f)] + runs.flush()
    assert out == [("h1", 7, f) for f in frames]
    assert not counters


def test_uso_writes_are_taken_from_linux_6_2_on() -> None:
    assert offload.kernel_takes_uso_writes("6.2.0")
    assert offload.kernel_takes_uso_writes("6.18.44-fc-v669")
    assert offload.kernel_takes_uso_writes("10.0.1")
    assert not offload.kernel_takes_uso_writes("6.1.0-18-amd64")
    assert not offload.kernel_takes_uso_writes("5.19.17")
    assert not offload.kernel_takes_uso_writes("unknown")
