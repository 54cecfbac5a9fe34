"""Reconciliation: from desired services, observed tasks and node states to the actions that
close the gap. Pure and idempotent: once its actions are applied, asking again returns nothing.

What it does, as swarmkit's replicated and global orchestrators, restart supervisor and
constraint enforcer do between them:
- replicated: slots 1..replicas each hold exactly one live task; a missing one is created;
  tasks in slots above `replicas` are shut down, highest slot first (scale down);
- global: one live task on every node that is ready, active and matches the constraints;
- a task that ended by itself (failed, completed, rejected) is replaced per the restart policy
  (condition, max attempts), in the same slot, with the policy's delay as `not_before`;
- a task on a node that is Down, drained, or no longer matches the constraints is shut down
  and replaced at once (no restart delay and whatever the restart condition: the task did not
  fail, its node went away); a task whose node left the swarm is marked orphaned;
- tasks of removed services are shut down; ended tasks beyond the history limit are deleted.
Placement is the scheduler's job: created tasks start unassigned (global ones carry their node).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from overlaynet.cluster.errors import Availability
from overlaynet.cluster.scheduler import Assign, NodeView, Placement, StayPending
from overlaynet.cluster.services import RestartCondition, Service, ServiceMode, matches_all
from overlaynet.cluster.tasks import Task, TaskState, transition

# Docker's --task-history-limit default: ended tasks kept per slot (per node for global).
TASK_HISTORY_LIMIT = 5


@dataclass(frozen=True)
class CreateTask:
    service_id: str
    slot: int | None
    node_id: str | None
    attempt: int
    not_before: float
    spec_version: int
    reason: str


@dataclass(frozen=True)
class ShutdownTask:
    """Desired state becomes shutdown: the worker stops it and reports shutdown."""

    task_id: str
    reason: str


@dataclass(frozen=True)
class OrphanTask:
    """Its node left the swarm, so no worker will ever report on it: it ends here."""

    task_id: str
    reason: str


@dataclass(frozen=True)
class DeleteTask:
    """An ended task beyond the history limit."""

    task_id: str


Action = CreateTask | ShutdownTask | OrphanTask | DeleteTask


def _node_problem(task: Task, service: Service, nodes: Mapping[str, NodeView]) -> str | None:
    """Why a live task must leave its node, or None when it may stay (or has no node yet)."""
    if task.node_id is None:
        return None
    node = nodes.get(task.node_id)
    if node is None:
        return "node left the swarm"
    if not node.ready and not node.unknown:
        return "node is down"
    if node.availability is Availability.DRAIN:
        return "node is drained"
    if not matches_all(service.spec.constraints, node.facts):
        return "node no longer satisfies the service's constraints"
    return None


def _best_first(tasks: Iterable[Task]) -> list[Task]:
    """Live duplicates: keep the one furthest along, then the newest."""
    return sorted(tasks, key=lambda t: (-t.state.rank, -t.created, t.id))


def _starting_beside(live: list[Task]) -> bool:
    """Two live tasks in one slot, the newer made from a later spec and not running yet: a
    start-first update's replacement starting beside the task it replaces."""
    if len(live) != 2:
        return False
    old, new = sorted(live, key=lambda t: (t.created, t.id))
    return new.spec_version > old.spec_version and new.state is not TaskState.RUNNING


def _newest(tasks: Iterable[Task]) -> Task | None:
    return max(tasks, key=lambda t: (t.created, t.id), default=None)


