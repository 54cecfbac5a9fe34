"""The hot loop under the "paced" nice policy (issue 15): lone frames that wake it one at a time,
in a stream, step its thread down to nice 0 and the stream's end steps it back; frames that the
loop finds queued pass after pass (bulk) and a few lone frames leave its nice value alone.
The pacer's rate threshold is lowered so that a test's Python sender counts as a stream."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

from overlaynet.dataplane.hotpath import DRAIN_BUDGET, NICE_POLICIES

from .test_loop_knobs import TIMEOUT, _frame, _Rig

#: A test sender manages thousands of frames a second, a loaded machine maybe a few hundred:
#: 20 wake-ups a second counts as paced here (the default is `pacing.PACED_RATE`).
TEST_RATE = 20.0
#: The pacer's sample (passes): small, so a few hundred frames make several samples.
TEST_SAMPLE = 16
#: Seconds between a paced test stream's frames (after each one crossed): 1000 a second at
#: most, well above `TEST_RATE`; long enough for the loop to go back to sleep in between.
PACE = 0.001
#: Stepped down, the loop sleeps this long without work before it takes its nice back.
TEST_QUIET = 0.05


def _serve_paced(frames: int, *, paced: bool) -> tuple[Counter[str], int, int]:
    """A loop with the "paced" policy takes `frames` ICMP
    frames, one at a time (each `PACE` after the previous one's datagram: a wake-up each) when
    `paced`, all queued at once otherwise with a budget of 1 (one pass per frame, every pass
    finds work: bulk). Returns its counters, its thread's nice value once
    it has settled after the last frame, and its configured nice value."""
    # A paced frame's drain sees the queue run empty (a budget of 1 would carry it to a
    # second pass that finds it: not the single pass a real lone frame takes).
    rig = _Rig(budget=DRAIN_BUDGET if paced else 1)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    # A nice value above the caller's and distinct from 0: both steps are visible.
    rig.loop.nice = min(19, max(caller, 0) + 3)
    rig.loop.nice_policy = "paced"
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
                rig.bridge.send(_frame(n))
        rig.loop.arm()
        thread.start()
        for n in range(frames):
            if paced:
                rig.bridge.send(_frame(n))
            rig.sink.recv(65536)  # every frame crossed (ICMP: one datagram each)
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


def test_paced_is_a_nice_policy() -> None:
    assert "paced" in NICE_POLICIES


def test_a_stream_of_lone_frames_steps_down_and_its_end_steps_back() -> None:
    counters, now, nice = _serve_paced(200, paced=True)
    assert counters["nice_paced_steps"] >= 1
    assert counters["nice_unpaced_steps"] == counters["nice_paced_steps"]
    assert now == nice
    assert "priority_refused" not in counters


def test_bulk_found_on_every_pass_leaves_the_nice_value_alone() -> None:
    counters, now, nice = _serve_paced(200, paced=False)
    assert counters["nice_paced_steps"] == 0
    assert now == nice


def test_a_few_lone_frames_leave_the_nice_value_alone() -> None:
    """Fewer frames than one sample: no rate to judge, like a ping."""
    counters, _now, _nice = _serve_paced(TEST_SAMPLE // 2, paced=True)
    assert counters["nice_paced_steps"] == 0
