"""Health checks of standalone containers (`run --health-cmd …`), as Docker runs them.

The same state machine and probe as tasks' (agent/health.py: TaskHealth keyed here by
container id instead of task id); the check comes from the container's label
(overlaynet/healthlabel.py), so it survives an agent restart with the container. Unlike a
task, an unhealthy standalone container is only marked: Docker restarts nothing for it.
`ps` and `inspect` read `health_of`.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from overlaynet.agent.health import Health, ProbeResult, TaskHealth, probe_argv
from overlaynet.agent.health import probe as run_probe
from overlaynet.agent.tasks import task_id_of
from overlaynet.errors import ApiError
from overlaynet.healthlabel import HEALTHCHECK_LABEL, from_labels, parse
from overlaynet.model import Container, Status

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent

log = logging.getLogger("overlaynet.agent.container_health")

# The longest the plane sleeps without a poke (`poke()` when containers change): a safety net
# should a change come by a path that does not poke; rare enough to cost an idle host nothing
# (issue 15: a 0.2 s tick woke every idle agent five times a second).
IDLE_RECHECK = 2.0

Probe = Callable[[str, Sequence[str], float], Awaitable[ProbeResult]]


def checked_entries(containers: Iterable[Container]) -> tuple[list[dict[str, Any]], int]:
    """(TaskHealth.follow's entries for the standalone containers with a readable check,
    how many carry an unreadable one). Task containers are the task runner's."""
    entries, bad = [], 0
    for c in containers:
        raw = c.labels.get(HEALTHCHECK_LABEL)
        if raw is None or task_id_of(c) is not None:
            continue
        check = from_labels(c.labels)
        if check is None:
            if parse(raw) is None:
                bad += 1
            continue
        doc = {**check.__dict__, "test": list(check.test)}
        entries.append({"id": c.id, "healthcheck": doc})
    return entries, bad


class ContainerHealth:
    """Keeps each running standalone container's health, probing when due."""

    def __init__(
        self,
        containers: Callable[[], Iterable[Container]],
        probe: Probe,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._containers = containers
        self._probe_fn = probe
        # Wall clock, as the probes' results are stamped (health.probe); tests pass trio's.
        self._clock = clock
        self.health = TaskHealth()
        self.counters: Counter[str] = Counter()
        self._bad: set[str] = set()
        self._poked = trio.Event()

    def step(self, now: float) -> list[str]:
        """Follow the containers; the ids whose probe is due now (marked probing)."""
        containers = list(self._containers())
        entries, bad = checked_entries(containers)
        if bad:
            self.counters["bad_health_labels"] = bad
        running = [c.id for c in containers if c.status == Status.RUNNING]
        self.health.follow(entries, running, now)
        due = self.health.due(now)
        self.health.probing.update(due)
        return due

    def health_of(self, c: Container) -> Health | None:
        return self.health.states.get(c.id)

    def poke(self) -> None:
        """Containers changed (one started, stopped, was created or removed): follow them now."""
        self._poked.set()

    def next_due(self) -> float | None:
        """When the earliest probe not already running is due (wall clock); None: none is."""
        waiting = [
            h.next_probe_at()
            for cid, h in self.health.states.items()
            if cid not in self.health.probing
        ]
        return min(waiting, default=None)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Probe when due; otherwise sleep until the earliest due probe, a poke (containers
        changed, a probe ended) or IDLE_RECHECK, whichever comes first: never a fixed tick."""
        async with trio.open_nursery() as probes:
            task_status.started()
            while True:
                self._poked = trio.Event()
                now = self._clock()
                for cid in self.step(now):
                    probes.start_soon(self._probe, cid)
                due = self.next_due()
                wait = IDLE_RECHECK if due is None else min(IDLE_RECHECK, due - now)
                with trio.move_on_after(max(0.0, wait)):
                    await self._poked.wait()

    async def _probe(self, cid: str) -> None:
        try:
            check = self.health.checks.get(cid)
            if check is None:
                return
            result = await self._probe_fn(cid, probe_argv(check), check.timeout)
            self.counters["health_probes"] += 1
            if result.exit_code != 0:
                self.counters["health_probe_failures"] += 1
            self.health.record(cid, result)
        except ApiError as e:  # the container went away meanwhile
            self.counters["health_probe_errors"] += 1
            log.debug("health probe of %s failed to run: %s", cid, e)
        finally:
            self.health.probing.discard(cid)
            # Its next probe is due an interval from now: the loop takes the new deadline.
            self.poke()


def for_agent(agent: Agent) -> ContainerHealth:
    """The plane for `agent`: its runtime's containers, probed the way `exec` enters them."""

    async def probe(cid: str, argv: Sequence[str], timeout: float) -> ProbeResult:
        rt = agent.runtime
        exec_argv, env = rt.exec_spec(rt.container(cid), argv, (), None)
        return await run_probe(exec_argv, env, timeout)

    return ContainerHealth(lambda: list(agent.runtime.containers.values()), probe)
