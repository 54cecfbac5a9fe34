"""The source MACs the C ingress drain counts itself (issue 15: `fastingress.Engine`'s slots,
`accel/ingress.c` `in_learn`/`in_fold`): a run or frames of a MAC whose FDB entry needs no
learning is counted in C and folded into that entry at the drain's end, never handed to
Python; a change of the FDB between two drains (an entry removed, given elsewhere, added, a
learned one moved to another host) is honoured by the next drain, and what a slot counted goes
only to the entry object it was made for. The C path against the Python one over several
drains with FDB changes between them, of many records of several senders and MACs, on the
agent's `FdbTable` and on a plain dict (always "changed"); and past the slot table's size."""

from __future__ import annotations

import socket
from collections import Counter
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel, fastingress
from overlaynet.dataplane.fdb import FdbEntry, FdbTable

from .drains import (
    FDB_CHANGES,
    MAC_A,
    MACS,
    MEMBER,
    OTHER_MEMBER,
    TABLES,
    Buffers,
    Change,
    Path,
    Table,
    apply_change,
    both,
)
from .test_fastingress import _path, _run, _state, sockets, tcp_datagram
from .test_fastingress_frames import frame_datagram

__all__ = ["sockets"]  # the fixture, used by name

pytestmark = pytest.mark.skipif(
    accel.load("ingress") is None, reason=f"C helper unavailable: {accel.why_not('ingress')}"
)

UDP = (0x0800, 17)


def _traffic(mac: bytes, sender: str = MEMBER, seq: int = 1000) -> Buffers:
    """A UDP train (to the latency queue) and an in-order TCP run (one super-frame) of source
    `mac` from `sender`: 12 frames of 214 octets, then 8 segments of 100 payload octets."""
    udp = [frame_datagram(200, UDP, src=mac, fill=i) for i in range(12)]
    run = [
        tcp_datagram(src=mac, seq=seq + 100 * i, payload=bytes([i]) * 100, ident=i)
        for i in range(8)
    ]
    return [(sender, udp), (sender, run)]


def _run_steps(
    sockets: dict[str, socket.socket],
    start: list[Change],
    steps: list[tuple[Buffers, list[Change]]],
    *,
    table: Table,
    learn_limit: int,
) -> tuple[dict[str, object], dict[str, object]]:
    """Both paths: the FDB set up by `start`, then per step the buffers sent and drained and
    the step's changes made; their states."""
    rx = sockets["rx"]

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(stack, rx, accelerated=accelerated, table=table)
        path.net.learn_limit = learn_limit
        for change in start:
            apply_change(path, change)
        path.net.learned = sum(e.learned for e in path.net.fdb.values())
        for buffers, changes in steps:
            _run(path, rx, buffers, sockets)
            for change in changes:
                apply_change(path, change)
        return path

    def check_c(path: Path) -> None:
        assert fastingress.active(path.loop)

    python, c, _ = both(one, _state, check_c)
    return python, c


@TABLES
@FDB_CHANGES
def test_an_fdb_change_between_two_drains_is_honoured_by_the_next_drain(
    sockets: dict[str, socket.socket], table: Table, start: Change, change: Change
) -> None:
    """Counted in C in the first drain (a slot made for the entry), the MAC's entry is changed
    between drains: the second drain counts as Python does (unknown source, on the new entry,
    moved back by learning), and the entry object replaced keeps the first drain's counts."""
    rx = sockets["rx"]
    traffic = _traffic(MAC_A) + _traffic(MAC_A, seq=1800)
    first: dict[bool, tuple[FdbEntry | None, int, int]] = {}

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(stack, rx, accelerated=accelerated, table=table)
        path.net.learn_limit = 4 if start[0] == "learned" else 0  # else: unknown stays so
        path.net.learned = int(start[0] == "learned")
        apply_change(path, start)
        _run(path, rx, traffic, sockets)
        old = path.net.fdb.get(MAC_A)
        apply_change(path, change)
        _run(path, rx, traffic, sockets)
        first[accelerated] = (old, old.rx_frames, old.rx_bytes) if old else (None, 0, 0)
        return path

    python, c, _ = both(one, _state, lambda path: None)
    assert c == python
    # 2 x (12 frames of 214 octets and a super-frame of 8 segments of 154) per drain.
    per_drain = (2 * 20, 2 * (12 * 214 + 8 * 154))
    old, frames, octets = first[True]
    if old is not None:
        assert (frames, octets) == per_drain  # the first drain's, nothing of the second
    fdb = c["fdb"]
    assert isinstance(fdb, dict)
    net = c["net"]
    assert isinstance(net, Counter)
    if change[0] == "remove":
        assert MAC_A.hex() not in fdb
        assert net["rx_frames_unknown_source"] == per_drain[0]
    elif change[0] == "static":
        assert fdb[MAC_A.hex()] == (change[2], False, *per_drain)
    else:  # learned at OTHER_MEMBER, frames from MEMBER: moved back at the first frame
        assert fdb[MAC_A.hex()][:2] == (MEMBER, True)
        assert net["fdb_learn_moved"] == 1
    assert net["rx_merged_writes"] == 4  # two runs of 8 segments per drain


