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

from overlaynet.dataplane.hotpath import DRAIN_BUDGET, NICE_POLICIES, effective_policy
from overlaynet.dataplane.switching import Network

from .test_loop_knobs import VNI, _frame, _Rig, _tcp

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
    policy: str,
    frames: int,
    *,
    paced: bool,
    lone: bool,
    nice: int = LOOPS_NICE,
    rate: float = TEST_RATE,
    settles: int | None = None,
) -> tuple[Counter[str], int, int]:
    """A loop with `policy` and a two-queue TAP takes `frames` frames: ICMP on the latency
    queue when `lone`, TCP on the bulk queue otherwise; one at a time (each `PACE` after the
    previous one's datagram: a wake-up each) when `paced`, all queued at once otherwise with a
    budget of 1 (one pass per frame, every pass finds work). Returns its counters, its
    thread's nice value once it has settled after the last frame (at `settles`, by default its
    configured nice), and its configured nice."""
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
    rig.loop.pacing = {"rate": rate, "sample": TEST_SAMPLE, "quiet": TEST_QUIET}
    rig.loop.add(rig.net)
    try:
        if not paced:
            for n in range(frames):
                sender.send(make(n))
        rig.serve()
        for n in range(frames):
            if paced:
                sender.send(make(n))
            rig.sink.recv(65536)  # every frame crossed (one datagram each)
            if paced:
                time.sleep(PACE)  # the loop is asleep again before the next one comes
        settled = rig.settled_nice(rig.loop.nice if settles is None else settles)
        return rig.loop._counters, settled, rig.loop.nice
    finally:
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


def test_lone_frames_below_the_rate_leave_the_nice_value_alone() -> None:
    """Like pings: samples full of lone passes, but far fewer a second than the rate."""
    counters, now, nice = _serve("paced", 200, paced=True, lone=True, rate=1e6)
    assert counters["pacer_samples"] > 0 and counters["pacer_lone"] > 0
    assert counters["nice_paced_steps"] == 0
    assert now == nice


def test_a_refused_nice_value_runs_the_policy_as_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without CAP_SYS_NICE the steps would change nothing and their counters would lie."""
    real = os.setpriority

    def refuse_negative(which: int, who: int, prio: int) -> None:
        if prio < 0:
            raise PermissionError(1, "Operation not permitted")
        real(which, who, prio)

    monkeypatch.setattr(os, "setpriority", refuse_negative)
    caller = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    counters, now, _nice = _serve("paced", 200, paced=True, lone=True, settles=caller)
    assert counters["priority_refused"] >= 1
    assert counters["pacer_samples"] == 0 and counters["nice_paced_steps"] == 0
    assert now == caller


@pytest.mark.parametrize(
    ("policy", "nice", "niced", "lane", "runs"),
    [
        ("paced", -10, True, False, "paced"),
        ("paced-wake", -10, True, False, "paced-wake"),
        ("paced", -10, True, True, "fixed"),  # the lane's deliveries would read as lone
        ("paced-wake", -10, True, True, "fixed"),
        ("paced", -10, False, False, "fixed"),  # refused: the steps would change nothing
        ("paced", 3, True, False, "fixed"),  # stepping to 0 would raise the loop
        ("paced", 0, True, False, "fixed"),
        ("bulk", -10, True, True, "bulk"),  # the other policies keep their lane behaviour
        ("yield", 0, True, False, "fixed"),
    ],
)
def test_the_policy_the_loop_runs(
    policy: str, nice: int, niced: bool, lane: bool, runs: str
) -> None:
    assert effective_policy(policy, nice, niced, lane=lane) == runs


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
