"""The C ingress drain (`fastingress`, `accel/ingress.c`) against the Python one, without root:
the same GRO buffers (UDP-GSO sends over loopback to a UDP_GRO socket) drained by a hot loop
on each path must give the same TAP writes, octet for octet and in order, per TAP queue
(socketpairs stand in for a TAP with a virtio-net header), and the same counters, FDB entry
counters and learned entries. Streams of TCP segments with in-order runs, gaps, PSH, SYN/FIN,
short last segments, IP options, fragments, unknown VNIs, non-TCP frames, strangers' datagrams
and oversized frames come from hypothesis."""

from __future__ import annotations

import socket
import struct
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel, fastingress
from overlaynet.dataplane.fdb import FdbTable
from overlaynet.dataplane.hotpath import HotLoop

# MAC_A, MAC_B, MEMBER, STRANGER: re-exported (test_accel_hostile draws with them).
from .drains import MAC_A as MAC_A
from .drains import MAC_B as MAC_B
from .drains import MEMBER as MEMBER
from .drains import (
    OTHER_MEMBER,
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
from .drains import STRANGER as STRANGER

VNI, PLAIN_VNI, UNKNOWN_VNI = 4200, 4201, 4202
MAC_C = bytes(6)

pytestmark = pytest.mark.skipif(
    accel.load("ingress") is None, reason=f"C helper unavailable: {accel.why_not('ingress')}"
)


def vxlan(vni: int, flags: int = 0x08, reserved: int = 0) -> bytes:
    return bytes((flags, 0, 0, 0)) + vni.to_bytes(3, "big") + bytes((reserved,))


def tcp_datagram(
    *,
    vni: int = VNI,
    src: bytes = MAC_A,
    flow: int = 0,
    seq: int = 1000,
    flags: int = 0x10,
    payload: bytes = b"",
    ip_options: bytes = b"",
    tcp_options: bytes = b"",
    frag: int = 0,
    ident: int = 0,
    vxflags: int = 0x08,
    reserved: int = 0,
) -> bytes:
    """A VXLAN datagram with an Ethernet + IPv4 + TCP frame (checksums arbitrary: the merge
    never checks them, it rebuilds them)."""
    tcp = struct.pack(
        "!HHIIBBHHH", 40000 + flow, 5201, seq & 0xFFFFFFFF, 77, (20 + len(tcp_options)) // 4 << 4,
        flags, 512, (ident * 7) & 0xFFFF, 0,
    ) + tcp_options  # fmt: skip
    ihl = 5 + len(ip_options) // 4
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(tcp) + len(payload), ident & 0xFFFF,
        frag, 64, 6, (ident * 13) & 0xFFFF, bytes((10, 0, 0, 2 + flow)), bytes((10, 0, 0, 9)),
    ) + ip_options  # fmt: skip
    eth = MAC_B + src + b"\x08\x00"
    return vxlan(vni, vxflags, reserved) + eth + ip + tcp + payload


def other_datagram(kind: int, vni: int = VNI) -> bytes:
    """Not mergeable: ARP broadcast, ICMP, UDP, a runt, an empty datagram."""
    eth = MAC_B + MAC_A
    if kind == 0:
        return vxlan(vni) + b"\xff" * 6 + MAC_A + b"\x08\x06" + bytes(28)
    if kind == 1:
        return vxlan(vni) + eth + b"\x08\x00\x45\x00\x00\x1c" + bytes(3) + b"\x01" + bytes(18)
    if kind == 2:
        return vxlan(vni) + eth + b"\x08\x00\x45\x00\x00\x20" + bytes(3) + b"\x11" + bytes(22)
    if kind == 3:
        return vxlan(vni)[:5]
    return b""


