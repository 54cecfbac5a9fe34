"""Tasks, the unit a service is made of, and Docker's task states with the moves between them.

A task's observed `state` only moves forward (swarmkit: "a task's state can only increase"):
new → pending → assigned → accepted → preparing → starting → running, then one of the final
states. Reports may skip steps (a worker reports only its latest state), never go back, and a
final state is final. `transition` refuses anything else with a TaskStateError, changing
nothing, so a stale or duplicated report from a worker cannot resurrect a dead task.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from overlaynet.cluster.errors import ClusterError, ErrorKind


class TaskState(StrEnum):
    NEW = "new"
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACCEPTED = "accepted"
    PREPARING = "preparing"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETE = "complete"
    FAILED = "failed"
    SHUTDOWN = "shutdown"
    REJECTED = "rejected"
    ORPHANED = "orphaned"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @property
    def final(self) -> bool:
        return self in FINAL_STATES


_PROGRESS = (
    TaskState.NEW,
    TaskState.PENDING,
    TaskState.ASSIGNED,
    TaskState.ACCEPTED,
    TaskState.PREPARING,
    TaskState.STARTING,
    TaskState.RUNNING,
)
FINAL_STATES = frozenset(
    {
        TaskState.COMPLETE,
        TaskState.FAILED,
        TaskState.SHUTDOWN,
        TaskState.REJECTED,
        TaskState.ORPHANED,
    }
)
_RANK = {s: i for i, s in enumerate(_PROGRESS)} | {s: len(_PROGRESS) for s in FINAL_STATES}

# Which progress states each final state may follow. A task completes only after it ran; a
# worker rejects a task it could not prepare (before it started); a task fails once a worker
# has it; shutdown (stopped on purpose) and orphaned (its node is gone) can end any live task.
_FINAL_FROM: dict[TaskState, frozenset[TaskState]] = {
    TaskState.COMPLETE: frozenset({TaskState.RUNNING}),
    TaskState.REJECTED: frozenset(
        {TaskState.ASSIGNED, TaskState.ACCEPTED, TaskState.PREPARING, TaskState.STARTING}
    ),
    TaskState.FAILED: frozenset(
        {
            TaskState.ASSIGNED,
            TaskState.ACCEPTED,
            TaskState.PREPARING,
            TaskState.STARTING,
            TaskState.RUNNING,
        }
    ),
    TaskState.SHUTDOWN: frozenset(_PROGRESS),
    TaskState.ORPHANED: frozenset(_PROGRESS),
}
# Tasks that hold their node's resources (host ports): assigned and not yet ended.
HOLDING_STATES = frozenset(_PROGRESS[2:])
# Docker counts a replica as up when it runs; starting is on its way (`service ls` 2/3).
UP_STATES = frozenset({TaskState.STARTING, TaskState.RUNNING})


class TaskStateError(ClusterError):
    """A state change a task cannot make (e.g. running → pending, or out of a final state)."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorKind.INVALID, message)


@dataclass(frozen=True)
class Task:
    """One task. `slot` numbers a replicated service's tasks 1..N (a replacement keeps the slot
    of the task it replaces); global tasks have slot None and a fixed `node_id`. `desired` is
    what the managers want (running, or shutdown); `state` is what the worker reported.
    `attempt` counts the restarts of this slot (for --restart-max-attempts); `not_before` is
    the earliest time a worker may start it (the restart delay); `message` is the reason shown
    by `service ps` (why a task is pending, how it failed); `container_id` and `exit_code`
    come from the worker's reports."""

    id: str
    service_id: str
    slot: int | None
    node_id: str | None
    state: TaskState
    desired: TaskState
    created: float
    updated: float
    attempt: int = 0
    not_before: float = 0.0
    message: str = ""
    error: str = ""
    spec_version: int = 1
    # What the worker last reported: its container, and the process's exit status once ended.
    container_id: str = ""
    exit_code: int | None = None

    @property
    def live(self) -> bool:
        """Wanted running and not ended: what counts towards a service's replicas."""
        return self.desired is TaskState.RUNNING and not self.state.final

    @property
    def holds_node(self) -> bool:
        """Placed and not ended: it may hold its node's host ports even while being shut down
        (a replacement waits for the port instead of failing with "port already in use")."""
        return self.node_id is not None and self.state in HOLDING_STATES


def check_transition(old: TaskState, new: TaskState) -> None:
    if old.final:
        raise TaskStateError(f"task is {old.value}, a final state: it cannot become {new.value}")
    if new.final:
        if old not in _FINAL_FROM[new]:
            raise TaskStateError(f"a task cannot go from {old.value} to {new.value}")
        return
    if new.rank <= old.rank:
        raise TaskStateError(
            f"a task's state only moves forward: {old.value} cannot become {new.value}"
        )


def transition(
    task: Task,
    new: TaskState,
    *,
    now: float,
    node_id: str | None = None,
    message: str | None = None,
    error: str | None = None,
) -> Task:
    """The task in state `new`; refuses illegal moves (TaskStateError), and a task past
    pending without a node (only the scheduler's assignment gives it one)."""
    check_transition(task.state, new)
    node = task.node_id if node_id is None else node_id
    if task.node_id is not None and node != task.node_id:
        raise TaskStateError(f"task {task.id} is on node {task.node_id}: it cannot move nodes")
    if node is None and new.rank >= TaskState.ASSIGNED.rank and not new.final:
        raise TaskStateError(f"task {task.id} has no node: it cannot become {new.value}")
    return dataclasses.replace(
        task,
        state=new,
        node_id=node,
        updated=now,
        message=task.message if message is None else message,
        error=task.error if error is None else error,
    )


def task_doc(task: Task) -> dict[str, Any]:
    doc = dataclasses.asdict(task)
    doc["state"] = task.state.value
    doc["desired"] = task.desired.value
    return doc


def task_from_doc(doc: dict[str, Any]) -> Task:
    return Task(**{**doc, "state": TaskState(doc["state"]), "desired": TaskState(doc["desired"])})


def task_name(service_name: str, task: Task) -> str:
    """`service ps`'s NAME: `web.2` for a replica, `web.<node id>` for a global task."""
    return f"{service_name}.{task.slot if task.slot is not None else task.node_id}"
