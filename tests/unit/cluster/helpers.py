"""Shared helpers for cluster tests: seeded randomness, "refused and nothing changed", and a
virtual-clock loop of orchestration passes and obedient workers over a ClusterState."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from overlaynet.cluster.state import Change, ClusterError, ClusterState, ErrorKind
from overlaynet.cluster.tasks import TaskState


def seeded_rand(seed: int = 1) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def snapshot(state: ClusterState) -> tuple[list[Change], int]:
    """Everything a state holds, in a comparable order."""
    return sorted(state.records(), key=lambda c: (c.kind, c.key)), state.index


def refused(
    state: ClusterState,
    kind: ErrorKind,
    match: str,
    call: Callable[..., Any],
    *args: Any,
    **kw: Any,
) -> ClusterError:
    """Assert `call` raises a ClusterError of `kind` and leaves `state` exactly as it was."""
    state.take_changes()
    before = snapshot(state)
    with pytest.raises(ClusterError, match=match) as info:
        call(*args, **kw)
    assert info.value.kind is kind
    assert snapshot(state) == before
    assert state.take_changes() == []
    return info.value


# Rounds a convergence may take before a test calls it a livelock.
MAX_ROUNDS = 100


def work(state: ClusterState, status: Mapping[str, str], now: float) -> bool:
    """Every worker on a Ready node does what the managers ask: runs its assigned tasks (once
    `not_before` has passed) and stops those to be shut down, reporting as a worker does."""
    moved = False
    for task in sorted(state.tasks.values(), key=lambda t: t.id):
        if task.node_id is None or status.get(task.node_id) != "Ready" or task.state.final:
            continue
        if task.desired is TaskState.SHUTDOWN:
            if task.state.rank >= TaskState.ASSIGNED.rank:
                state.report_task(task.node_id, task.id, "shutdown", now=now)
                moved = True
        elif (
            task.state is not TaskState.RUNNING
            and task.state.rank >= TaskState.ASSIGNED.rank
            and now >= task.not_before
        ):
            state.report_task(
                task.node_id, task.id, "running", now=now, container_id=f"c-{task.id}"
            )
            moved = True
    return moved


def converge(
    state: ClusterState, status: Mapping[str, str], rand: Callable[[int], bytes], now: float
) -> float:
    """Passes and worker rounds on a virtual clock until nothing changes and no restart delay
    is pending; the time it ended at."""
    for _ in range(MAX_ROUNDS):
        changed = state.orchestrate(status, now=now, rand=rand)
        worked = work(state, status, now)
        if changed or worked:
            now += 1.0
            continue
        waiting = [
            t.not_before
            for t in state.tasks.values()
            if t.live and t.node_id is not None and t.not_before > now
        ]
        if not waiting:
            return now
        now = min(waiting)
    raise AssertionError("no convergence: the orchestration pass and the workers keep changing")
