"""The rolling-update planner (cluster/update.py) driven with the real orchestrator and
scheduler on a virtual clock: parallelism, order, delay, monitor, failure actions, rollback."""

from __future__ import annotations

import dataclasses
import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.cluster import update
from overlaynet.cluster.orchestrator import CreateTask, ShutdownTask
from overlaynet.cluster.services import ServiceSpec, UpdateConfig
from overlaynet.cluster.tasks import TaskState, transition
from overlaynet.cluster.update import UpdateState, UpdateStatus

from .sim import Swarm, node

NODES = ["node1", "node2", "node3"]
# Rounds an update may take before the test calls it stuck.
MAX_ROUNDS = 400


class UpdatingSwarm(Swarm):
    """The sim's swarm with the updater's pass before reconciliation (as ClusterState does),
    and workers that fail tasks whose spec's image is in `bad_images`."""

    def __init__(self) -> None:
        super().__init__([node(n) for n in NODES])
        self.status: dict[str, UpdateStatus | None] = {}
        self.bad_images: set[str] = set()
        self.image_of: dict[str, str] = {}  # task id -> image it runs
        self.max_down: dict[str, int] = {}

    def update(self, name: str, *, force: bool = False, **changes: object) -> None:
        old = self.services[name]
        spec = dataclasses.replace(old.spec, **changes)  # type: ignore[arg-type]
        new = dataclasses.replace(old, spec=spec, version=old.version + 1)
        self.services[name] = new
        self.max_down[name] = 0
        if force or update.needs_rollout(old.spec, spec):
            self.status[name] = update.start(old.spec, new.version, now=self.now)

    def rollback(self, name: str, why: str = "") -> None:
        service = self.services[name]
        self.max_down[name] = 0
        spec = update.rollback_spec(service, self.status.get(name))
        new = dataclasses.replace(service, spec=spec, version=service.version + 1)
        self.services[name] = new
        self.status[name] = update.start(
            service.spec, new.version, now=self.now, rollback=True, why=why
        )

    def round(self) -> bool:
        moved = False
        for name in sorted(self.services):
            step = update.plan(
                self.services[name], self.status.get(name), self.tasks.values(), now=self.now
            )
            if step.rollback:
                self.rollback(name, step.status.message if step.status else "")
                moved = True
                continue
            if step.status != self.status.get(name):
                self.status[name] = step.status
                moved = True
            self._apply(step.actions)
            moved = moved or bool(step.actions)
            # The widest gap is right after the updater's shutdowns, before the workers run.
            self.max_down[name] = max(self.max_down.get(name, 0), self.down(name))
        moved = super().round() or moved
        for t in self.tasks.values():
            self.image_of.setdefault(t.id, self.services[t.service_id].spec.image)
        self._fail_bad()
        for name in self.services:
            self.max_down[name] = max(self.max_down.get(name, 0), self.down(name))
        return moved

    def _fail_bad(self) -> None:
        for t in list(self.tasks.values()):
            if t.state is TaskState.RUNNING and self.image_of[t.id] in self.bad_images:
                self.tasks[t.id] = transition(t, TaskState.FAILED, now=self.now, error="bad")

    def down(self, name: str) -> int:
        """Replicas without a running task that is wanted running."""
        up = {t.slot for t in self.running(name)}
        return (self.services[name].spec.replicas or 0) - len(up)

    def settle(self) -> None:
        """Rounds (the clock moving a second each) until the update is no longer active."""
        for _ in range(MAX_ROUNDS):
            self.round()
            self.now += 1.0
            if all(s is None or not s.state.active for s in self.status.values()):
                return
        raise AssertionError(f"update stuck: {self.status}")

    def images(self, name: str) -> list[str]:
        return sorted(self.image_of[t.id] for t in self.running(name))


def web(replicas: int = 3, **update_config: object) -> ServiceSpec:
    return ServiceSpec(
        name="web",
        image="web:1",
        replicas=replicas,
        update=UpdateConfig(**update_config),  # type: ignore[arg-type]
        rollback=UpdateConfig(**update_config),  # type: ignore[arg-type]
    )


def started(spec: ServiceSpec) -> UpdatingSwarm:
    swarm = UpdatingSwarm()
    swarm.add_service(spec, "web")
    swarm.converge()
    return swarm


def test_a_new_image_replaces_every_task_one_at_a_time_and_completes() -> None:
    swarm = started(web(3, monitor=5.0))
    swarm.update("web", image="web:2")
    swarm.settle()
    assert swarm.images("web") == ["web:2"] * 3
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.COMPLETED
    assert status.message == "update completed" and status.completed_at is not None
    assert status.previous_spec is not None and status.previous_spec.image == "web:1"
    assert swarm.max_down["web"] == 1


def test_completion_waits_for_the_monitor_period() -> None:
    swarm = started(web(1, monitor=30.0))
    swarm.update("web", image="web:2")
    for _ in range(10):
        swarm.round()
        swarm.now += 1.0
    assert swarm.images("web") == ["web:2"]
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.UPDATING
    step = update.plan(swarm.services["web"], status, swarm.tasks.values(), now=swarm.now)
    assert step.wake_at is not None and step.wake_at > swarm.now


def test_scale_alone_starts_no_rollout() -> None:
    swarm = started(web(3))
    swarm.update("web", replicas=4)
    assert "web" not in swarm.status
    before = {t.id for t in swarm.running("web")}
    swarm.converge()
    assert before <= {t.id for t in swarm.running("web")}


def test_force_replaces_tasks_with_an_unchanged_spec() -> None:
    swarm = started(web(2))
    before = {t.id for t in swarm.running("web")}
    swarm.update("web", force=True)
    swarm.settle()
    assert not before & {t.id for t in swarm.running("web")}