def test_a_known_source_is_counted_in_c_without_a_record_for_python(
    sockets: dict[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a drain that made the slot, a drain of a given entry's MAC hands Python no run
    and no frames (every record Python counts makes a slot: `_install`), yet the entry, the
    merged writes and the latency reader's wake-up are as if it had. (A plain dict is
    "changed" at every drain's start: there the first record of each drain goes to Python.)"""
    rx = sockets["rx"]
    with ExitStack() as stack:
        path = _path(stack, rx, accelerated=True, table=FdbTable)
        apply_change(path, ("static", MAC_A, MEMBER))
        _run(path, rx, _traffic(MAC_A), sockets)
        entry = path.net.fdb[MAC_A]
        assert (entry.rx_frames, entry.rx_bytes) == (20, 12 * 214 + 8 * 154)

        def refuse(*_args: object) -> None:
            raise AssertionError("a record of a counted MAC went to Python")

        monkeypatch.setattr(fastingress.Engine, "_install", refuse)
        path.loop._woke = False
        writes = len(path.writes)
        _run(path, rx, _traffic(MAC_A, seq=1800), sockets)
        assert path.net.fdb[MAC_A] is entry
        assert (entry.rx_frames, entry.rx_bytes) == (40, 2 * (12 * 214 + 8 * 154))
        assert path.net.counters["rx_merged_writes"] == 2
        assert path.loop._woke  # 12 UDP frames went to the latency queue
        assert len(path.writes) == writes + 13  # 12 frames and one super-frame


@st.composite
def steps(draw: st.DrawFn) -> list[tuple[Buffers, list[Change]]]:
    """Drains of frames trains and TCP runs from two members with four source MACs, and FDB
    changes between them."""
    found: list[tuple[Buffers, list[Change]]] = []
    seq = 1000
    for _ in range(draw(st.integers(1, 4))):
        buffers: Buffers = []
        for _ in range(draw(st.integers(1, 8))):
            sender = draw(st.sampled_from([MEMBER, MEMBER, OTHER_MEMBER]))
            count = draw(st.integers(1, 30))
            if draw(st.booleans()):
                size = draw(st.sampled_from([60, 200]))
                group = [
                    frame_datagram(size, UDP, src=draw(st.sampled_from(MACS)), fill=i)
                    for i in range(count)
                ]
            else:
                mac = draw(st.sampled_from(MACS))
                group = [
                    tcp_datagram(src=mac, seq=seq + 100 * i, payload=bytes([i]) * 100, ident=i)
                    for i in range(count)
                ]
                seq += 100 * count
            buffers.append((sender, group))
        changes = draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["remove", "static", "learned"]),
                    st.sampled_from(MACS),
                    st.sampled_from([MEMBER, OTHER_MEMBER]),
                ),
                max_size=3,
            )
        )
        found.append((buffers, changes))
    return found


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    start=st.lists(
        st.tuples(
            st.sampled_from(["static", "learned"]),
            st.sampled_from(MACS),
            st.sampled_from([MEMBER, OTHER_MEMBER]),
        ),
        max_size=4,
    ),
    drains=steps(),
    learn_limit=st.sampled_from([0, 2, 8]),
    table=st.sampled_from([FdbTable, dict]),
)
def test_many_records_of_several_senders_and_macs_count_as_in_python(
    sockets: dict[str, socket.socket],
    start: list[Change],
    drains: list[tuple[Buffers, list[Change]]],
    learn_limit: int,
    table: Table,
) -> None:
    python, c = _run_steps(sockets, start, drains, table=table, learn_limit=learn_limit)
    assert c == python


def test_more_sources_than_slots_count_as_in_python(sockets: dict[str, socket.socket]) -> None:
    """More given MACs than the C side holds slots for: the table is emptied and filled again,
    and every entry counts each of its frames once, as in Python."""
    macs = [bytes((2, 0x42, 0x0B, n >> 16 & 0xFF, n >> 8 & 0xFF, n & 0xFF)) for n in range(1100)]
    datagrams = [frame_datagram(60, UDP, src=mac, fill=i) for i, mac in enumerate(macs)]
    buffers: Buffers = [(MEMBER, datagrams[i : i + 50]) for i in range(0, len(datagrams), 50)]
    start = [("static", mac, MEMBER) for mac in macs]
    assert len(macs) > fastingress.SLOTS
    python, c = _run_steps(
        sockets, start, [(buffers, []), (buffers, [])], table=FdbTable, learn_limit=0
    )
    assert c == python
    fdb = c["fdb"]
    assert isinstance(fdb, dict)
    assert {counts[2] for counts in fdb.values()} == {2}
