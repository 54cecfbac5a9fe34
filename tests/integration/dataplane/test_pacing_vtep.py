"""The "paced" nice policy through two offload-mode `vtep_main`s (issue 15): pings leave the
loop at its nice value, and so does bulk TCP (it never moves a non-TCP frame: its super-frames
and ACKs go through the TAPs' bulk queues; "paced-wake", the first version, stepped down on it
in benchmarks, not reliably in this 1 s test); a paced UDP stream (`iperf3 -u -b`, in iperf3's
own 1 ms bursts, which "paced-wake" took for bulk) steps the VTEPs' loops down to nice 0 (the
sending one drains the TAP's latency queue on nearly every pass, the receiving one delivers to
it), and once the stream has ended they are back at their nice value."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from overlaynet.lab.testbed import Testbed
from tests.integration.dataplane.paths import TIMEOUT, TwoVteps, iperf3

#: 200 Mb/s of 1400-octet datagrams: ~18,000 a second, far below what the path sustains, so
#: the loops have time to spare even on a busy machine; sent in iperf3's default 1 ms bursts.
#: Each pass moves one or a few of them: thousands of lone passes a second, over
#: `pacing.PACED_RATE`.
PACED = ("-u", "-b", "200M", "-l", "1400")


@pytest.fixture(scope="module")
def lab() -> Iterator[TwoVteps]:
    with Testbed("onet-pc-") as tb:
        yield TwoVteps(tb, ("--offload", "--nice-policy", "paced"), (71, 72))


def _steps(lab: TwoVteps) -> tuple[int, int]:
    """Both VTEPs' steps down to nice 0 and back up."""
    down = up = 0
    for host in (lab.h1, lab.h2):
        counters = lab.stats(host)["counters"]
        assert "priority_refused" not in counters
        down += counters.get("nice_paced_steps", 0)
        up += counters.get("nice_unpaced_steps", 0)
    return down, up


def _samples(lab: TwoVteps) -> list[int]:
    """Each VTEP's pacer samples so far: the pacer judged (a judgement that can step)."""
    return [lab.stats(host)["counters"].get("pacer_samples", 0) for host in (lab.h1, lab.h2)]


def test_pings_leave_the_loop_at_its_nice_value(lab: TwoVteps) -> None:
    before = _samples(lab)
    # 300 pings 10 ms apart: several of the pacer's samples on each VTEP (a pass per
    # request and per reply), at 100 lone passes a second, far below `pacing.PACED_RATE`.
    lab.tb.exec(lab.c1.ns, "ping", "-q", "-c", "300", "-i", "0.01", "-W", "2", lab.c2.ip)
    after = _samples(lab)
    assert all(a > b for a, b in zip(after, before, strict=True)), (before, after)
    assert _steps(lab) == (0, 0)


def test_bulk_tcp_leaves_the_loop_at_its_nice_value(lab: TwoVteps) -> None:
    before = _steps(lab)
    samples = _samples(lab)
    result = iperf3(lab.tb, lab.c1, lab.c2)
    assert result["end"]["sum_received"]["bytes"] > 0
    assert all(a > b for a, b in zip(_samples(lab), samples, strict=True))  # it was judged
    assert _steps(lab) == before


def test_a_paced_udp_stream_steps_down_and_back_once_it_ends(lab: TwoVteps) -> None:
    before, _ = _steps(lab)
    receiver = lab.stats(lab.h2)["counters"].get("nice_paced_steps", 0)
    result = iperf3(lab.tb, lab.c1, lab.c2, extra=PACED)
    assert result["end"]["sum"]["packets"] > 0
    deadline = time.monotonic() + TIMEOUT
    down, up = _steps(lab)
    while up != down:  # the quiet after the stream steps it back: give the loop its moment
        assert time.monotonic() < deadline, f"stepped down {down}, back up only {up}"
        time.sleep(0.1)
        down, up = _steps(lab)
    assert down > before
    # The receiving loop too (it delivers the stream's frames: `_woke`): its iperf3 is the one
    # that lost datagrams at a fixed -10.
    assert lab.stats(lab.h2)["counters"].get("nice_paced_steps", 0) > receiver
