"""The C offload drain (`fastoffload`, `accel/offload.c`) against the Python one
(`HotLoop._drain_offload`), without root: the same GRO buffers of chunks (UDP-GSO sends over
loopback to a UDP_GRO socket) drained by a hot loop on each path must give the same TAP writes,
octet for octet and in order, per TAP queue (socketpairs stand in for a TAP with a virtio-net
header), and the same counters (host, network, reassembly), FDB entry counters and learned
entries. Super-frames of TCP, runs of UDP datagrams (merged into GSO writes), ARP and runts are
cut into chunks by `chunks.split` and then reordered, duplicated, lost, truncated, sent for an
unknown or non-offload VNI, by strangers, or replaced by garbage (hypothesis); the reassembly
state left over must expire the same way."""

from __future__ import annotations

import random
import socket
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel, fastoffload, offload
from overlaynet.dataplane.fdb import FdbTable
from overlaynet.dataplane.hotpath import HotLoop
from overlaynet.wire import chunks

from .drains import (
    MAC_A,
    MAC_B,
    MEMBER,
    OTHER_MEMBER,
    STRANGER,
    Path,
    Table,
    both,
    gro_buffers,
    gro_sockets,
    member_senders,
    send_and_drain,
    state,
    tapped_path,
)

VNI, PLAIN_VNI, UNKNOWN_VNI = 4300, 4301, 4302
PARTIAL_UDP = struct.pack("<BBHHHH", 1, 0, 0, 0, 34, 6)

pytestmark = pytest.mark.skipif(
    accel.load("offload") is None, reason=f"C helper unavailable: {accel.why_not('offload')}"
)


def tcp_frame(payload_len: int, seed: int) -> bytes:
    """A virtio-net header + TCP super-frame (what a TAP with TSO hands over)."""
    payload = bytes((seed + i) & 0xFF for i in range(payload_len))
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seed, 77, 5 << 4, 0x10, 512, 0, 0)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 40 + payload_len & 0xFFFF, seed & 0xFFFF, 0x4000, 64, 6, 0,
        bytes((10, 0, 0, 2)), bytes((10, 0, 0, 3)),
    )  # fmt: skip
    vnet = offload.vnet_header(1398, 54, gso=payload_len > 1398)
    return vnet + MAC_B + MAC_A + b"\x08\x00" + ip + tcp + payload


def udp_frame(
    payload_len: int, seed: int, *, sport: int = 40000, vnet: bytes = PARTIAL_UDP
) -> bytes:
    """A virtio-net header + UDP datagram with a partial checksum (mergeable)."""
    payload = bytes((seed * 3 + i) & 0xFF for i in range(payload_len))
    udp = struct.pack("!HHHH", sport, 5201, 8 + payload_len, 0x1234)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 28 + payload_len, seed & 0xFFFF, 0x4000, 64, 17, 0,
        bytes((10, 0, 0, 2)), bytes((10, 0, 0, 3)),
    )  # fmt: skip
    return vnet + MAC_B + MAC_A + b"\x08\x00" + ip + udp + payload


