"""The C egress drain with TAP offloads (`fastegress`, `accel/egress.c`): TCP super-frames cut
into segments and partial checksums finished in C leave as exactly the frames
`segment.wire_frames` makes of them, octet for octet, each with valid checksums and within the
MTU; what C leaves to Python (a tiny MSS, headers it cannot honour) is finished or counted by
the Python path; the Python drain (accel off) puts the same frames on the wire. A socketpair
stands in for the TAP (as in test_accel_equivalence). Loopback only, no root."""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.segment import SegmentError, wire_frames
from overlaynet.dataplane.switching import Network
from overlaynet.dataplane.tracing import TraceMatch
from overlaynet.dataplane.vtep import SO_RCVBUFFORCE, Vtep
from overlaynet.wire.ethernet import mac_to_bytes
from tests.unit.dataplane.ports import free_port
from tests.unit.dataplane.test_accel_equivalence import tap_standin

pytestmark = pytest.mark.skipif(
    accel.load("egress") is None, reason=f"C egress unavailable: {accel.why_not('egress')}"
)

VNI = 4098
MTU = 1450
HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"
MAC_A, MAC_B = "02:42:0a:00:00:02", "02:42:0a:00:00:03"
SRC_IP, DST_IP = bytes((10, 0, 0, 2)), bytes((10, 0, 0, 3))
NEEDS_CSUM = 1
GSO_NONE, GSO_TCPV4, GSO_UDP_L4 = 0, 1, 5
VNET = struct.Struct("<BBHHHH")


