"""Health checks of running tasks: Docker's state machine (pure) and its probe (a bounded exec).

`Health` is daemon/health.go's logic with time passed in: starting until a probe passes,
healthy after a passing probe, unhealthy after `retries` failures in a row; failures while
still starting and within the start period do not count; the last 5 probes are kept with
their output (at most 4 KiB each). `probe` runs the check inside the container's namespaces
the way `exec` enters them (runtime.exec_spec builds the nsenter command) with a hard timeout,
so a hanging check is killed and recorded as Docker records it.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import trio

from overlaynet.cluster.errors import ClusterError
from overlaynet.cluster.services import HealthCheck

# daemon/health.go: maxLogEntries and maxOutputLen.
LOG_ENTRIES = 5
OUTPUT_MAX = 4096
# The error a swarm task fails with when its container became unhealthy (moby's
# daemon/cluster/executor/container: ErrContainerUnhealthy, wrapped as a non-zero exit).
UNHEALTHY_ERROR = "task: non-zero exit (1): dockerexec: unhealthy container"
# Docker's exit code for a probe that could not run or was killed at its timeout.
PROBE_ERROR_EXIT = -1


class HealthStatus(StrEnum):
    """types.Health.Status, and `ps`'s suffix for each."""

    STARTING = "starting"
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"

    @property
    def ps_suffix(self) -> str:
        """`Up 3 seconds (healthy)`: what `ps` adds to the status column."""
        return "(health: starting)" if self is HealthStatus.STARTING else f"({self.value})"


@dataclass(frozen=True)
class ProbeResult:
    """One probe, as Docker's State.Health.Log entry: times, exit code, output."""

    start: float
    end: float
    exit_code: int
    output: str


@dataclass(frozen=True)
class Health:
    """A running container's health. `started_at` is when its process started."""

    check: HealthCheck
    started_at: float
    status: HealthStatus = HealthStatus.STARTING
    failing_streak: int = 0
    log: tuple[ProbeResult, ...] = ()

    def next_probe_at(self) -> float:
        """Docker probes `interval` after the start, then `interval` after each probe ends."""
        last = self.log[-1].end if self.log else self.started_at
        return last + self.check.interval

    def record(self, result: ProbeResult) -> Health:
        """The health after one probe (daemon/health.go handleProbeResult)."""
        log = (*self.log, result)[-LOG_ENTRIES:]
        if result.exit_code == 0:
            return dataclasses.replace(self, status=HealthStatus.HEALTHY, failing_streak=0, log=log)
        in_start_period = result.start - self.started_at < self.check.start_period
        if self.status is HealthStatus.STARTING and in_start_period:
            # A slow starter's failures do not count until it first passed or the period ends.
            return dataclasses.replace(self, log=log)
        streak = self.failing_streak + 1
        status = HealthStatus.UNHEALTHY if streak >= self.check.retries else self.status
        return dataclasses.replace(self, status=status, failing_streak=streak, log=log)


def probe_argv(check: HealthCheck) -> list[str]:
    """The command a probe runs inside the container: CMD-SHELL through /bin/sh -c, CMD as is."""
    if check.disabled:
        raise ValueError("health check disabled (NONE): nothing to run")
    if check.test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", check.test[1]]
    return list(check.test[1:])


def _timestamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def health_doc(health: Health) -> dict[str, Any]:
    """State.Health as `docker inspect` shows it."""
    return {
        "Status": health.status.value,
        "FailingStreak": health.failing_streak,
        "Log": [
            {
                "Start": _timestamp(r.start),
                "End": _timestamp(r.end),
                "ExitCode": r.exit_code,
                "Output": r.output,
            }
            for r in health.log
        ],
    }


def _seconds_text(seconds: float) -> str:
    """Go's time.Duration text for whole and fractional seconds: 30s, 1.5s, 500ms."""
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{math.floor(seconds * 1000 + 0.5)}ms"