def arp_frame() -> bytes:
    return bytes(10) + b"\xff" * 6 + MAC_A + b"\x08\x06" + bytes(28)


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, list[bytes]]]:
    """Receive buffers: (sender, datagrams of one size, the last maybe shorter)."""
    chunk = draw(st.sampled_from([40, 300, 1456, 4000]))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    datagrams: list[tuple[str, bytes]] = []
    frame_id = draw(st.integers(0, 2**32 - 1))
    udp_len = draw(st.sampled_from([100, 1400]))
    for n in range(draw(st.integers(1, 40))):
        sender = draw(st.sampled_from([MEMBER] * 6 + [OTHER_MEMBER, STRANGER]))
        kind = draw(st.sampled_from(["tcp", "tcp", "udp", "udp", "udp", "other"]))
        vni = draw(st.sampled_from([VNI] * 12 + [PLAIN_VNI, UNKNOWN_VNI]))
        if kind == "tcp":
            frame = tcp_frame(draw(st.sampled_from([0, 100, 1398, 9000, 30000, 65000])), n)
        elif kind == "udp":
            last = draw(st.integers(0, 5)) == 0
            frame = udp_frame(
                draw(st.integers(1, udp_len)) if last else udp_len,
                n,
                sport=draw(st.sampled_from([40000] * 5 + [40001])),
                vnet=PARTIAL_UDP if draw(st.integers(0, 9)) else bytes(10),
            )
        else:
            frame = draw(st.sampled_from([arp_frame(), bytes(12), b""]))
        frame_id = (frame_id + 1) & 0xFFFFFFFF
        # A frame takes at most MAX_CHUNKS chunks: larger ones for a large frame.
        size = max(chunk, -(-len(frame) // chunks.MAX_CHUNKS))
        parts = chunks.split(vni, frame_id, frame, size)
        pieces = [bytes(parts[i]) + bytes(parts[i + 1]) for i in range(0, len(parts), 2)]
        mess = draw(st.sampled_from(["clean"] * 8 + ["reorder", "dup", "lose", "cut", "junk"]))
        if mess == "reorder":
            rng.shuffle(pieces)
        elif mess == "dup":
            pieces.insert(rng.randrange(len(pieces) + 1), pieces[rng.randrange(len(pieces))])
        elif mess == "lose" and len(pieces) > 1:
            del pieces[rng.randrange(len(pieces))]
        elif mess == "cut":
            i = rng.randrange(len(pieces))
            pieces[i] = pieces[i][: rng.randrange(len(pieces[i]) + 1)]
        elif mess == "junk":
            junk = [
                b"xy",
                b"\x01ON\x01" + bytes(20),
                chunks.PREFIX + bytes(3) + b"\x02" + bytes(4) + b"\x05" + bytes(3),
            ]
            pieces.insert(rng.randrange(len(pieces) + 1), rng.choice(junk))
        datagrams += [(sender, p) for p in pieces]
    return gro_buffers(draw, datagrams)


def _path(
    stack: ExitStack,
    rx: socket.socket,
    *,
    accelerated: bool,
    fdb_mode: int = 0,
    table: Table = FdbTable,
) -> Path:
    """A loop in offload mode receiving chunks on `rx`, with `tapped_path`'s networks, its C
    drain on or off; the FDB a `table` (`drains.tapped_path`)."""
    tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    unchecked = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    off_tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    loop = HotLoop(unchecked, [tx], 4789, Counter())
    stack.callback(loop.close)
    loop.set_offload(rx, off_tx, chunks.OFFLOAD_PORT, chunks.DEFAULT_CHUNK)
    path = tapped_path(
        stack, loop, vni=VNI, plain_vni=PLAIN_VNI, fdb_mode=fdb_mode, offload=True, table=table
    )
    if not accelerated:
        fastoffload.disable(loop)
    return path


def _drain(path: Path, accelerated: bool) -> None:
    if accelerated:
        assert fastoffload.drain(path.loop)
    else:
        assert not fastoffload.drain(path.loop)
        path.loop._drain_offload()


def _run(
    path: Path,
    rx: socket.socket,
    buffers: list[tuple[str, list[bytes]]],
    senders: dict[str, socket.socket],
    accelerated: bool,
    budget: int,
) -> None:
    """Send the buffers and drain them (budget 0: the datagram count), then sweep twice."""
    send_and_drain(path, rx, buffers, senders, lambda: _drain(path, accelerated), budget)
    path.writes.append(("expired", bytes((path.loop.reassembler.expire(),))))
    path.writes.append(("expired", bytes((path.loop.reassembler.expire(),))))


def _state(path: Path) -> dict[str, object]:
    return {
        **state(path, fastoffload.DRAIN_COUNTER),
        "reassembly": +path.loop.reassembler.counters,
        "woke": path.loop._woke,
    }


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    with gro_sockets(sndbuf=1 << 22) as found:
        yield found


def _both(
    sockets: dict[str, socket.socket],
    buffers: list[tuple[str, list[bytes]]],
    *,
    fdb_mode: int = 0,
    budget: int = 0,
) -> tuple[dict[str, object], dict[str, object]]:
    rx = sockets["rx"]

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(stack, rx, accelerated=accelerated, fdb_mode=fdb_mode)
        _run(path, rx, buffers, sockets, accelerated, budget)
        return path

    def check_c(path: Path) -> None:
        assert fastoffload.active(path.loop)

    python, c, _ = both(one, _state, check_c)
    return python, c


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(buffers=streams(), fdb_mode=st.integers(0, 2), budget=st.sampled_from([0, 0, 1, 7]))
def test_the_c_drain_writes_and_counts_what_the_python_drain_does(
    sockets: dict[str, socket.socket],
    buffers: list[tuple[str, list[bytes]]],
    fdb_mode: int,
    budget: int,
) -> None:
    python, c = _both(sockets, buffers, fdb_mode=fdb_mode, budget=budget)
    assert c == python


def test_a_super_frame_in_chunks_is_one_write_with_its_header() -> None:
    """The plain case, spelled out: a 30 KB frame in 1456-octet chunks over two GRO buffers."""
    frame = tcp_frame(30000, 5)
    parts = chunks.split(VNI, 9, frame, 1456)
    pieces = [bytes(parts[i]) + bytes(parts[i + 1]) for i in range(0, len(parts), 2)]
    with ExitStack() as stack:
        senders = member_senders(stack)
        rx = senders["rx"]
        path = _path(stack, rx, accelerated=True, fdb_mode=1)
        _run(path, rx, [(MEMBER, pieces[:12]), (MEMBER, pieces[12:])], senders, True, 0)
        assert path.writes[:1] == [("bulk", frame)]
        assert path.net.counters["rx_offload_frames"] == 1
        assert path.loop.reassembler.counters["offload_frames"] == 1
        assert path.net.fdb[MAC_A].rx_frames == 1


def test_partial_frames_of_the_python_reassembler_keep_the_python_drain() -> None:
    """The switch: while the Python reassembler holds a partial frame the C drain declines,
    so a frame is never split between the two."""
    with ExitStack() as stack:
        rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        path = _path(stack, rx, accelerated=True, fdb_mode=0)
        head = chunks.encode_header(VNI, 3, 0, 2)
        assert path.loop.reassembler.feed(MEMBER, head + bytes(20)) is None
        assert not fastoffload.drain(path.loop)
        path.loop.reassembler.expire()
        path.loop.reassembler.expire()
        assert fastoffload.drain(path.loop)


def test_a_long_udp_stream_is_merged_in_the_same_writes(sockets: dict[str, socket.socket]) -> None:
    """150 datagrams of 1000 octets, one flow, in GRO buffers of 44: the runs close at the same
    64-datagram limit on both paths (the merged writes are the same)."""
    pieces = [chunks.encode_header(VNI, i, 0, 1) + udp_frame(1000, i) for i in range(150)]
    buffers = [(MEMBER, pieces[i : i + 44]) for i in range(0, 150, 44)]
    python, c = _both(sockets, buffers)
    assert c == python
    if offload.USO_WRITES:
        assert python["reassembly"] == Counter(
            offload_frames=150, offload_udp_merged=150, offload_udp_merged_writes=3
        )


def test_a_frame_claiming_more_than_a_mebibyte_is_not_held(
    sockets: dict[str, socket.socket],
) -> None:
    """Where the C side differs on purpose: chunk headers claiming 255 chunks of 9000 octets
    (2.3 MB, no TAP frame is that large) would hold that much per pending frame; the C side
    counts the chunk as offload_bad_size and keeps nothing."""
    datagram = chunks.encode_header(VNI, 77, 0, 255) + bytes(9000)
    with ExitStack() as stack:
        rx = sockets["rx"]
        path = _path(stack, rx, accelerated=True, fdb_mode=0)
        _run(path, rx, [(MEMBER, [datagram])], sockets, True, 0)
        engine = fastoffload._engines[path.loop]
        assert engine is not None and engine.pending == 0
        assert +path.loop.reassembler.counters == Counter(offload_bad_size=1)


def test_describe_says_which_code_moves_offload_datagrams() -> None:
    with ExitStack() as stack:
        rx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        on = _path(stack, rx, accelerated=True, fdb_mode=0)
        assert fastoffload.describe(on.loop) == "c offload"
        rx2 = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        off = _path(stack, rx2, accelerated=False, fdb_mode=0)
        assert fastoffload.describe(off.loop) == "python offload (off)"