class _Planner:
    def __init__(self, nodes: Mapping[str, NodeView], now: float) -> None:
        self.nodes = nodes
        self.now = now
        self.actions: list[Action] = []

    def stop(self, task: Task, reason: str) -> None:
        if task.node_id is not None and task.node_id not in self.nodes:
            self.actions.append(OrphanTask(task.id, reason))
        else:
            self.actions.append(ShutdownTask(task.id, reason))

    def create(
        self,
        service: Service,
        slot: int | None,
        node_id: str | None,
        attempt: int,
        reason: str,
        not_before: float = 0.0,
    ) -> None:
        self.actions.append(
            CreateTask(service.id, slot, node_id, attempt, not_before, service.version, reason)
        )

    def keep_one(self, service: Service, live: list[Task], slot: int | None) -> bool:
        """Leave one live task in place (shutting down duplicates and a task that must leave
        its node, replacing it); False when there was none."""
        if not live:
            return False
        if _starting_beside(live):
            # A start-first update: the old task serves until the new one runs (update.py).
            return True
        keep, *extra = _best_first(live)
        for t in extra:
            self.stop(t, "duplicate task for this slot")
        problem = _node_problem(keep, service, self.nodes)
        if problem is not None:
            self.stop(keep, problem)
            if slot is not None:
                self.create(service, slot, None, keep.attempt, f"rescheduled: {problem}")
        return True

    def restart(self, service: Service, slot: int | None, history: list[Task]) -> None:
        """No live task in this slot (or on this global node): start one, unless the last one
        ended by itself and the restart policy says no."""
        node_id = None if slot is not None else self._global_node(history)
        last = _newest(history)
        if last is None or last.desired is not TaskState.RUNNING:
            # Never had a task, or we stopped the last one ourselves (scale down, then up).
            attempt = 0 if last is None else last.attempt
            self.create(service, slot, node_id, attempt, "new task")
            return
        policy = service.spec.restart
        if last.state is TaskState.ORPHANED:
            self.create(service, slot, node_id, last.attempt, "rescheduled: node left")
            return
        if policy.condition is RestartCondition.NONE:
            return
        if last.state is TaskState.COMPLETE and policy.condition is not RestartCondition.ANY:
            return
        if policy.max_attempts and last.attempt >= policy.max_attempts:
            return
        self.create(
            service,
            slot,
            node_id,
            last.attempt + 1,
            f"restart after task {last.state.value}",
            not_before=last.updated + policy.delay,
        )

    @staticmethod
    def _global_node(history: list[Task]) -> str | None:
        return history[0].node_id if history else None

    def prune(self, history: Iterable[Task]) -> None:
        ended = sorted((t for t in history if t.state.final), key=lambda t: (-t.created, t.id))
        for t in ended[TASK_HISTORY_LIMIT:]:
            self.actions.append(DeleteTask(t.id))


def reconcile(
    services: Mapping[str, Service],
    tasks: Iterable[Task],
    nodes: Iterable[NodeView],
    *,
    now: float,
) -> list[Action]:
    """The actions that bring the tasks to what the services want, on the nodes as they are."""
    node_map = {n.id: n for n in nodes}
    plan = _Planner(node_map, now)
    by_service: dict[str, list[Task]] = defaultdict(list)
    for t in tasks:
        by_service[t.service_id].append(t)
    for service_id in sorted(by_service.keys() - services.keys()):
        gone = by_service[service_id]
        for t in sorted(gone, key=lambda t: t.id):
            if t.live:
                plan.stop(t, "service removed")
            elif not t.state.final and t.node_id is not None and t.node_id not in node_map:
                plan.stop(t, "node left the swarm")
        plan.prune(gone)
    for service_id in sorted(services):
        service = services[service_id]
        own = by_service.get(service_id, [])
        if service.spec.mode is ServiceMode.GLOBAL:
            _reconcile_global(plan, service, own)
        else:
            _reconcile_replicated(plan, service, own)
        # A task we stopped on a node that has since left will never be reported.
        for t in own:
            stopped = not t.live and not t.state.final
            if stopped and t.node_id is not None and t.node_id not in node_map:
                plan.actions.append(OrphanTask(t.id, "node left the swarm"))
    return plan.actions


