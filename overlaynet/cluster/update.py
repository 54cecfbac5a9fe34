"""Rolling updates and rollbacks: which tasks to replace now, and when an update is over.

swarmkit's updater, pure and driven by the leader's orchestration pass (time passed in). A
spec change that needs new tasks (`service update --image …`, `--force`, `service rollback`)
starts an UpdateStatus naming the first service version whose tasks carry the new spec; a task
made from an older version is outdated. Each pass `plan` returns the actions for this moment:

- stop-first (Docker's default): shut an outdated task down; the orchestrator's next step
  sees its slot empty and starts a task of the current version there;
- start-first: start the new task beside the old one, and shut the old one down only once
  the new one runs (the worker reports running only once a health check passed);
- at most `parallelism` slots are in flight at once (0: all), a slot being in flight from the
  moment its old task is told to stop (or its new task is made) until its new task runs;
  `delay` seconds pass after a slot finishes before the next one starts;
- a new task that fails (or ends by itself) counts against `max_failure_ratio` of the slots;
  above it the failure action applies: pause, continue, or rollback (never a rollback of a
  rollback: that pauses, as swarmkit does);
- the update completes once every slot runs a new task and `monitor` seconds have passed
  since the last one started running.

The state machine and messages are swarmkit's (api.UpdateStatus, manager/orchestrator/update).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from overlaynet.cluster.errors import ClusterError, ErrorKind
from overlaynet.cluster.orchestrator import Action, CreateTask, ShutdownTask
from overlaynet.cluster.services import (
    FailureAction,
    Service,
    ServiceMode,
    ServiceSpec,
    UpdateConfig,
    UpdateOrder,
    spec_doc,
    spec_from_doc,
)
from overlaynet.cluster.tasks import Task, TaskState

# Spec fields whose change does not replace tasks: swarmkit compares task specs only, and the
# replica count and the update/rollback policies are not part of a task's spec.
_NOT_IN_TASKS = frozenset({"replicas", "update", "rollback"})
# Ended states that count as a failed update of a slot: the new task did not keep running.
_FAILED_STATES = frozenset({TaskState.FAILED, TaskState.REJECTED, TaskState.COMPLETE})


class UpdateState(StrEnum):
    """api.UpdateStatus.UpdateState, as `service inspect` shows it."""

    UPDATING = "updating"
    PAUSED = "paused"
    COMPLETED = "completed"
    ROLLBACK_STARTED = "rollback_started"
    ROLLBACK_PAUSED = "rollback_paused"
    ROLLBACK_COMPLETED = "rollback_completed"

    @property
    def active(self) -> bool:
        return self in (UpdateState.UPDATING, UpdateState.ROLLBACK_STARTED)

    @property
    def rollback(self) -> bool:
        return self in (
            UpdateState.ROLLBACK_STARTED,
            UpdateState.ROLLBACK_PAUSED,
            UpdateState.ROLLBACK_COMPLETED,
        )


@dataclass(frozen=True)
class UpdateStatus:
    """A service's rollout. `target_version`: tasks made from this service version or a later
    one carry the new spec (a later `service scale` bumps the version without a rollout).
    `previous_spec` is what `service rollback` returns to (Docker's PreviousSpec)."""

    state: UpdateState
    started_at: float
    target_version: int
    previous_spec: ServiceSpec | None = None
    completed_at: float | None = None
    message: str = ""

    @property
    def config_key(self) -> str:
        return "rollback" if self.state.rollback else "update"


def needs_rollout(old: ServiceSpec, new: ServiceSpec) -> bool:
    """Whether going from `old` to `new` replaces tasks (anything but replicas and policies)."""
    return any(
        getattr(old, f) != getattr(new, f)
        for f in old.__dataclass_fields__
        if f not in _NOT_IN_TASKS
    )


def start(
    previous: ServiceSpec, target_version: int, *, now: float, rollback: bool = False, why: str = ""
) -> UpdateStatus:
    """A rollout that has just begun, towards the service's `target_version`."""
    if rollback:
        state, message = UpdateState.ROLLBACK_STARTED, why or "manually requested rollback"
    else:
        state, message = UpdateState.UPDATING, why or "update in progress"
    return UpdateStatus(state, now, target_version, previous, None, message)


@dataclass(frozen=True)
class UpdatePlan:
    """What one pass does: task actions, the status after them, and whether the service must
    roll back now (the caller swaps the spec for `status.previous_spec` and calls `start`)."""

    actions: list[Action] = field(default_factory=list)
    status: UpdateStatus | None = None
    rollback: bool = False
    # When the next pass has something to do that no report will trigger (delay, monitor).
    wake_at: float | None = None


def _unit(task: Task) -> int | str:
    """A slot (replicated) or a node (global): one task of the service lives there."""
    return task.slot if task.slot is not None else f"node:{task.node_id}"


def _running_since(task: Task) -> float:
    # A running task's `updated` is when the worker reported it running, its last change.
    return task.updated


def plan(
    service: Service, status: UpdateStatus | None, tasks: Iterable[Task], *, now: float
) -> UpdatePlan:
    """The actions of a rollout at `now`; nothing unless one is active."""
    if status is None or not status.state.active:
        return UpdatePlan(status=status)
    config: UpdateConfig = getattr(service.spec, status.config_key)
    target = status.target_version
    units: dict[int | str, list[Task]] = defaultdict(list)
    failed: list[Task] = []
    for t in tasks:
        if t.service_id != service.id:
            continue
        units[_unit(t)].append(t)
        # Failed/rejected/complete are never what a shutdown ends in, so these tasks ended by
        # themselves (their desired state may since have become shutdown: replaced).
        ended_by_itself = t.state in _FAILED_STATES
        if t.spec_version >= target and ended_by_itself and t.updated >= status.started_at:
            failed.append(t)
    if service.spec.mode is ServiceMode.REPLICATED:
        wanted = set(range(1, (service.spec.replicas or 0) + 1))
        # Slots above the replica count are the scaler's, not the updater's.
        units = {k: v for k, v in units.items() if k in wanted}
    total = max(1, len(units))
    over = failed and len(failed) / total > config.max_failure_ratio
    if over and config.failure_action is not FailureAction.CONTINUE:
        first = min(failed, key=lambda t: (t.updated, t.id))
        return _on_failure(status, config, first, now)
    actions: list[Action] = []
    todo: list[tuple[int | str, Task]] = []
    in_flight = 0
    last_done = float("-inf")
    last_running = status.started_at
    for key in sorted(units, key=str):
        history = units[key]
        live = [t for t in history if t.live]
        new = [t for t in live if t.spec_version >= target]
        old = [t for t in live if t.spec_version < target]
        stopping = [
            t
            for t in history
            if not t.live and not t.state.final and t.spec_version < target and t.node_id
        ]
        running_new = [t for t in new if t.state is TaskState.RUNNING]
        for t in running_new:
            if t.created >= status.started_at:
                last_done = max(last_done, _running_since(t))
                last_running = max(last_running, _running_since(t))
        if running_new and old:
            # start-first: the new task runs, so the old one may go.
            actions += [ShutdownTask(t.id, "update: replaced by a running task") for t in old]
            in_flight += 1
        elif stopping or (new and not running_new):
            in_flight += 1
        elif old and not new:
            todo.append((key, max(old, key=lambda t: (t.created, t.id))))
    limit = config.parallelism or len(todo)
    waiting_delay = config.delay > 0 and now < last_done + config.delay
    wake_at: float | None = last_done + config.delay if todo and waiting_delay else None
    if not waiting_delay:
        for _key, task in todo[: max(0, limit - in_flight)]:
            actions.append(_replace(service, task, config.order))
            in_flight += 1
            if config.delay > 0:
                # The delay separates one slot's finish from the next slot's start.
                break
    if todo or in_flight or actions:
        return UpdatePlan(actions, status, wake_at=wake_at)
    done_at = last_running + config.monitor
    if now < done_at:
        return UpdatePlan([], status, wake_at=done_at)
    finished = dataclasses.replace(
        status,
        state=UpdateState.ROLLBACK_COMPLETED if status.state.rollback else UpdateState.COMPLETED,
        completed_at=now,
        message="rollback completed" if status.state.rollback else "update completed",
    )
    return UpdatePlan([], finished)


def _replace(service: Service, old: Task, order: UpdateOrder) -> Action:
    if order is UpdateOrder.START_FIRST:
        return CreateTask(
            service.id,
            old.slot,
            old.node_id if old.slot is None else None,
            old.attempt,
            0.0,
            service.version,
            "update: start-first",
        )
    return ShutdownTask(old.id, "update: stop-first")


def _on_failure(status: UpdateStatus, config: UpdateConfig, task: Task, now: float) -> UpdatePlan:
    if status.state.rollback:
        # swarmkit: never roll back a rollback.
        paused = dataclasses.replace(
            status,
            state=UpdateState.ROLLBACK_PAUSED,
            message=f"rollback paused due to failure or early termination of task {task.id}",
        )
        return UpdatePlan([], paused)
    if config.failure_action is FailureAction.ROLLBACK:
        message = f"update rolled back due to failure or early termination of task {task.id}"
        return UpdatePlan([], dataclasses.replace(status, message=message), rollback=True)
    paused = dataclasses.replace(
        status,
        state=UpdateState.PAUSED,
        message=f"update paused due to failure or early termination of task {task.id}",
    )
    return UpdatePlan([], paused)


def rollback_spec(service: Service, status: UpdateStatus | None) -> ServiceSpec:
    """The spec `service rollback` returns to; a ClusterError when there is none."""
    if status is None or status.previous_spec is None:
        raise ClusterError(
            ErrorKind.CONFLICT, f"service {service.spec.name} has no previous spec to roll back to"
        )
    # The replica count is not rolled back by swarmkit either: scaling is not an update.
    return dataclasses.replace(status.previous_spec, replicas=service.spec.replicas)


# ----- documents (the store keeps JSON) -----


def status_doc(status: UpdateStatus) -> dict[str, Any]:
    return {
        "state": status.state.value,
        "started_at": status.started_at,
        "target_version": status.target_version,
        "previous_spec": None if status.previous_spec is None else spec_doc(status.previous_spec),
        "completed_at": status.completed_at,
        "message": status.message,
    }


def status_from_doc(doc: Mapping[str, Any]) -> UpdateStatus:
    previous = doc.get("previous_spec")
    return UpdateStatus(
        state=UpdateState(doc["state"]),
        started_at=float(doc["started_at"]),
        target_version=int(doc["target_version"]),
        previous_spec=None if previous is None else spec_from_doc(previous),
        completed_at=doc.get("completed_at"),
        message=str(doc.get("message", "")),
    )


class DrainWatch:
    """Whether every node has stopped sending traffic to a task that is being stopped, so its
    worker may stop the process (moby#30321, #26672: Docker stops it while nodes still balance
    to it). Each `task.assigned` answer lists only running, wanted tasks as a service's backends;
    a worker applies an answer to its DNS and load balancers before it asks again, so a node's
    previous answer is applied by the time it asks. A task is drained once every Ready node has
    applied an answer made at or after the index where the task was first seen leaving."""

    def __init__(self) -> None:
        self._answered: dict[str, int] = {}  # node id -> index of its last answer
        self._applied: dict[str, int] = {}  # node id -> index of the answer before that
        self._since: dict[str, int] = {}  # task id -> index when first seen leaving

    def answered(self, node_id: str, index: int) -> None:
        """`node_id` asked again and gets an answer at `index`."""
        self.applied(node_id, self._answered.get(node_id, -1))
        self._answered[node_id] = index

    def applied(self, node_id: str, index: int) -> None:
        """`node_id` says it has applied the answer at `index` (a long-poll's `index`
        argument: it asks only for what came after), which is exact where `answered` infers."""
        self._applied[node_id] = max(self._applied.get(node_id, -1), index)

    def drained(self, task_id: str, index: int, ready_nodes: Iterable[str]) -> bool:
        since = self._since.setdefault(task_id, index)
        return all(self._applied.get(n, -1) >= since for n in ready_nodes)

    def forget(self, leaving: Iterable[str]) -> None:
        """Keep only the tasks still leaving (the rest ended or went)."""
        keep = set(leaving)
        self._since = {t: i for t, i in self._since.items() if t in keep}
