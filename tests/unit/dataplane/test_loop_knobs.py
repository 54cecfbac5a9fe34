"""The hot loop's scheduling knobs (issue 15, ping under load): the drain budget bounds how many
frames one drain of an fd takes before the loop looks at the others, without cutting GSO batches
short (a batch open when the budget runs out is carried to the queue's next drain), and the
loop's own thread, not the rest of the process, gets the nice value."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter

from scapy.layers.inet import ICMP, IP, TCP
from scapy.layers.l2 import Ether

from overlaynet.dataplane.fdb import ForwardingDatabase
from overlaynet.dataplane.hotpath import HotLoop
from overlaynet.dataplane.switching import Network
from overlaynet.dataplane.vtep import Vtep

VNI = 4097
MAC_A, MAC_B = "02:42:0a:00:00:02", "02:42:0a:00:00:03"
TIMEOUT = 5.0  # bounds a hang only


def _frame(n: int) -> bytes:
    return bytes(
        Ether(src=MAC_A, dst=MAC_B) / IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(seq=n) / b"x"
    )


def _tcp(n: int) -> bytes:
    return bytes(
        Ether(src=MAC_A, dst=MAC_B)
        / IP(src="10.0.0.2", dst="10.0.0.3", flags="DF", id=n)
        / TCP(sport=40000, dport=5201, seq=1 + n * 1000, ack=1, flags="A")
        / (bytes([n % 256]) * 1000)
    )


class _Rig:
    """A loop with GSO batching: a socketpair for the TAP, a loopback sink for the peer."""

    def __init__(self, budget: int) -> None:
        fdb = ForwardingDatabase()
        fdb.add(VNI, MAC_B, "127.0.0.1")
        self.tap, self.bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.tap.setblocking(False)
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.bind(("127.0.0.1", 0))
        self.sink.settimeout(TIMEOUT)
        self.sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        self.plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.gso = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # the loop's, never used
        self.rx.bind(("127.0.0.1", 0))
        port = self.sink.getsockname()[1]
        self.loop = HotLoop(self.rx, [self.plain], port, Counter(), tx_gso=[self.gso])
        self.loop.drain_budget = budget
        self.net = Network(VNI, self.tap.fileno(), 1450, fdb.table(VNI))
        self.thread: threading.Thread | None = None
        self.tid = 0  # the serving thread's native id (`serve`)

    def serve(self) -> None:
        """Arm the loop and serve it in a thread of its own; `close` stops and joins it."""
        started = threading.Event()

        def run() -> None:
            self.tid = threading.get_native_id()
            started.set()
            self.loop.serve()

        self.loop.arm()
        self.thread = threading.Thread(target=run)
        self.thread.start()
        assert started.wait(TIMEOUT)

    def settled_nice(self, nice: int) -> int:
        """The serving thread's nice value once it is `nice` (a bounded wait: the loop takes
        its nice value back on its own time)."""
        deadline = time.monotonic() + TIMEOUT
        while os.getpriority(os.PRIO_PROCESS, self.tid) != nice:
            assert time.monotonic() < deadline, f"the loop never went back to nice {nice}"
            time.sleep(0.01)
        return nice

    def close(self) -> None:
        if self.thread is not None:
            self.loop.stop()
            self.thread.join(TIMEOUT)
        self.loop.close()
        for s in (self.tap, self.bridge, self.sink, self.plain, self.gso, self.rx):
            s.close()


def test_a_batch_open_when_the_budget_runs_out_leaves_whole_with_the_next_drain() -> None:
    rig = _Rig(budget=4)
    try:
        frames = [_tcp(n) for n in range(10)]
        for frame in frames:
            rig.bridge.send(frame)
        rig.loop._drain_tap(rig.net)  # 4 read, budget spent: nothing sent yet
        rig.loop._drain_tap(rig.net)  # 4 more, the same
        rig.sink.setblocking(False)
        try:
            early = rig.sink.recv(65536)
        except BlockingIOError:
            early = b""
        rig.sink.settimeout(TIMEOUT)
        rig.loop._drain_tap(rig.net)  # the last 2, then EAGAIN: one batch of 10
        got = [rig.sink.recv(65536)[8:] for _ in frames]
    finally:
        rig.close()
    assert early == b""
    assert got == frames
    assert rig.net.counters["tx_gso_batches"] == 1


def test_a_carried_batch_leaves_when_its_queue_ran_dry_exactly_at_the_budget() -> None:
    rig = _Rig(budget=5)
    try:
        frames = [_tcp(n) for n in range(5)]
        for frame in frames:
            rig.bridge.send(frame)  # queued before the loop runs: its first drain takes all 5
        rig.loop.add(rig.net)
        thread = threading.Thread(target=rig.loop.serve)
        thread.start()
        try:
            got = [rig.sink.recv(65536)[8:] for _ in frames]
        finally:
            rig.loop.stop()
            thread.join(TIMEOUT)
    finally:
        rig.close()
    assert got == frames


def test_one_drain_takes_at_most_the_budget_and_the_rest_stays_queued() -> None:
    fdb = ForwardingDatabase()
    fdb.add(VNI, MAC_B, "127.0.0.1")
    tap, bridge = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with tap, bridge, sink, plain:
        sink.bind(("127.0.0.1", 0))
        sink.settimeout(TIMEOUT)
        tap.setblocking(False)
        loop = HotLoop(sink, [plain], sink.getsockname()[1], Counter())
        try:
            loop.drain_budget = 4
            net = Network(VNI, tap.fileno(), 1450, fdb.table(VNI))
            frames = [_frame(n) for n in range(10)]
            for frame in frames:
                bridge.send(frame)
            loop._drain_tap(net)
            sent = [sink.recv(65536)[8:] for _ in range(4)]
            left = []
            while True:
                try:
                    left.append(tap.recv(65536))
                except BlockingIOError:
                    break
        finally:
            loop.close()
    assert sent == frames[:4]
    assert left == frames[4:]


def test_the_loop_thread_gets_the_nice_value_and_the_caller_keeps_its_own() -> None:
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    wanted = min(19, caller + 3)
    with Vtep("127.0.0.2", 0, source_sockets=1, socket_buffer=1 << 16, nice=wanted) as vtep:
        vtep.start()
        thread = vtep._thread
        assert thread is not None and thread.native_id is not None
        deadline = time.monotonic() + TIMEOUT
        while os.getpriority(os.PRIO_PROCESS, thread.native_id) != wanted:
            assert time.monotonic() < deadline, "the loop thread never took its nice value"
            time.sleep(0.01)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == caller
        vtep.stop()
    assert "priority_refused" not in vtep.counters


def _serve_bulk_policy(frames: list[bytes]) -> tuple[Counter[str], int, int]:
    """A loop with the "bulk" nice policy (budget 1: one pass per frame) takes `frames`
    queued at once; its counters, and its thread's nice value after and as configured."""
    rig = _Rig(budget=1)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    rig.loop.nice, rig.loop.bulk_nice = min(19, caller + 3), min(19, caller + 6)
    rig.loop.nice_policy = "bulk"
    rig.loop.add(rig.net)
    try:
        for frame in frames:
            rig.bridge.send(frame)
        rig.serve()
        for _ in frames:  # every frame crossed (ICMP: one datagram each)
            rig.sink.recv(65536)
        return rig.loop._counters, rig.settled_nice(rig.loop.nice), rig.loop.nice
    finally:
        rig.close()


def test_the_bulk_policy_steps_down_while_work_keeps_coming_and_back_when_idle() -> None:
    counters, now, nice = _serve_bulk_policy([_frame(n) for n in range(40)])
    assert counters["nice_bulk_steps"] >= 1
    assert counters["nice_idle_steps"] == counters["nice_bulk_steps"]
    assert now == nice


def test_the_bulk_policy_leaves_a_lone_frame_at_the_loop_nice_value() -> None:
    counters, now, nice = _serve_bulk_policy([_frame(1)])
    assert counters["nice_bulk_steps"] == 0
    assert now == nice