def _reconcile_replicated(plan: _Planner, service: Service, own: list[Task]) -> None:
    replicas = service.spec.replicas or 0
    by_slot: dict[int, list[Task]] = defaultdict(list)
    for t in own:
        by_slot[t.slot or 0].append(t)
    # Scale down: the highest slots go first (their tasks are the newest by construction).
    for slot in sorted((s for s in by_slot if s > replicas), reverse=True):
        for t in sorted(by_slot[slot], key=lambda t: t.id):
            if t.live:
                plan.stop(t, "scaled down")
    for slot in range(1, replicas + 1):
        history = by_slot.get(slot, [])
        if not plan.keep_one(service, [t for t in history if t.live], slot):
            plan.restart(service, slot, history)
    for slot in sorted(by_slot):
        plan.prune(by_slot[slot])


def _reconcile_global(plan: _Planner, service: Service, own: list[Task]) -> None:
    by_node: dict[str, list[Task]] = defaultdict(list)
    for t in own:
        by_node[t.node_id or ""].append(t)
    for node_id in sorted(by_node.keys() | plan.nodes.keys()):
        history = by_node.get(node_id, [])
        live = [t for t in history if t.live]
        if plan.keep_one(service, live, None):
            continue
        node = plan.nodes.get(node_id)
        if (
            node is not None
            and node.takes_new_tasks
            and matches_all(service.spec.constraints, node.facts)
        ):
            plan.restart(service, None, history or [_placeholder(service, node_id)])
    for node_id in sorted(by_node):
        plan.prune(by_node[node_id])


def _placeholder(service: Service, node_id: str) -> Task:
    """An empty history that still names the node (restart() reads the node from it)."""
    return Task(
        id="",
        service_id=service.id,
        slot=None,
        node_id=node_id,
        state=TaskState.SHUTDOWN,
        desired=TaskState.SHUTDOWN,
        created=float("-inf"),
        updated=float("-inf"),
    )


def apply_actions(
    tasks: Mapping[str, Task],
    actions: Sequence[Action | Placement],
    *,
    now: float,
    new_id: Callable[[], str],
) -> tuple[dict[str, Task], list[str]]:
    """The reference way to carry out orchestrator and scheduler actions on a task table:
    (tasks created or changed, by id; ids deleted). ClusterState uses the same steps, each
    through its `_put`."""
    changed: dict[str, Task] = {}
    deleted: list[str] = []

    def current(task_id: str) -> Task:
        return changed.get(task_id) or tasks[task_id]

    for action in actions:
        if isinstance(action, CreateTask):
            task = Task(
                id=new_id(),
                service_id=action.service_id,
                slot=action.slot,
                node_id=action.node_id,
                state=TaskState.NEW,
                desired=TaskState.RUNNING,
                created=now,
                updated=now,
                attempt=action.attempt,
                not_before=action.not_before,
                message=action.reason,
                spec_version=action.spec_version,
            )
            changed[task.id] = task
        elif isinstance(action, ShutdownTask):
            task = dataclasses.replace(
                current(action.task_id), desired=TaskState.SHUTDOWN, updated=now
            )
            if task.state.rank < TaskState.ASSIGNED.rank:
                # No worker has it yet (a global task names its node before it is assigned):
                # nobody else will ever report it stopped, so it ends here.
                task = transition(task, TaskState.SHUTDOWN, now=now, message=action.reason)
            changed[task.id] = dataclasses.replace(task, message=action.reason)
        elif isinstance(action, OrphanTask):
            task = transition(
                current(action.task_id), TaskState.ORPHANED, now=now, message=action.reason
            )
            changed[task.id] = task
        elif isinstance(action, DeleteTask):
            changed.pop(action.task_id, None)
            deleted.append(action.task_id)
        elif isinstance(action, Assign):
            task = transition(
                current(action.task_id),
                TaskState.ASSIGNED,
                now=now,
                node_id=action.node_id,
                message="",
            )
            changed[task.id] = task
        elif isinstance(action, StayPending):
            changed[action.task_id] = dataclasses.replace(
                current(action.task_id), message=action.reason, updated=now
            )
    return changed, deleted
