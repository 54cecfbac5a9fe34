"""The hot loop under the "paced" nice policies (issue 15). "paced": passes that move lone
(non-TCP) frames, here from the TAP's latency queue, at a high rate step its thread down to
nice 0, whether each frame wakes the loop or a burst is found pass after pass, and the stream's
end steps it back; TCP frames from the bulk queue leave its nice value alone even when each one
wakes the loop, and so do a few lone frames. "paced-wake" (the first version, kept for
comparison) steps on wake-ups instead: TCP frames that wake the loop one at a time step it down.
The pacer's rate threshold is lowered so that a test's Python sender counts as a stream."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter

import pytest

from overlaynet.dataplane.hotpath import DRAIN_BUDGET, NICE_POLICIES
from overlaynet.dataplane.switching import Network

from .test_loop_knobs import TIMEOUT, VNI, _frame, _Rig, _tcp

#: A test sender manages thousands of frames a second, a loaded machine maybe a few hundred:
#: 20 passes a second counts as paced here (the default is `pacing.PACED_RATE`).
TEST_RATE = 20.0
#: The pacer's sample (passes): small, so a few hundred frames make several samples.
TEST_SAMPLE = 16
#: Seconds between a paced test stream's frames (after each one crossed): 1000 a second at
#: most, well above `TEST_RATE`; long enough for the loop to go back to sleep in between.
PACE = 0.001
#: Stepped down, the loop sleeps this long without work before it takes its nice back.
TEST_QUIET = 0.05
#: The loops' nice value in these tests: negative and distinct from the default's -10.
LOOPS_NICE = -3

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a negative nice value needs root")


def _serve(
    policy: str, frames: int, *, paced: bool, lone: bool, nice: int = LOOPS_NICE
) -> tuple[Counter[str], int, int]:
    """A loop with `policy` and a two-queue TAP takes `frames` frames: ICMP on the latency
    queue when `lone`, TCP on the bulk queue otherwise; one at a time (each `PACE` after the
    previous one's datagram: a wake-up each) when `paced`, all queued at once otherwise with a
    budget of 1 (one pass per frame, every pass finds work). Returns its counters, its
    thread's nice value once it has settled after the last frame, and its configured nice."""
    # A paced frame's drain sees the queue run empty (a budget of 1 would carry it to a
    # second pass that finds it: not the single pass a real lone frame takes).
    rig = _Rig(budget=DRAIN_BUDGET if paced else 1)
    latency, latency_peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    latency.setblocking(False)
    rig.net = Network(VNI, rig.tap.fileno(), 1450, rig.net.fdb, queues=(latency.fileno(),))
    sender = latency_peer if lone else rig.bridge
    make = _frame if lone else _tcp
    # Below 0, as the loop's own (`LOOP_NICE`): the policies step down to 0 only from a
    # negative nice value (needs CAP_SYS_NICE: the module is skipped without root).
    rig.loop.nice = nice
    rig.loop.nice_policy = policy
    rig.loop.pacing = {"rate": TEST_RATE, "sample": TEST_SAMPLE, "quiet": TEST_QUIET}
    rig.loop.add(rig.net)
    tids: list[int] = []

    def serve() -> None:
        tids.append(threading.get_native_id())
        rig.loop.serve()

    thread = threading.Thread(target=serve)
    try:
        if not paced:
            for n in range(frames):
                sender.send(make(n))
        rig.loop.arm()
        thread.start()
        for n in range(frames):
            if paced:
                sender.send(make(n))
            rig.sink.recv(65536)  # every frame crossed (one datagram each)
            if paced:
                time.sleep(PACE)  # the loop is asleep again before the next one comes
        deadline = time.monotonic() + TIMEOUT
        while os.getpriority(os.PRIO_PROCESS, tids[0]) != rig.loop.nice:
            assert time.monotonic() < deadline, "the loop never went back to its nice value"
            time.sleep(0.01)
        return rig.loop._counters, os.getpriority(os.PRIO_PROCESS, tids[0]), rig.loop.nice
    finally:
        rig.loop.stop()
        thread.join(TIMEOUT)
        rig.close()
        latency.close()
        latency_peer.close()


def test_paced_and_paced_wake_are_nice_policies() -> None:
    assert {"paced", "paced-wake"} <= set(NICE_POLICIES)


@pytest.mark.parametrize("paced", [True, False], ids=["one-per-wake-up", "burst"])
def test_a_stream_of_lone_frames_steps_down_and_its_end_steps_back(paced: bool) -> None:
    """Both ways a UDP stream reaches the loop: a datagram per wake-up, or iperf3's 1 ms
    bursts that a loop at -10 finds pass after pass (which "paced-wake" took for bulk)."""
    counters, now, nice = _serve("paced", 200, paced=paced, lone=True)
    assert counters["nice_paced_steps"] >= 1
    assert counters["nice_unpaced_steps"] == counters["nice_paced_steps"]
    assert counters["pacer_lone"] > 0
    assert now == nice
    assert "priority_refused" not in counters


def test_tcp_from_the_bulk_queue_leaves_the_nice_value_alone() -> None:
    """Bulk through offload wakes the loop for each super-frame: not a lone pass (TCP frames
    one per wake-up, which "paced-wake" steps down on: below)."""
    counters, now, nice = _serve("paced", 200, paced=True, lone=False)
    assert counters["nice_paced_steps"] == 0
    assert counters["pacer_samples"] > 0 and counters["pacer_lone"] == 0
    assert now == nice


def test_a_few_lone_frames_leave_the_nice_value_alone() -> None:
    """Fewer frames than one sample: no rate to judge, like a ping."""
    counters, _now, _nice = _serve("paced", TEST_SAMPLE // 2, paced=True, lone=True)
    assert counters["nice_paced_steps"] == 0


def test_paced_wake_steps_down_on_wake_ups_whatever_they_carry() -> None:
    """The first version's signal: TCP frames one per wake-up step it down ("paced" above
    does not), and its stream's end steps it back."""
    counters, now, nice = _serve("paced-wake", 200, paced=True, lone=False)
    assert counters["nice_paced_steps"] >= 1
    assert counters["nice_unpaced_steps"] == counters["nice_paced_steps"]
    assert now == nice


def test_a_positive_nice_value_is_kept_fixed() -> None:
    """From a positive nice value the step to 0 would raise the loop above the processes the
    stream feeds, the opposite of the policy's purpose: the loop keeps its nice value."""
    counters, now, nice = _serve("paced", 200, paced=True, lone=True, nice=3)
    assert nice == 3 and now == 3
    assert counters["nice_paced_steps"] == 0 and counters["pacer_samples"] == 0


def test_paced_wake_leaves_bulk_found_on_every_pass_alone() -> None:
    counters, now, nice = _serve("paced-wake", 200, paced=False, lone=True)
    assert counters["nice_paced_steps"] == 0
    assert now == nice
