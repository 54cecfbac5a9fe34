"""The source MACs the C offload drain counts itself (issue 15: `fastoffload.Engine`'s slots,
`accel/offload.c` `of_learn`/`of_fold` on common.h's table, the ingress drain's rules): a frame
of a MAC whose FDB entry needs no learning is counted in C and folded into that entry and
`rx_offload_frames` at the drain's end, never handed to Python; a change of the FDB between
two drains (an entry removed, given elsewhere, added, a learned one moved to another host) is
honoured by the next drain, and what a slot counted goes only to the entry object it was made
for. The C path against the Python one over several drains with FDB changes between them, of
many frames of several senders and MACs, on the agent's `FdbTable` and on a plain dict (always
"changed"); and past the slot table's size."""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane import accel, fastingress, fastoffload
from overlaynet.dataplane.fdb import FdbEntry, FdbTable
from overlaynet.wire import chunks

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
    gro_sockets,
    send_and_drain,
)
from .test_fastoffload import VNI, _path, _state, tcp_frame, udp_frame

pytestmark = pytest.mark.skipif(
    accel.load("offload") is None, reason=f"C helper unavailable: {accel.why_not('offload')}"
)

#: Where the inner source MAC is in a virtio-net header + frame.
SRC_AT = 10 + 6


@pytest.fixture
def sockets() -> Iterator[dict[str, socket.socket]]:
    with gro_sockets(sndbuf=1 << 22) as found:
        yield found


def _drain(
    path: Path, rx: socket.socket, buffers: Buffers, senders: dict[str, socket.socket]
) -> None:
    def drain() -> None:
        if not fastoffload.drain(path.loop):
            path.loop._drain_offload()

    send_and_drain(path, rx, buffers, senders, drain)


class _Ids:
    """Frame ids, unique across one test's drains (a repeated id is a duplicate)."""

    def __init__(self) -> None:
        self.next = 1

    def take(self) -> int:
        self.next += 1
        return self.next


def _frames(mac: bytes, seed: int) -> list[bytes]:
    """A TCP super-frame (7 chunks, bulk queue), 4 mergeable UDP datagrams of 1400 octets
    (one write) and 2 small ones without a partial checksum (the latency queue), from `mac`."""
    frames = [tcp_frame(9000, seed)]
    frames += [udp_frame(1400, seed + i) for i in range(4)]
    frames += [udp_frame(60, seed + i, vnet=bytes(10)) for i in range(2)]
    return [f[:SRC_AT] + mac + f[SRC_AT + 6 :] for f in frames]


def _traffic(ids: _Ids, mac: bytes, sender: str = MEMBER, seed: int = 0) -> Buffers:
    """`_frames` of `mac` from `sender` in chunks: one buffer per frame."""
    buffers: Buffers = []
    for frame in _frames(mac, seed):
        parts = chunks.split(VNI, ids.take(), frame, chunks.DEFAULT_CHUNK)
        pieces = [bytes(parts[i]) + bytes(parts[i + 1]) for i in range(0, len(parts), 2)]
        buffers.append((sender, pieces))
    return buffers


#: What `_frames` counts on an entry: 4 frames (the UDP run is merged into one, as
#: `_deliver_whole` counts it) and their octets without the virtio-net header.
PER_TRAFFIC = (4, 9000 + 54 + 4 * 1400 + 42 + 2 * (60 + 42))


@TABLES
@FDB_CHANGES
def test_an_fdb_change_between_two_drains_is_honoured_by_the_next_drain(
    sockets: dict[str, socket.socket], table: Table, start: Change, change: Change
) -> None:
    """Counted in C in the first drain (a slot made for the entry), the MAC's entry is changed
    between drains: the second drain counts as Python does (unknown source, on the new entry,
    moved back by learning), and the entry object replaced keeps the first drain's counts."""
    rx = sockets["rx"]
    ids = _Ids()
    first_traffic = _traffic(ids, MAC_A) + _traffic(ids, MAC_A, seed=50)
    second_traffic = _traffic(ids, MAC_A, seed=100) + _traffic(ids, MAC_A, seed=150)
    first: dict[bool, tuple[FdbEntry | None, int, int]] = {}

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(stack, rx, accelerated=accelerated, table=table)
        path.net.learn_limit = 4 if start[0] == "learned" else 0  # else: unknown stays so
        path.net.learned = int(start[0] == "learned")
        apply_change(path, start)
        _drain(path, rx, first_traffic, sockets)
        old = path.net.fdb.get(MAC_A)
        apply_change(path, change)
        _drain(path, rx, second_traffic, sockets)
        first[accelerated] = (old, old.rx_frames, old.rx_bytes) if old else (None, 0, 0)
        return path

    python, c, _ = both(one, _state, lambda path: None)
    assert c == python
    per_drain = (2 * PER_TRAFFIC[0], 2 * PER_TRAFFIC[1])
    old, frames, octets = first[True]
    if old is not None:
        assert (frames, octets) == per_drain  # the first drain's, nothing of the second
    fdb = c["fdb"]
    assert isinstance(fdb, dict)
    net = c["net"]
    assert isinstance(net, Counter)
    assert net["rx_offload_frames"] == 2 * per_drain[0]
    if change[0] == "remove":
        assert MAC_A.hex() not in fdb
        assert net["rx_frames_unknown_source"] == per_drain[0]
    elif change[0] == "static":
        assert fdb[MAC_A.hex()] == (change[2], False, *per_drain)
    else:  # learned at OTHER_MEMBER, frames from MEMBER: moved back at the first frame
        assert fdb[MAC_A.hex()][:2] == (MEMBER, True)
        assert net["fdb_learn_moved"] == 1