async def probe(
    argv: Sequence[str],
    env: Mapping[str, str],
    timeout: float,
    *,
    clock: Callable[[], float] = time.time,
) -> ProbeResult:
    """Run one probe (`argv` already enters the container) with a hard `timeout`; the process
    is killed at the timeout and the result says so, as Docker's does. Output is stdout then
    stderr, cut at OUTPUT_MAX."""
    now = clock
    start = now()
    try:
        with trio.move_on_after(timeout) as scope:
            proc = await trio.run_process(
                list(argv),
                env=dict(env),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                stdin=subprocess.DEVNULL,
            )
    except OSError as e:
        return ProbeResult(start, now(), PROBE_ERROR_EXIT, f"probe could not run: {e}"[:OUTPUT_MAX])
    if scope.cancelled_caught:
        text = f"Health check exceeded timeout ({_seconds_text(timeout)})"
        return ProbeResult(start, now(), PROBE_ERROR_EXIT, text)
    output = (proc.stdout + proc.stderr)[:OUTPUT_MAX].decode("utf-8", "replace")
    return ProbeResult(start, now(), proc.returncode, output)


def check_from_doc(doc: Any) -> HealthCheck | None:
    """A task's `healthcheck` as `task.assigned` carries it (spec_doc's form); None when it
    has none, is disabled, or is unreadable (a bad entry never stops the task)."""
    if not isinstance(doc, Mapping):
        return None
    try:
        check = HealthCheck(**{**doc, "test": tuple(doc["test"])})
    except (KeyError, TypeError, ValueError, ClusterError):
        return None
    return None if check.disabled else check


class TaskHealth:
    """The health of this node's task containers that have a check, for the task runner: which
    tasks it must not report running yet (not healthy), which probes are due, which tasks
    became unhealthy. Time is passed in; the runner runs the probes."""

    def __init__(self) -> None:
        self.checks: dict[str, HealthCheck] = {}
        self.states: dict[str, Health] = {}
        self.probing: set[str] = set()
        self.bad_checks = 0

    def follow(
        self, tasks: Iterable[Mapping[str, Any]], running: Iterable[str], now: float
    ) -> None:
        """Take `task.assigned`'s task entries and the ids of this host's running task
        containers: a container seen running for the first time starts `starting`; one that is
        no longer running forgets its health (a restart starts over, as Docker's does)."""
        checks: dict[str, HealthCheck] = {}
        for entry in tasks:
            raw = entry.get("healthcheck")
            check = check_from_doc(raw)
            if check is not None:
                checks[str(entry.get("id"))] = check
            elif raw is not None and not (isinstance(raw, Mapping) and raw.get("test") == ["NONE"]):
                self.bad_checks += 1
        self.checks = checks
        up = set(running) & checks.keys()
        self.states = {tid: h for tid, h in self.states.items() if tid in up}
        for tid in up - self.states.keys():
            self.states[tid] = Health(checks[tid], started_at=now)

    def holds(self, task_id: str) -> bool:
        """True while a task with a check is not healthy: the managers hear `running` (and the
        task joins DNS and its VIPs) only once a probe passed, as swarmkit's executor does."""
        if task_id not in self.checks:
            return False
        health = self.states.get(task_id)
        return health is None or health.status is not HealthStatus.HEALTHY

    def due(self, now: float) -> list[str]:
        return sorted(
            tid
            for tid, h in self.states.items()
            if tid not in self.probing and now >= h.next_probe_at()
        )

    def record(self, task_id: str, result: ProbeResult) -> None:
        health = self.states.get(task_id)
        if health is not None:
            self.states[task_id] = health.record(result)

    def unhealthy(self) -> list[str]:
        return sorted(t for t, h in self.states.items() if h.status is HealthStatus.UNHEALTHY)

    def status(self, task_id: str) -> HealthStatus | None:
        health = self.states.get(task_id)
        return None if health is None else health.status