def test_stop_first_shuts_the_old_task_before_creating_the_new_one() -> None:
    swarm = started(web(2))
    swarm.update("web", image="web:2")
    step = update.plan(
        swarm.services["web"], swarm.status["web"], swarm.tasks.values(), now=swarm.now
    )
    assert len(step.actions) == 1 and isinstance(step.actions[0], ShutdownTask)


def test_start_first_keeps_the_old_task_until_the_new_one_runs() -> None:
    swarm = started(web(1, order="start-first"))
    (old,) = swarm.running("web")
    swarm.update("web", image="web:2")
    step = update.plan(
        swarm.services["web"], swarm.status["web"], swarm.tasks.values(), now=swarm.now
    )
    assert [type(a) for a in step.actions] == [CreateTask]
    swarm.settle()
    assert swarm.images("web") == ["web:2"]
    assert swarm.tasks[old.id].state is TaskState.SHUTDOWN
    # The old task was never stopped before its replacement ran.
    assert swarm.max_down["web"] == 0


def test_delay_separates_slots() -> None:
    swarm = started(web(3, parallelism=3, delay=10.0, monitor=0.0))
    swarm.update("web", image="web:2")
    t0 = swarm.now
    swarm.settle()
    new = sorted(t.created for t in swarm.running("web"))
    assert all(b - a >= 10.0 for a, b in itertools.pairwise(new))
    assert swarm.now - t0 >= 20.0


def test_failing_new_tasks_pause_the_update_by_default() -> None:
    swarm = started(web(3))
    swarm.bad_images.add("web:2")
    swarm.update("web", image="web:2")
    swarm.settle()
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.PAUSED
    assert status.message.startswith("update paused due to failure or early termination of task")
    # Paused after the first slot: the other two still run the old image.
    assert swarm.images("web") == ["web:1", "web:1"]


def test_failure_action_rollback_returns_to_the_previous_spec_by_itself() -> None:
    swarm = started(web(3, failure_action="rollback"))
    original = swarm.services["web"].spec
    swarm.bad_images.add("web:2")
    swarm.update("web", image="web:2")
    swarm.settle()
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.ROLLBACK_COMPLETED
    assert swarm.services["web"].spec == original
    swarm.converge()
    assert swarm.images("web") == ["web:1"] * 3


def test_continue_ignores_failures() -> None:
    swarm = started(web(2, failure_action="continue", monitor=0.0))
    swarm.bad_images.add("web:2")
    swarm.update("web", image="web:2")
    for _ in range(30):
        swarm.round()
        swarm.now += 1.0
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.UPDATING
    assert "web:1" not in {swarm.image_of[t.id] for t in swarm.live("web")}


def test_max_failure_ratio_tolerates_that_share_of_slots() -> None:
    swarm = started(web(4, max_failure_ratio=0.5, monitor=0.0))
    swarm.update("web", image="web:2")
    # One new task fails once (1 of 4 slots, under 0.5): the update goes on and completes.
    for _ in range(MAX_ROUNDS):
        swarm.round()
        swarm.now += 1.0
        fresh = [t for t in swarm.running("web") if swarm.image_of[t.id] == "web:2"]
        if fresh:
            swarm.tasks[fresh[0].id] = transition(
                fresh[0], TaskState.FAILED, now=swarm.now, error="once"
            )
            break
    swarm.settle()
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.COMPLETED


def test_a_failed_rollback_pauses_instead_of_rolling_back_again() -> None:
    swarm = started(web(2, failure_action="rollback"))
    swarm.bad_images |= {"web:1", "web:2"}
    swarm.update("web", image="web:2")
    swarm.settle()
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.ROLLBACK_PAUSED
    assert status.message.startswith("rollback paused")


def test_manual_rollback_restores_the_previous_spec_but_not_the_replica_count() -> None:
    swarm = started(web(2))
    swarm.update("web", image="web:2", env=("A=1",))
    swarm.settle()
    swarm.update("web", replicas=3)
    swarm.rollback("web")
    swarm.settle()
    spec = swarm.services["web"].spec
    assert (spec.image, spec.env, spec.replicas) == ("web:1", (), 3)
    status = swarm.status["web"]
    assert status is not None and status.state is UpdateState.ROLLBACK_COMPLETED
    assert status.message == "rollback completed"
    assert swarm.images("web") == ["web:1"] * 3


def test_status_document_round_trips() -> None:
    status = update.start(web(2), 7, now=3.0)
    assert update.status_from_doc(update.status_doc(status)) == status


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(1, 6),
    parallelism=st.integers(0, 4),
    order=st.sampled_from(["stop-first", "start-first"]),
    delay=st.sampled_from([0.0, 3.0]),
    monitor=st.sampled_from([0.0, 5.0]),
)
def test_never_more_than_parallelism_down_and_rollback_restores(
    replicas: int, parallelism: int, order: str, delay: float, monitor: float
) -> None:
    config = {"parallelism": parallelism, "order": order, "delay": delay, "monitor": monitor}
    swarm = started(web(replicas, **config))
    original = swarm.services["web"].spec
    swarm.update("web", image="web:2")
    swarm.settle()
    limit = parallelism or replicas
    assert swarm.max_down["web"] <= (0 if order == "start-first" else limit)
    assert swarm.images("web") == ["web:2"] * replicas
    swarm.rollback("web")
    swarm.settle()
    assert swarm.services["web"].spec == original
    assert swarm.max_down["web"] <= (0 if order == "start-first" else limit)
    assert swarm.images("web") == ["web:1"] * replicas