def test_a_known_source_is_counted_in_c_without_a_record_for_python(
    sockets: dict[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a drain that made the slot, a drain of a given entry's MAC hands Python no frame
    (every frame Python counts makes a slot: `_install`), yet the entry, `rx_offload_frames`,
    the writes and the latency reader's wake-up are as if it had."""
    rx = sockets["rx"]
    ids = _Ids()
    with ExitStack() as stack:
        path = _path(stack, rx, accelerated=True, table=FdbTable)
        apply_change(path, ("static", MAC_A, MEMBER))
        _drain(path, rx, _traffic(ids, MAC_A), sockets)
        entry = path.net.fdb[MAC_A]
        assert (entry.rx_frames, entry.rx_bytes) == PER_TRAFFIC

        def refuse(*_args: object) -> None:
            raise AssertionError("a counted MAC's frame came back to Python")

        monkeypatch.setattr(fastoffload, "_account", refuse)
        monkeypatch.setattr(fastingress.SlotContext, "_install", refuse)
        path.writes.clear()
        path.loop._woke = False
        _drain(path, rx, _traffic(ids, MAC_A, seed=7), sockets)
        assert (entry.rx_frames, entry.rx_bytes) == (2 * PER_TRAFFIC[0], 2 * PER_TRAFFIC[1])
        assert path.net.counters["rx_offload_frames"] == 2 * PER_TRAFFIC[0]
        # The TCP frame to the bulk queue, the UDP run as one write and the 2 small ones.
        assert [name for name, _ in path.writes] == ["bulk", "latency", "latency", "latency"]
        assert path.loop._woke


Plan = tuple[list[Change], list[tuple[list[tuple[bytes, str]], list[Change]]]]


def _steps_strategy() -> st.SearchStrategy[Plan]:
    change = st.tuples(
        st.sampled_from(["remove", "static", "learned"]),
        st.sampled_from(MACS),
        st.sampled_from([MEMBER, OTHER_MEMBER]),
    )
    traffic = st.tuples(st.sampled_from(MACS), st.sampled_from([MEMBER] * 3 + [OTHER_MEMBER]))
    step = st.tuples(st.lists(traffic, min_size=1, max_size=5), st.lists(change, max_size=3))
    return st.tuples(st.lists(change, max_size=4), st.lists(step, min_size=1, max_size=4))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plan=_steps_strategy(),
    table=st.sampled_from([FdbTable, dict]),
    learn_limit=st.sampled_from([0, 2, 16]),
)
def test_the_c_drain_counts_what_the_python_drain_does_over_drains_with_fdb_changes(
    sockets: dict[str, socket.socket],
    plan: Plan,
    table: Table,
    learn_limit: int,
) -> None:
    """Several drains of frames of several MACs and senders, the FDB changed between them:
    the C path's writes, counters and every entry's counts equal the Python path's."""
    rx = sockets["rx"]
    start, steps = plan
    ids = _Ids()
    drains = [
        (
            [b for n, (mac, sender) in enumerate(traffic) for b in _traffic(ids, mac, sender, n)],
            changes,
        )
        for traffic, changes in steps
    ]

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(stack, rx, accelerated=accelerated, table=table)
        path.net.learn_limit = learn_limit
        for change in start:
            apply_change(path, change)
        path.net.learned = sum(e.learned for e in path.net.fdb.values())
        for buffers, changes in drains:
            _drain(path, rx, buffers, sockets)
            for change in changes:
                apply_change(path, change)
        return path

    def check_c(path: Path) -> None:
        assert fastoffload.active(path.loop)

    python, c, _ = both(one, _state, check_c)
    assert c == python


def test_more_sources_than_slots_count_as_in_python(sockets: dict[str, socket.socket]) -> None:
    """More given MACs than the table has slots, over two drains: emptied and filled again
    when full, the counts stay the Python path's."""
    rx = sockets["rx"]
    macs = [bytes.fromhex("0242") + n.to_bytes(4, "big") for n in range(fastingress.SLOTS + 40)]
    assert len(macs) > fastingress.SLOTS
    ids = _Ids()
    small = [udp_frame(60, 1, vnet=bytes(10))]

    def buffers_of(seed: int) -> Buffers:
        found: Buffers = []
        for mac in macs:
            frame = small[0][:SRC_AT] + mac + small[0][SRC_AT + 6 :]
            parts = chunks.split(VNI, ids.take(), frame, chunks.DEFAULT_CHUNK)
            found.append((MEMBER, [bytes(parts[0]) + bytes(parts[1])]))
        return found

    drains = [buffers_of(0), buffers_of(1)]

    def one(stack: ExitStack, accelerated: bool) -> Path:
        path = _path(stack, rx, accelerated=accelerated, table=FdbTable)
        for mac in macs:
            path.net.fdb[mac] = FdbEntry(MEMBER)
        for buffers in drains:
            _drain(path, rx, buffers, sockets)
        return path

    python, c, _ = both(one, _state, lambda path: None)
    assert c == python
    fdb = c["fdb"]
    assert isinstance(fdb, dict)
    assert all(v[2] == 2 for v in fdb.values())
