"""The lane (`lane.Lane`, issue 15): the urgent fds (the checksum-0 socket, the TAP's second
queue) in a thread of their own, so that a ping does not wait for the main loop's bulk drain.
Two VTEPs on loopback, socketpairs standing in for the TAPs (as test_vtep_loopback.py)."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.impair import Impairment
from overlaynet.dataplane.lane import LANE_MODES
from overlaynet.dataplane.switching import Network
from overlaynet.dataplane.vtep import Vtep
from overlaynet.wire.ethernet import mac_to_bytes
from tests.unit.dataplane.drains import tap
from tests.unit.dataplane.ports import free_port
from tests.unit.dataplane.test_loop_knobs import MAC_A, MAC_B, VNI, _tcp
from tests.unit.dataplane.test_loop_knobs import _frame as _ping

HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"
TIMEOUT = 5.0  # bounds a hang only, never asserts speed
#: How long the test waits for the ping while the main loop is held: generous for a loaded
#: machine; without a lane the ping never comes while it is held, however long we wait.
PING_WAIT = 3.0


class Pair:
    """VTEP A with a two-queue TAP (bulk and latency queue) and the lane `lane`; VTEP B with
    one queue and the same lane setting."""

    def __init__(self, stack: ExitStack, lane: str, batch: bool = True) -> None:
        port = free_port()
        self.a = stack.enter_context(
            Vtep(HOST_A, port, source_sockets=2, socket_buffer=1 << 20, lane=lane, batch=batch)
        )
        self.b = stack.enter_context(
            Vtep(HOST_B, port, source_sockets=2, socket_buffer=1 << 20, lane=lane, batch=batch)
        )
        self.bulk_a, tap_a = tap(stack, TIMEOUT)
        self.latency_a, tap_a2 = tap(stack, TIMEOUT)
        self.bridge_b, tap_b = tap(stack, TIMEOUT)
        self.a.add_network(VNI, tap_a.fileno(), queues=(tap_a2.fileno(),), vnet_hdr=False)
        self.b.add_network(VNI, tap_b.fileno(), vnet_hdr=False)
        self.a.set_peers(VNI, [HOST_B])
        self.b.set_peers(VNI, [HOST_A])
        self.a.endpoint_added(RemoteEndpoint(VNI, MAC_B, "10.0.0.3", HOST_B))
        self.b.endpoint_added(RemoteEndpoint(VNI, MAC_A, "10.0.0.2", HOST_A))


@pytest.fixture(params=[m for m in LANE_MODES if m != "off"])
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    with ExitStack() as stack:
        yield Pair(stack, request.param)


def _hold_main_egress(vtep: Vtep) -> tuple[threading.Event, threading.Event]:
    """Make the main loop's C egress drain (`FastEgress._run`) wait, GIL released, until the
    returned `release` is set, as a long drain of bulk would; `entered` is set once it waits.
    The lane has an instance of its own (made when it starts), which is not held."""
    fast = vtep._loop.fast_egress
    if fast is None:
        pytest.skip("the C egress drain is unavailable here")
    entered, release = threading.Event(), threading.Event()
    run: Callable[[int], int] = fast._run

    def held(params: int) -> int:
        entered.set()
        release.wait(TIMEOUT * 4)
        return run(params)

    setattr(fast, "_run", held)  # noqa: B010  (a ctypes function pointer in the real one)
    return entered, release


def _lane_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "vtep-lane"]


def test_a_ping_crosses_while_the_main_loop_is_held_in_a_bulk_drain(pair: Pair) -> None:
    entered, release = _hold_main_egress(pair.a)
    pair.a.start()
    pair.b.start()
    try:
        tcp = _tcp(1)
        pair.bulk_a.send(tcp)  # the main loop's queue: its drain now waits
        assert entered.wait(TIMEOUT)
        ping = _ping(1)
        pair.latency_a.send(ping)
        pair.bridge_b.settimeout(PING_WAIT)
        got = pair.bridge_b.recv(65536)
        still_held = not release.is_set()
    finally:
        release.set()
    assert still_held
    assert got == ping
    pair.bridge_b.settimeout(TIMEOUT)
    assert pair.bridge_b.recv(65536) == tcp  # the bulk goes on once the drain ends


def test_without_a_lane_the_ping_waits_for_the_held_drain() -> None:
    """The rig of the test above is able to fail: with one thread, the ping waits."""
    with ExitStack() as stack:
        pair = Pair(stack, "off")
        entered, release = _hold_main_egress(pair.a)
        pair.a.start()
        pair.b.start()
        try:
            pair.bulk_a.send(_tcp(1))
            assert entered.wait(TIMEOUT)
            pair.latency_a.send(_ping(1))
            pair.bridge_b.settimeout(0.5)
            with pytest.raises(TimeoutError):
                pair.bridge_b.recv(65536)
        finally:
            release.set()
        pair.bridge_b.settimeout(TIMEOUT)
        got = {pair.bridge_b.recv(65536), pair.bridge_b.recv(65536)}
        assert got == {_tcp(1), _ping(1)}


def test_stop_ends_both_threads_and_serve_can_run_again(pair: Pair) -> None:
    before = len(_lane_threads())
    pair.a.start()
    lane = pair.a._loop.lane
    assert lane is not None
    pair.a.stop()
    assert lane.thread is None
    assert len(_lane_threads()) == before
    pair.a.start()
    pair.b.start()
    pair.latency_a.send(_ping(2))
    assert pair.bridge_b.recv(65536) == _ping(2)
    pair.a.stop()
    pair.b.stop()
    assert len(_lane_threads()) == before


def test_the_lane_runs_at_sched_fifo_when_asked() -> None:
    with ExitStack() as stack:
        pair = Pair(stack, "fifo")
        pair.a.start()
        pair.latency_a.send(_ping(3))  # once it forwarded, its priority is set
        pair.b.start()
        assert pair.bridge_b.recv(65536) == _ping(3)
        lane = pair.a._loop.lane
        assert lane is not None
        policy = os.sched_getscheduler(lane.tid)
        refused = pair.a.counters["lane_fifo_refused"]
    assert policy == os.SCHED_FIFO or refused == 1


def test_sched_fifo_refused_is_counted_and_the_lane_still_forwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: Any) -> None:
        raise PermissionError(1, "Operation not permitted")  # no CAP_SYS_NICE, no RLIMIT_RTPRIO

    monkeypatch.setattr(os, "sched_setscheduler", refuse)
    with ExitStack() as stack:
        pair = Pair(stack, "fifo")
        pair.a.start()
        pair.b.start()
        pair.latency_a.send(_ping(4))
        assert pair.bridge_b.recv(65536) == _ping(4)
        lane = pair.a._loop.lane
        assert lane is not None
        policy = os.sched_getscheduler(lane.tid)
        assert pair.a.counters["lane_fifo_refused"] == 1
    assert policy == os.SCHED_OTHER


def test_counters_stay_exact_when_both_threads_count(pair: Pair) -> None:
    """Pings through A's lane and TCP through its main loop at once, both counting on the same
    FDB entry (and, at B, both of B's threads on A's entry): every frame counted once. Sent in
    bursts the socketpair standing in for B's TAP can hold (a TAP write that finds it full is
    dropped, counted)."""
    bursts, burst = 10, 60
    # Threads switch as often as the interpreter can, to give a `+=` run by both threads
    # outside the lock its best chance to lose an increment. (A rare race stays rare: with the
    # lock made a no-op this passed 5 of 5; what it catches is a frame counted twice, in the
    # wrong thread's C state, or not at all.)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        _count_both_ways(pair, bursts, burst)
    finally:
        sys.setswitchinterval(switch)


def _count_both_ways(pair: Pair, bursts: int, burst: int) -> None:
    pair.a.start()
    pair.b.start()
    pings = [_ping(n) for n in range(bursts * burst)]
    bulk = [_tcp(n) for n in range(bursts * burst)]

    def send(sock: socket.socket, frames: list[bytes]) -> None:
        for frame in frames:
            sock.send(frame)

    got: list[bytes] = []
    for k in range(0, bursts * burst, burst):
        senders = [
            threading.Thread(target=send, args=(pair.latency_a, pings[k : k + burst])),
            threading.Thread(target=send, args=(pair.bulk_a, bulk[k : k + burst])),
        ]
        for thread in senders:
            thread.start()
        try:
            for _ in range(2 * burst):
                got.append(pair.bridge_b.recv(65536))
        finally:
            for thread in senders:
                thread.join(TIMEOUT)
    pair.a.stop()
    pair.b.stop()
    assert sorted(got) == sorted(pings + bulk)
    sent = pair.a._loop.networks[VNI.to_bytes(3, "big")].fdb[mac_to_bytes(MAC_B)]
    received = pair.b._loop.networks[VNI.to_bytes(3, "big")].fdb[mac_to_bytes(MAC_A)]
    assert sent.tx_frames == len(got)
    assert sent.tx_bytes == sum(map(len, got))
    assert received.rx_frames == len(got)
    assert received.rx_bytes == sum(map(len, got))


def test_a_lane_over_its_share_is_demoted_and_takes_its_priority_back() -> None:
    """A flood on the urgent path must not keep a CPU at SCHED_FIFO: past its share of a window
    the lane drops to SCHED_OTHER nice 0 (counted), and takes SCHED_FIFO again in the next
    window it wakes in. A share of 0 makes the first frame enough; a window of 10 s keeps it
    demoted until the test ends it."""
    with ExitStack() as stack:
        pair = Pair(stack, "fifo")
        lane = pair.a._loop.lane
        assert lane is not None
        lane.share, lane.window = 0.0, 10.0
        pair.a.start()
        pair.b.start()
        pair.latency_a.send(_ping(5))
        assert pair.bridge_b.recv(65536) == _ping(5)
        # Demoted after the drain that forwarded the ping: read once it is counted.
        deadline = time.monotonic() + TIMEOUT
        while pair.a.counters["lane_demoted"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        demoted = os.sched_getscheduler(lane.tid), os.getpriority(os.PRIO_PROCESS, lane.tid)
        assert pair.a.counters["lane_demoted"] == 1
        lane.share, lane.window_end = 1.0, 0.0  # the window is over: the next wake-up restores
        pair.latency_a.send(_ping(6))
        assert pair.bridge_b.recv(65536) == _ping(6)
        restored = os.sched_getscheduler(lane.tid)
        refused = pair.a.counters["lane_fifo_refused"]
    assert demoted == (os.SCHED_OTHER, 0)
    assert restored == os.SCHED_FIFO or refused


def test_an_unknown_lane_mode_is_refused_before_anything_is_built() -> None:
    with pytest.raises(ValueError, match="lane must be one of"):
        Vtep(HOST_A, free_port(), lane="rt")


def test_frames_the_lane_holds_for_an_impairment_leave_when_due(pair: Pair) -> None:
    """An impaired ping drained by the lane is held (`_held`), and the main loop releases held
    datagrams: the lane wakes it, or it would sleep through the delay until its next sweep
    (AGE_SWEEP_INTERVAL, 10 s: longer than TIMEOUT)."""
    pair.a.set_impairments({HOST_B: Impairment(delay=100.0)})
    pair.a.start()
    pair.b.start()
    pair.latency_a.send(_ping(8))
    assert pair.bridge_b.recv(65536) == _ping(8)
    assert pair.a.counters["lane_wakeups"] >= 1


def test_a_failing_lane_stops_the_loop_and_serve_raises_its_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A VTEP whose lane died must not go on half-served: the loop stops and `serve` raises."""
    with ExitStack() as stack:
        pair = Pair(stack, "nice")
        loop = pair.a._loop
        drain = loop._drain_tap

        def failing(net: Network, fd: int = -1, lane: Any = None) -> None:
            if lane is not None:
                raise OSError("injected into the lane's drain")
            drain(net, fd, lane)

        monkeypatch.setattr(loop, "_drain_tap", failing)
        errors: list[BaseException] = []

        def serve() -> None:
            try:
                pair.a.serve()
            except BaseException as error:
                errors.append(error)

        thread = threading.Thread(target=serve)
        thread.start()
        pair.latency_a.send(_ping(9))
        thread.join(TIMEOUT)
        alive = thread.is_alive()
        if alive:
            pair.a.stop()
            thread.join(TIMEOUT)
    assert not alive
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert isinstance(errors[0].__cause__, OSError)
    assert not _lane_threads()


def test_without_a_checksummed_twin_the_bulk_socket_stays_with_the_main_loop() -> None:
    """Batching off: the checksum-0 socket carries every datagram, bulk included, so the lane
    does not take it (only the latency queues); frames still cross both ways."""
    with ExitStack() as stack:
        pair = Pair(stack, "fifo", batch=False)
        lane = pair.a._loop.lane
        assert lane is not None
        assert lane.rx is None and pair.a._loop._rx_checked is None
        pair.a.start()
        pair.b.start()
        pair.latency_a.send(_ping(10))
        assert pair.bridge_b.recv(65536) == _ping(10)
        pair.bridge_b.send(_ping(11))  # received by A's main loop, written to its second queue
        assert pair.latency_a.recv(65536) == _ping(11)
        assert pair.a.counters["lane_wakeups"] >= 1