@st.composite
def streams(draw: st.DrawFn) -> list[tuple[str, list[bytes]]]:
    """Receive buffers: (sender, datagrams of one size, the last maybe shorter)."""
    plen = draw(st.sampled_from([1, 7, 100, 1398, 1400, 1440]))
    seqs = {0: draw(st.sampled_from([1000, 0xFFFFFFFF - 3 * plen])), 1: 5000}
    datagrams: list[tuple[str, bytes]] = []
    # How often a datagram is an in-order segment of full size: long runs (past the 64 KiB
    # cap) at one end, a datagram of every kind in a few steps at the other.
    clean = draw(st.sampled_from([2, 12, 60]))
    for _ in range(draw(st.integers(1, 120))):
        sender = draw(st.sampled_from([MEMBER] * 8 + [OTHER_MEMBER, STRANGER]))
        what = draw(st.sampled_from(["seg"] * clean + ["short", "odd", "other"]))
        flow = draw(st.sampled_from([0, 0, 0, 1]))
        if what == "other":
            datagrams.append((sender, other_datagram(draw(st.integers(0, 4)))))
            continue
        size = plen if what != "short" else draw(st.integers(1, plen))
        kw: dict[str, object] = {}
        if what == "odd":
            oddity = draw(st.integers(0, 11))
            oddities: list[dict[str, object]] = [
                {"flags": 0x18},
                {"flags": 0x02},
                {"flags": 0x11},
                {"ip_options": bytes(4)},
                {"frag": 0x2000},
                {"vni": UNKNOWN_VNI},
                {"vni": PLAIN_VNI},
                {"vxflags": 0x00},
                {"reserved": 1},
                {"tcp_options": bytes(12)},
                {"src": MAC_C},
                {"seq": seqs[flow] + 1},
            ]
            kw = oddities[oddity]
        kw.setdefault("seq", seqs[flow])
        payload = bytes((len(datagrams) + i) & 0xFF for i in range(size))
        datagrams.append(
            (sender, tcp_datagram(flow=flow, payload=payload, ident=len(datagrams), **kw))  # type: ignore[arg-type]
        )
        if draw(st.booleans()) or what == "seg":
            seqs[flow] = (seqs[flow] + size) & 0xFFFFFFFF
    return gro_buffers(draw, datagrams)


def _path(
    stack: ExitStack,
    rx: socket.socket,
    *,
    accelerated: bool,
    fdb_mode: int = 0,
    strict: bool = False,
    table: Table = FdbTable,
) -> Path:
    """A loop receiving on `rx` (the checksummed socket) with `tapped_path`'s networks, its C
    drain on or off; the FDB a `table` (`drains.tapped_path`)."""
    tx = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    unchecked = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    loop = HotLoop(unchecked, [tx], 4789, Counter(), strict=strict, rx_checked=rx)
    stack.callback(loop.close)
    path = tapped_path(
        stack, loop, vni=VNI, plain_vni=PLAIN_VNI, fdb_mode=fdb_mode, offload=False, table=table
    )
    if not accelerated:
        fastingress.disable(loop)
    return path


def _run(
    path: Path,
    rx: socket.socket,
    buffers: list[tuple[str, list[bytes]]],
    senders: dict[str, socket.socket],
) -> None:
    """Send the buffers and drain them: one drain whose budget is the datagram count, more
    only for datagrams that arrive late (loopback delivers in the send call, as a rule)."""
    send_and_drain(path, rx, buffers, senders, lambda: path.loop._drain_udp(rx, merge=True))


def _state(path: Path) -> dict[str, object]:
    return state(path, fastingress.DRAIN_COUNTER)


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    with gro_sockets() as found:
        yield found


def _both(
    sockets: dict[str, socket.socket],
    buffers: list[tuple[str, list[bytes]]],
    *,
    fdb_mode: int = 0,
    strict: bool = False,
) -> tuple[dict[str, object], dict[str, object], Path]:
    rx = sockets["rx"]

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(stack, rx, accelerated=accelerated, fdb_mode=fdb_mode, strict=strict)
        _run(path, rx, buffers, sockets)
        return path

    def check_c(path: Path) -> None:
        assert fastingress.active(path.loop)
        assert path.loop._counters[fastingress.DRAIN_COUNTER] >= 1

    return both(one, _state, check_c)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(buffers=streams(), fdb_mode=st.integers(0, 2), strict=st.booleans())