def _sum(data: bytes) -> int:
    """RFC 1071 ones'-complement sum, written out word by word (independent of `segment`)."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for (word,) in struct.iter_unpack("!H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _pseudo(proto: int, length: int) -> int:
    return _sum(SRC_IP + DST_IP + bytes((0, proto)) + length.to_bytes(2, "big"))


def tcp_frame(
    flow: int,
    payload: bytes,
    *,
    flags: int = 0x18,
    seq: int = 1000,
    ip_id: int = 7,
    ip_options: bytes = b"",
    tcp_options: bytes = b"",
    partial: bool = True,
) -> bytes:
    """An Ethernet/IPv4/TCP frame to MAC_B; with `partial` the TCP checksum field holds the
    pseudo-header sum, as a TAP with offloads hands it over (NEEDS_CSUM), else the checksum."""
    ihl, doff = 20 + len(ip_options), 20 + len(tcp_options)
    ip = bytearray(
        bytes((0x40 | ihl // 4, 0)) + (ihl + doff + len(payload)).to_bytes(2, "big")
        + (ip_id & 0xFFFF).to_bytes(2, "big") + b"\x40\x00\x40\x06\x00\x00" + SRC_IP + DST_IP
        + ip_options
    )  # fmt: skip
    ip[10:12] = (~_sum(bytes(ip)) & 0xFFFF).to_bytes(2, "big")
    tcp = bytearray(
        (40000 + flow).to_bytes(2, "big") + (5201).to_bytes(2, "big")
        + (seq & 0xFFFFFFFF).to_bytes(4, "big") + (77).to_bytes(4, "big")
        + bytes((doff // 4 << 4, flags)) + (502).to_bytes(2, "big") + bytes(4) + tcp_options
    )  # fmt: skip
    pseudo = _pseudo(6, doff + len(payload))
    if partial:
        tcp[16:18] = pseudo.to_bytes(2, "big")
    else:  # finished, as a TAP without offloads hands it over
        whole = pseudo.to_bytes(2, "big") + bytes(tcp) + payload
        tcp[16:18] = (~_sum(whole) & 0xFFFF).to_bytes(2, "big")
    eth = mac_to_bytes(MAC_B) + mac_to_bytes(MAC_A) + b"\x08\x00"
    return eth + bytes(ip) + bytes(tcp) + payload


def udp_frame(payload: bytes) -> bytes:
    """An Ethernet/IPv4/UDP frame to MAC_B, its checksum field the pseudo-header sum."""
    length = 8 + len(payload)
    ip = bytearray(
        b"\x45\x00" + (20 + length).to_bytes(2, "big") + b"\x00\x09\x40\x00\x40\x11\x00\x00"
        + SRC_IP + DST_IP
    )  # fmt: skip
    ip[10:12] = (~_sum(bytes(ip)) & 0xFFFF).to_bytes(2, "big")
    udp = (5353).to_bytes(2, "big") + (53).to_bytes(2, "big") + length.to_bytes(2, "big")
    udp += _pseudo(17, length).to_bytes(2, "big")
    return mac_to_bytes(MAC_B) + mac_to_bytes(MAC_A) + b"\x08\x00" + bytes(ip) + udp + payload


def super_read(frame: bytes, mss: int, gso: int = GSO_TCPV4) -> bytes:
    """A TAP read of a TSO super-frame: virtio-net header (NEEDS_CSUM, TCPv4, MSS) + frame."""
    ihl = (frame[14] & 0x0F) * 4
    doff = (frame[14 + ihl + 12] >> 4) * 4
    return VNET.pack(NEEDS_CSUM, gso, 14 + ihl + doff, mss, 14 + ihl, 16) + frame


def csum_read(frame: bytes, start: int, offset: int) -> bytes:
    """A TAP read of a lone frame with a partial checksum at start + offset."""
    return VNET.pack(NEEDS_CSUM, GSO_NONE, 0, 0, start, offset) + frame


def expected(reads: list[bytes]) -> list[bytes]:
    """What `segment.wire_frames` makes of `reads`: the reference."""
    out: list[bytes] = []
    for data in reads:
        out += wire_frames(data[:10], data[10:])
    return out


def check_valid(frame: bytes) -> None:
    """Independently of both implementations: within the MTU, IPv4 header and TCP/UDP
    checksums valid."""
    assert len(frame) <= 14 + MTU
    ihl = (frame[14] & 0x0F) * 4
    ip = frame[14 : 14 + ihl]
    assert _sum(ip) == 0xFFFF, "IPv4 header checksum"
    total = int.from_bytes(ip[2:4], "big")
    assert total == len(frame) - 14
    body = frame[14 + ihl :]
    assert _sum(_pseudo(ip[9], len(body)).to_bytes(2, "big") + body) == 0xFFFF, "L4 checksum"


def by_flow(frames: list[bytes]) -> dict[bytes, list[bytes]]:
    """Frames per flow (addresses and ports) in order: C batches flows apart, never a flow's
    frames out of order."""
    flows: dict[bytes, list[bytes]] = {}
    for one in frames:
        flows.setdefault(one[26:38], []).append(one)
    return flows


def run(
    reads: list[bytes],
    accel_mode: str,
    *,
    budget: int = 0,
    setup: Callable[[Vtep, Network], None] | None = None,
) -> dict[str, Any]:
    """Queue `reads` in A's TAP (virtio-net headers, offloads on; `setup` may change that),
    drain it until empty as the loop would, collect the inner frames that reached B, the
    counters and whether a queue is still marked as holding frames made under offloads."""
    with ExitStack() as stack:
        port = free_port()
        vtep = stack.enter_context(
            Vtep(HOST_A, port, source_sockets=2, socket_buffer=1 << 22, accel=accel_mode)
        )
        loop = vtep._loop
        if budget:
            loop.drain_budget = budget
            if loop.fast_egress is not None:
                loop.fast_egress.budget = budget
        bridge, tap = tap_standin(stack, 1 << 23)
        receiver = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        receiver.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 1 << 25)
        receiver.bind((HOST_B, port))
        receiver.settimeout(0.2)
        vtep.add_network(VNI, tap.fileno(), MTU, vnet_hdr=True)
        vtep.set_peers(VNI, [HOST_B])
        vtep.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        net = vtep._networks[VNI]
        # The TAP's offloads as the loop turns them on (a socketpair has no TUNSETOFFLOAD).
        net.tap_tso = True
        net.tso_allowed = accel_mode == "on"
        if setup is not None:
            setup(vtep, net)
        for one in reads:
            bridge.send(one)
        for _ in range(4 * len(reads) + 8):
            loop._drain_tap(net, net.tap_fd)
            try:
                tap.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                if net.tap_fd not in loop._carried:
                    break
        assert net.tap_fd not in loop._carried
        got: list[bytes] = []
        while True:
            try:
                datagram = receiver.recv(65536)
            except TimeoutError:
                break
            assert len(datagram) <= 8 + 14 + MTU
            assert datagram[:8] == net.header
            got.append(datagram[8:])
        entry = vtep.fdb.lookup(VNI, MAC_B)
        assert entry is not None
        return {
            "frames": got,
            "counters": Counter(net.counters),
            "fdb": (entry.tx_frames, entry.tx_bytes),
            "c": loop.fast_egress is not None,
            "backlog": net.tso_backlog,
        }


def assert_matches(reads: list[bytes], result: dict[str, Any]) -> None:
    want = expected(reads)
    assert by_flow(result["frames"]) == by_flow(want)
    for one in result["frames"]:
        check_valid(one)
    assert result["fdb"] == (len(want), sum(map(len, want)))


def test_a_super_frame_is_cut_in_c_into_the_segments_python_makes() -> None:
    payload = bytes(range(256)) * 200  # 51,200 octets: 37 segments of 1398, the last shorter
    frame = tcp_frame(
        1, payload, flags=0x80 | 0x18 | 0x01, tcp_options=b"\x01\x01\x08\x0a" + bytes(8)
    )
    reads = [super_read(frame, MTU - 20 - 32)]
    result = run(reads, "on")
    assert result["c"]
    assert len(result["frames"]) == 37
    assert_matches(reads, result)
    # CWR only on the first, FIN and PSH only on the last (tcp_gso_segment's rule).
    flags = [one[14 + 20 + 13] for one in result["frames"]]
    assert flags[0] == 0x80 | 0x10 and flags[-1] == 0x19 and set(flags[1:-1]) == {0x10}
    assert result["counters"]["tx_tso_segmented"] == 1
    assert result["counters"]["tx_tso_segments"] == 37
    assert result["counters"]["tx_offload_finished"] == 0  # nothing left to Python


def test_partial_checksums_of_lone_frames_are_finished_in_c() -> None:
    ack = tcp_frame(2, b"", flags=0x10)
    reads = [csum_read(ack, 34, 16), csum_read(udp_frame(b"dns?" * 11), 34, 6)]
    result = run(reads, "on")
    assert_matches(reads, result)
    assert result["counters"]["tx_csum_finished"] == 2


def test_a_udp_checksum_that_comes_out_zero_is_sent_as_ffff() -> None:
    # Choose the payload so the finished UDP checksum is 0: it must leave as 0xFFFF (RFC 768).
    base = udp_frame(b"\x00\x00")
    rest = ~_sum(base[34:]) & 0xFFFF
    frame = udp_frame(rest.to_bytes(2, "big"))
    assert _sum(frame[34:]) == 0xFFFF
    reads = [csum_read(frame, 34, 6)]
    result = run(reads, "on")
    assert [one[40:42] for one in result["frames"]] == [b"\xff\xff"]
    assert_matches(reads, result)


def test_what_c_cannot_cut_is_finished_or_counted_by_the_python_path() -> None:
    payload = bytes(9000)
    reads = [
        super_read(tcp_frame(3, payload), 16),  # 563 segments: more than the frame table
        super_read(tcp_frame(4, payload[:3000]), 1000, gso=GSO_UDP_L4),  # USO: never asked
        super_read(tcp_frame(5, payload[:3000])[:12] + b"\x86\xdd" + bytes(60), 1000),
        csum_read(tcp_frame(6, b""), 34, 40),  # the field past the frame's end
        super_read(tcp_frame(7, payload[:4000]), 1398),
    ]
    result = run(reads, "on")
    counters = result["counters"]
    assert counters["offload_gso_unsupported"] == 1
    assert counters["offload_gso_not_ipv4"] == 1
    assert counters["offload_bad_csum_offsets"] == 1
    assert counters["tx_offload_finished"] == 1  # flow 3, by `segment`
    assert counters["tx_tso_segmented"] == 1  # flow 7, in C
    assert_matches([reads[0], reads[4]], result)


def test_the_python_drain_puts_the_same_frames_on_the_wire() -> None:
    reads = [
        super_read(tcp_frame(1, bytes(range(200)) * 100, seq=5), 1398),
        csum_read(tcp_frame(2, b"", flags=0x10), 34, 16),
        super_read(tcp_frame(1, bytes(30000), seq=20005, ip_id=0xFFF0), 1398),
    ]
    c, python = run(reads, "on"), run(reads, "off")
    assert c["c"] and not python["c"]
    assert by_flow(c["frames"]) == by_flow(python["frames"])
    assert c["fdb"] == python["fdb"]
    assert_matches(reads, python)


@st.composite
def offloaded_reads(draw: st.DrawFn) -> list[bytes]:
    """Super-frames and partial-checksum frames of a few flows: random MSS, lengths (odd
    ones too), flags, IP and TCP options, sequence numbers and IP ids near wrap-around."""
    reads: list[bytes] = []
    for _ in range(draw(st.integers(1, 6))):
        flow = draw(st.integers(0, 2))
        ip_options = b"\x01" * 4 * draw(st.integers(0, 2))
        tcp_options = b"\x01" * 4 * draw(st.integers(0, 10))
        header = 20 + len(ip_options) + 20 + len(tcp_options)
        seq = draw(st.integers(0, 0xFFFFFFFF))
        ip_id = draw(st.integers(0, 0xFFFF))
        flags = draw(st.sampled_from([0x10, 0x18, 0x19, 0x90, 0x98, 0x11, 0xD8]))
        if draw(st.booleans()):
            mss = draw(st.integers(max(1, 200 - header), MTU - header))
            size = draw(st.integers(0, min(20000, 65535 - header)))
            payload = (
                draw(st.binary(min_size=size, max_size=size))
                if size < 64
                else bytes((seq + i * 7) & 0xFF for i in range(size))
            )
            frame = tcp_frame(
                flow, payload, flags=flags, seq=seq, ip_id=ip_id, ip_options=ip_options,
                tcp_options=tcp_options,
            )  # fmt: skip
            reads.append(super_read(frame, mss))
        else:
            size = draw(st.integers(0, MTU - header))
            frame = tcp_frame(
                flow, bytes((seq + i) & 0xFF for i in range(size)), flags=flags, seq=seq,
                ip_id=ip_id, ip_options=ip_options, tcp_options=tcp_options,
            )  # fmt: skip
            reads.append(csum_read(frame, 14 + len(ip_options) + 20, 16))
    return reads


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(offloaded_reads(), st.sampled_from([0, 3, 40]))
def test_any_offloaded_reads_leave_as_segment_makes_them(reads: list[bytes], budget: int) -> None:
    result = run(reads, "on", budget=budget)
    assert_matches(reads, result)


def _traced_backlog(vtep: Vtep, net: Network) -> None:
    """A trace armed just after the TAP's offloads went off: its queue still holds reads
    made under them (`tso_backlog`), and the C drain may not take it (it does not trace)."""
    vtep.arm_trace(TraceMatch("10.0.0.2", "10.0.0.3", "tcp", 1), 5.0)
    net.tap_tso = False
    net.tso_backlog = frozenset(net.tap_fds)


def test_super_frames_queued_before_a_trace_drain_through_python_finished() -> None:
    reads = [
        super_read(tcp_frame(1, bytes(range(250)) * 40), 1398),
        csum_read(tcp_frame(2, b"", flags=0x10), 34, 16),
        VNET.pack(0, 0, 0, 0, 0, 0) + tcp_frame(3, b"plain", partial=False),
    ]
    result = run(reads, "on", setup=_traced_backlog)
    assert_matches(reads, result)
    counters = result["counters"]
    assert counters["tx_tso_segmented"] == 0  # not the C drain: it cannot trace
    assert counters["tx_offload_finished"] == 2  # the super-frame and the partial checksum
    assert result["backlog"] == frozenset()  # ran empty: frames read from now on are plain


def test_a_trace_is_a_reason_to_turn_the_offloads_off() -> None:
    seen: list[tuple[bool, bool]] = []

    def check(vtep: Vtep, net: Network) -> None:
        loop = vtep._loop
        seen.append((loop._tso_wanted(net), loop._c_egress(net)))
        vtep.arm_trace(TraceMatch("10.0.0.2", "10.0.0.3", "tcp", 1), 5.0)
        seen.append((loop._tso_wanted(net), loop._c_egress(net)))
        vtep.trace_records()
        seen.append((loop._tso_wanted(net), loop._c_egress(net)))

    run([], "on", setup=check)
    assert seen == [(True, True), (False, False), (True, True)]


def test_a_frame_over_the_mtu_under_a_stray_virtio_header_is_dropped_by_both_drains() -> None:
    """A read whose virtio-net header has a stray field but no flags is the frame as it came:
    over the MTU it is dropped and counted (RFC 7348 4.3), by the C drain and by the Python
    one (which sent it as a 1473-octet datagram on a 1450 overlay: found by the hostile-input
    tests). `run` asserts every datagram that left is within the MTU."""
    read = struct.pack("<BBHHHH", 0, 0, 0, 0, 0, 1) + udp_frame(bytes(1423))
    for mode in ("on", "off"):
        result = run([read], mode)
        assert result["frames"] == []
        assert result["counters"].get("tx_drop_too_big") == 1, (mode, result["counters"])


def test_a_super_frame_cut_over_the_mtu_is_dropped_whole_by_both_drains() -> None:
    """A TSO read whose MSS makes segments 10 octets over the MTU, its last segment short
    enough to fit: dropped whole and counted once by both drains (RFC 7348 4.3). C sent the
    short last segment alone and counted each long one (found by the hostile-input tests:
    the two drains put different frames on the wire)."""
    frame = tcp_frame(1, bytes(1410 + 1000))
    read = super_read(frame, MTU - 20 - 20 + 10)
    for mode in ("on", "off"):
        result = run([read], mode)
        assert result["frames"] == [], mode
        assert result["counters"].get("tx_drop_too_big") == 1, (mode, result["counters"])


def test_a_runt_asking_for_a_checksum_is_refused_not_a_crash() -> None:
    """A frame too short for its IPv4 protocol octet, NEEDS_CSUM set: the Python path counts it
    (the C drain hands it over: `finish_csum` refuses n < 24) instead of an IndexError that ended
    the drain (found by the hostile-input tests)."""
    vnet = bytes([1, 0, 0, 0, 0, 0, 34, 0, 6, 0])  # NEEDS_CSUM, csum_start 34, offset 6
    with pytest.raises(SegmentError, match="offload_bad_csum_offsets"):
        wire_frames(vnet, b"\x00" * 12 + b"\x08\x00E")
