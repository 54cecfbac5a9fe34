"""A whole swarm's task life on a virtual clock: orchestrator, allocator, scheduler, workers.

The managers' part is the real code (reconcile, schedule, apply_actions); the allocator and the
workers are the simplest stand-ins that honour the task state rules: the allocator moves new
tasks to pending, a worker on a ready node runs what is assigned to it (once `not_before` has
passed) and stops what is to be shut down. A node that is down reports nothing.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence

from overlaynet.cluster.orchestrator import Action, apply_actions, reconcile
from overlaynet.cluster.scheduler import NodeView, Placement, schedule
from overlaynet.cluster.services import NodeFacts, Service, ServiceSpec
from overlaynet.cluster.state import Availability, Role
from overlaynet.cluster.tasks import Task, TaskState, transition

# Rounds a convergence may take before the test calls it a livelock.
MAX_ROUNDS = 200


def node(name: str, *, ready: bool = True, availability: str = "active", **labels: str) -> NodeView:
    return NodeView(
        NodeFacts(id=name, hostname=name, role=Role.WORKER, labels=labels),
        Availability(availability),
        ready,
    )


class Swarm:
    def __init__(self, nodes: Iterable[NodeView], seed: int = 1) -> None:
        self.nodes = {n.id: n for n in nodes}
        self.services: dict[str, Service] = {}
        self.tasks: dict[str, Task] = {}
        self.now = 0.0
        self._rng = random.Random(seed)
        self._ids = 0

    # ----- the outside world -----

    def add_service(self, spec: ServiceSpec, service_id: str | None = None) -> Service:
        sid = service_id or spec.name
        service = Service(sid, spec, self.now, self.now)
        self.services[sid] = service
        return service

    def scale(self, service_id: str, replicas: int) -> None:
        old = self.services[service_id]
        spec = dataclasses.replace(old.spec, replicas=replicas)
        self.services[service_id] = dataclasses.replace(old, spec=spec, version=old.version + 1)

    def set_node(self, name: str, **changes: object) -> None:
        n = self.nodes[name]
        if "availability" in changes:
            changes["availability"] = Availability(str(changes["availability"]))
        self.nodes[name] = dataclasses.replace(n, **changes)  # type: ignore[arg-type]

    def fail(self, task_id: str, state: TaskState = TaskState.FAILED) -> None:
        self.tasks[task_id] = transition(self.tasks[task_id], state, now=self.now, error="boom")

    # ----- the managers -----

    def rand(self, n: int) -> bytes:
        return self._rng.randbytes(n)

    def new_id(self) -> str:
        self._ids += 1
        return f"t{self._ids:04d}"

    def orchestrate(self) -> list[Action]:
        return reconcile(self.services, self.tasks.values(), self.nodes.values(), now=self.now)

    def placements(self) -> list[Placement]:
        return schedule(self.services, self.tasks.values(), self.nodes.values(), rand=self.rand)

    def _apply(self, actions: Sequence[Action | Placement]) -> None:
        changed, deleted = apply_actions(self.tasks, actions, now=self.now, new_id=self.new_id)
        self.tasks.update(changed)
        for task_id in deleted:
            self.tasks.pop(task_id, None)

    def _allocate(self) -> bool:
        fresh = [t for t in self.tasks.values() if t.state is TaskState.NEW]
        for t in fresh:
            self.tasks[t.id] = transition(t, TaskState.PENDING, now=self.now)
        return bool(fresh)

    def _work(self) -> bool:
        moved = False
        for t in list(self.tasks.values()):
            n = self.nodes.get(t.node_id or "")
            if n is None or not n.ready or t.state.final:
                continue
            if t.desired is TaskState.SHUTDOWN:
                self.tasks[t.id] = transition(t, TaskState.SHUTDOWN, now=self.now)
                moved = True
            elif (
                TaskState.PENDING.rank < t.state.rank < TaskState.RUNNING.rank
                and self.now >= t.not_before
            ):
                self.tasks[t.id] = transition(t, TaskState.RUNNING, now=self.now)
                moved = True
        return moved

    def round(self) -> bool:
        """One pass of everything; True if anything changed."""
        actions = self.orchestrate()
        self._apply(actions)
        allocated = self._allocate()
        placements = self.placements()
        self._apply(placements)
        worked = self._work()
        return bool(actions or placements or allocated or worked)

    def converge(self) -> int:
        """Rounds until nothing changes and no restart delay is still running."""
        for rounds in range(MAX_ROUNDS):
            if self.round():
                self.now += 1.0
                continue
            waiting = [
                t.not_before
                for t in self.tasks.values()
                if t.live and t.node_id is not None and t.not_before > self.now
            ]
            if not waiting:
                return rounds
            self.now = min(waiting)
        raise AssertionError("no convergence: the orchestrator and the workers keep changing")

    # ----- views -----

    def of(self, service_id: str) -> list[Task]:
        return sorted(
            (t for t in self.tasks.values() if t.service_id == service_id), key=lambda t: t.id
        )

    def live(self, service_id: str) -> list[Task]:
        return [t for t in self.of(service_id) if t.live]

    def running(self, service_id: str) -> list[Task]:
        return [t for t in self.live(service_id) if t.state is TaskState.RUNNING]