def test_the_c_drain_writes_and_counts_what_the_python_drain_does(
    sockets: dict[str, socket.socket],
    buffers: list[tuple[str, list[bytes]]],
    fdb_mode: int,
    strict: bool,
) -> None:
    python, c, _ = _both(sockets, buffers, fdb_mode=fdb_mode, strict=strict)
    assert c == python


def test_an_in_order_train_becomes_one_super_frame_in_c() -> None:
    """Not only equal: the C path merges (one GSO write with the rebuilt headers)."""
    with ExitStack() as stack:
        senders = member_senders(stack)
        rx = senders["rx"]
        path = _path(stack, rx, accelerated=True, fdb_mode=1, strict=False)
        payload = bytes(1398)
        train = [tcp_datagram(seq=1000 + i * 1398, payload=payload, ident=i) for i in range(30)]
        train.append(tcp_datagram(seq=1000 + 30 * 1398, payload=b"z" * 10, flags=0x18, ident=30))
        _run(path, rx, [(MEMBER, train[:20]), (MEMBER, train[20:])], senders)
        assert len(path.writes) == 1
        queue, written = path.writes[0]
        assert queue == "bulk"
        flags, gso_type, hdr_len, gso_size, start, offset = struct.unpack("<BBHHHH", written[:10])
        assert (flags, gso_type, hdr_len, gso_size, start, offset) == (1, 1, 54, 1398, 34, 16)
        assert len(written) == 10 + 54 + 30 * 1398 + 10
        assert int.from_bytes(written[10 + 16 : 10 + 18], "big") == 20 + 20 + 30 * 1398 + 10
        assert written[10 + 34 + 13] == 0x18  # PSH from the last segment
        assert path.net.counters["rx_merged_writes"] == 1
        assert path.loop._counters[fastingress.DRAIN_COUNTER] >= 1
        entry = path.net.fdb[MAC_A]
        assert (entry.rx_frames, entry.rx_bytes) == (31, 31 * 54 + 30 * 1398 + 10)


@pytest.mark.parametrize("start", [1000, 0xFFFFFFFF - 5 * 1398])
def test_a_long_train_is_cut_at_64_kib_and_at_the_sequence_wrap_as_in_python(
    sockets: dict[str, socket.socket], start: int
) -> None:
    train = [
        tcp_datagram(seq=start + i * 1398, payload=bytes([i]) * 1398, ident=i) for i in range(100)
    ]
    buffers = [(MEMBER, train[i : i + 40]) for i in range(0, 100, 40)]
    python, c, path = _both(sockets, buffers, fdb_mode=1)
    assert c == python
    # 64 KiB hold 46 segments of 1398 (a wrap-around ends a run early as well).
    assert len(path.writes) == (3 if start == 1000 else 4)


@pytest.mark.parametrize("strict", [False, True])
def test_reserved_bits_merge_unless_strict_as_in_python(
    sockets: dict[str, socket.socket], strict: bool
) -> None:
    train = [
        tcp_datagram(seq=1000 + i * 100, payload=bytes(100), ident=i, reserved=1) for i in range(8)
    ]
    python, c, path = _both(sockets, [(MEMBER, train)], fdb_mode=1, strict=strict)
    assert c == python
    assert len(path.writes) == (0 if strict else 1)


def test_disabled_and_sealed_loops_keep_the_python_drain(sockets: dict[str, socket.socket]) -> None:
    with ExitStack() as stack:
        path = _path(stack, sockets["rx"], accelerated=True, fdb_mode=0, strict=False)
        assert fastingress.describe(path.loop) == "c ingress"
        path.loop.sealed = {b"\x00\x10\x68": object()}  # type: ignore[dict-item]
        assert not fastingress.drain(path.loop, sockets["rx"])
        assert fastingress.describe(path.loop).startswith("python ingress (an encrypted")
        path.loop.sealed = {}
        fastingress.disable(path.loop)
        assert not fastingress.drain(path.loop, sockets["rx"])
        assert fastingress.describe(path.loop) == "python ingress (off)"
        assert fastingress.DRAIN_COUNTER not in path.loop._counters
