"""The hot loop's scheduling knobs (issue 15, ping under load): the drain budget bounds how many
frames one drain of an fd takes before the loop looks at the others, and the loop's own thread,
not the rest of the process, gets the nice value."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter

from scapy.layers.inet import ICMP, IP
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
