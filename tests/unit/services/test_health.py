"""Health checks: Docker's state machine (starting, healthy, unhealthy, start period, the last
five probes) and the probe's bounded run (exit code, output, timeout)."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.agent.health import (
    LOG_ENTRIES,
    OUTPUT_MAX,
    PROBE_ERROR_EXIT,
    Health,
    HealthStatus,
    ProbeResult,
    health_doc,
    probe,
    probe_argv,
)
from overlaynet.cluster.services import HealthCheck

CHECK = HealthCheck(("CMD-SHELL", "true"), interval=2.0, timeout=1.0, retries=3)


def result(at: float, code: int, output: str = "") -> ProbeResult:
    return ProbeResult(at, at + 0.1, code, output)


def test_starts_starting_and_one_passing_probe_makes_it_healthy() -> None:
    h = Health(CHECK, started_at=100.0)
    assert h.status is HealthStatus.STARTING and h.next_probe_at() == 102.0
    h = h.record(result(102.0, 0, "ok"))
    assert (h.status, h.failing_streak) == (HealthStatus.HEALTHY, 0)
    assert h.next_probe_at() == 102.1 + 2.0


def test_retries_failures_in_a_row_make_it_unhealthy_and_a_pass_resets_the_streak() -> None:
    h = Health(CHECK, started_at=0.0).record(result(2.0, 0))
    h = h.record(result(4.0, 1)).record(result(6.0, 1))
    assert (h.status, h.failing_streak) == (HealthStatus.HEALTHY, 2)
    h = h.record(result(8.0, 0)).record(result(10.0, 1)).record(result(12.0, 1))
    assert h.status is HealthStatus.HEALTHY
    h = h.record(result(14.0, 1))
    assert (h.status, h.failing_streak) == (HealthStatus.UNHEALTHY, 3)


def test_failures_in_the_start_period_do_not_count_until_the_first_pass() -> None:
    check = HealthCheck(("CMD", "true"), interval=1.0, retries=1, start_period=10.0)
    h = Health(check, started_at=0.0)
    for at in range(1, 10):
        h = h.record(result(float(at), 1))
    assert (h.status, h.failing_streak) == (HealthStatus.STARTING, 0)
    assert h.record(result(10.0, 1)).status is HealthStatus.UNHEALTHY
    # Once healthy, a failure counts even inside the start period.
    assert h.record(result(5.0, 0)).record(result(6.0, 1)).status is HealthStatus.UNHEALTHY


@given(st.lists(st.integers(0, 2), max_size=40))
def test_the_log_keeps_the_last_five_probes(codes: list[int]) -> None:
    h = Health(CHECK, started_at=0.0)
    results = [result(float(i), c) for i, c in enumerate(codes)]
    for r in results:
        h = h.record(r)
    assert h.log == tuple(results[-LOG_ENTRIES:])
    # Docker's rules replayed by hand (no start period here): a pass is healthy and resets.
    streak, status = 0, HealthStatus.STARTING
    for c in codes:
        if c == 0:
            streak, status = 0, HealthStatus.HEALTHY
        else:
            streak += 1
            status = HealthStatus.UNHEALTHY if streak >= 3 else status
    assert (h.status, h.failing_streak) == (status, streak)


def test_ps_suffix_and_inspect_document_are_dockers() -> None:
    assert HealthStatus.STARTING.ps_suffix == "(health: starting)"
    assert HealthStatus.HEALTHY.ps_suffix == "(healthy)"
    assert HealthStatus.UNHEALTHY.ps_suffix == "(unhealthy)"
    doc = health_doc(Health(CHECK, 0.0).record(ProbeResult(0.0, 1.5, 1, "no\n")))
    assert doc == {
        "Status": "starting",
        "FailingStreak": 1,
        "Log": [
            {
                "Start": "1970-01-01T00:00:00Z",
                "End": "1970-01-01T00:00:01.500000Z",
                "ExitCode": 1,
                "Output": "no\n",
            }
        ],
    }


def test_probe_argv_forms() -> None:
    assert probe_argv(HealthCheck(("CMD-SHELL", "wget -q -O- x"))) == [
        "/bin/sh",
        "-c",
        "wget -q -O- x",
    ]
    assert probe_argv(HealthCheck(("CMD", "cat", "/ok"))) == ["cat", "/ok"]


async def test_probe_keeps_exit_code_and_output_bounded() -> None:
    r = await probe(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], {}, 10.0)
    assert (r.exit_code, r.output) == (3, "out\nerr\n") and r.end >= r.start
    big = await probe(["/bin/sh", "-c", f"head -c {OUTPUT_MAX * 3} /dev/zero"], {}, 10.0)
    assert big.exit_code == 0 and len(big.output) == OUTPUT_MAX


async def test_a_probe_past_its_timeout_is_killed_and_recorded_as_dockers() -> None:
    with trio.fail_after(20):
        r = await probe(["sleep", "30"], {}, 0.2)
    assert r.exit_code == PROBE_ERROR_EXIT
    assert r.output == "Health check exceeded timeout (200ms)"


async def test_a_probe_that_cannot_run_is_a_failure_not_a_crash() -> None:
    r = await probe(["/nonexistent/check"], {}, 5.0)
    assert r.exit_code == PROBE_ERROR_EXIT and "could not run" in r.output
