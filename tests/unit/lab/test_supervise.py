"""The lab supervisor's rule: restart an agent that failed on its own, never one that was stopped
or crashed on purpose (kill -9), with a back-off that grows in a crash loop."""

from __future__ import annotations

import signal

from overlaynet.lab.supervise import FIRST_BACKOFF, HEALTHY_RUN, MAX_BACKOFF, decide


def test_stops_and_deliberate_kills_are_not_undone() -> None:
    for code in (0, -signal.SIGTERM, -signal.SIGINT, -signal.SIGKILL):
        assert decide(code, ran_for=100.0, failures=3).restart is False


def test_failures_restart_with_a_growing_capped_backoff() -> None:
    delays, failures = [], 0
    for _ in range(8):
        verdict = decide(1, ran_for=0.5, failures=failures)
        assert verdict.restart
        delays.append(verdict.delay)
        failures = verdict.failures
    assert delays[0] == FIRST_BACKOFF
    assert delays == sorted(delays) and delays[-1] == MAX_BACKOFF


def test_a_signal_death_other_than_kill_is_a_failure() -> None:
    assert decide(-signal.SIGSEGV, ran_for=1.0, failures=0).restart
    assert decide(-signal.SIGABRT, ran_for=1.0, failures=0).restart


def test_a_long_healthy_run_resets_the_backoff() -> None:
    assert decide(1, ran_for=HEALTHY_RUN, failures=6).delay == FIRST_BACKOFF
