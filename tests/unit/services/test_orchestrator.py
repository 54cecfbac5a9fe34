"""Reconciliation: slots, scaling, restart policy, Down and drained nodes, global mode, and the
properties that must hold after any history once the swarm has converged."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.cluster.orchestrator import (
    TASK_HISTORY_LIMIT,
    CreateTask,
    ShutdownTask,
    reconcile,
)
from overlaynet.cluster.services import (
    RestartCondition,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    parse_constraint,
    parse_publish,
)
from overlaynet.cluster.tasks import UP_STATES, TaskState

from .sim import Swarm, node

NODES = ["node1", "node2", "node3"]


def three() -> Swarm:
    return Swarm([node(n) for n in NODES])


def slots(swarm: Swarm, service_id: str) -> list[int | None]:
    return sorted(t.slot for t in swarm.live(service_id))  # type: ignore[type-var]


def test_create_makes_one_task_per_slot() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=3))
    actions = swarm.orchestrate()
    assert [(a.slot, a.attempt) for a in actions if isinstance(a, CreateTask)] == [
        (1, 0),
        (2, 0),
        (3, 0),
    ]
    swarm.converge()
    assert slots(swarm, "web") == [1, 2, 3]
    assert swarm.orchestrate() == [] and swarm.placements() == []


def test_scale_up_then_down_removes_highest_slots_first() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=1))
    swarm.converge()
    swarm.scale("web", 5)
    swarm.converge()
    assert slots(swarm, "web") == [1, 2, 3, 4, 5]
    swarm.scale("web", 2)
    actions = swarm.orchestrate()
    by_slot = {t.id: t.slot for t in swarm.of("web")}
    assert [by_slot[a.task_id] for a in actions if isinstance(a, ShutdownTask)] == [5, 4, 3]
    swarm.converge()
    assert slots(swarm, "web") == [1, 2]


def test_a_failed_task_is_replaced_in_its_slot_after_the_restart_delay() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=2))
    swarm.converge()
    victim = next(t for t in swarm.running("web") if t.slot == 2)
    swarm.fail(victim.id)
    failed_at = swarm.now
    (create,) = swarm.orchestrate()
    assert isinstance(create, CreateTask)
    assert (create.slot, create.attempt, create.not_before) == (2, 1, failed_at + 5.0)
    swarm.converge()
    replacement = next(t for t in swarm.running("web") if t.slot == 2)
    assert replacement.id != victim.id
    assert swarm.now >= failed_at + 5.0


def test_restart_condition_none_leaves_the_slot_empty() -> None:
    swarm = three()
    spec = ServiceSpec(
        name="job", image="x", restart=RestartPolicy(condition=RestartCondition.NONE)
    )
    swarm.add_service(spec)
    swarm.converge()
    (task,) = swarm.running("job")
    swarm.fail(task.id)
    assert swarm.orchestrate() == []


def test_on_failure_does_not_restart_a_completed_task_but_any_does() -> None:
    for condition, restarted in (
        (RestartCondition.ON_FAILURE, False),
        (RestartCondition.ANY, True),
    ):
        swarm = three()
        swarm.add_service(
            ServiceSpec(name="job", image="x", restart=RestartPolicy(condition, delay=0))
        )
        swarm.converge()
        (task,) = swarm.running("job")
        swarm.fail(task.id, TaskState.COMPLETE)
        swarm.converge()
        assert bool(swarm.running("job")) is restarted


def test_max_attempts_stops_restarting() -> None:
    swarm = three()
    swarm.add_service(
        ServiceSpec(name="web", image="x", restart=RestartPolicy(delay=0, max_attempts=2))
    )
    swarm.converge()
    for _ in range(2):
        (task,) = swarm.running("web")
        swarm.fail(task.id)
        swarm.converge()
    (task,) = swarm.running("web")
    assert task.attempt == 2
    swarm.fail(task.id)
    swarm.converge()
    assert swarm.live("web") == []


def test_tasks_of_a_down_node_move_at_once() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=3))
    swarm.converge()
    swarm.set_node("node2", ready=False)
    actions = swarm.orchestrate()
    (moved,) = [a for a in actions if isinstance(a, CreateTask)]
    assert moved.not_before == 0.0  # no restart delay: the task did not fail
    swarm.converge()
    assert {t.node_id for t in swarm.running("web")} == {"node1", "node3"}
    assert slots(swarm, "web") == [1, 2, 3]


def test_drain_moves_tasks_and_the_old_ones_stop() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=3))
    swarm.converge()
    on_node1 = [t.id for t in swarm.running("web") if t.node_id == "node1"]
    swarm.set_node("node1", availability="drain")
    swarm.converge()
    assert "node1" not in {t.node_id for t in swarm.live("web")}
    assert all(swarm.tasks[i].state is TaskState.SHUTDOWN for i in on_node1)


def test_a_task_whose_node_left_is_orphaned_and_replaced() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=3))
    swarm.converge()
    gone = [t.id for t in swarm.running("web") if t.node_id == "node3"]
    del swarm.nodes["node3"]
    swarm.converge()
    assert all(swarm.tasks[i].state is TaskState.ORPHANED for i in gone)
    assert len(swarm.running("web")) == 3


def test_global_mode_runs_one_task_per_eligible_node() -> None:
    swarm = Swarm([node("node1"), node("node2", role="x"), node("node3", availability="drain")])
    swarm.add_service(ServiceSpec(name="mon", image="x", mode=ServiceMode.GLOBAL, replicas=None))
    swarm.converge()
    assert sorted(t.node_id for t in swarm.running("mon")) == ["node1", "node2"]  # type: ignore[type-var]
    swarm.set_node("node3", availability="active")
    swarm.set_node("node1", ready=False)
    swarm.converge()
    assert sorted(t.node_id for t in swarm.running("mon")) == ["node2", "node3"]  # type: ignore[type-var]
    swarm.set_node("node1", ready=True)
    swarm.converge()
    assert sorted(t.node_id for t in swarm.running("mon")) == NODES  # type: ignore[type-var]


def test_global_mode_honours_constraints() -> None:
    swarm = Swarm([node("node1", zone="a"), node("node2", zone="b")])
    spec = ServiceSpec(
        name="mon",
        image="x",
        mode=ServiceMode.GLOBAL,
        replicas=None,
        constraints=(parse_constraint("node.labels.zone==a"),),
    )
    swarm.add_service(spec)
    swarm.converge()
    assert [t.node_id for t in swarm.running("mon")] == ["node1"]


def test_removing_a_service_shuts_its_tasks_down() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=2))
    swarm.converge()
    del swarm.services["web"]
    swarm.converge()
    assert swarm.live("web") == []
    assert {t.state for t in swarm.of("web")} == {TaskState.SHUTDOWN}


def test_history_is_capped_per_slot() -> None:
    swarm = Swarm([node("node1")])
    swarm.add_service(ServiceSpec(name="web", image="x", restart=RestartPolicy(delay=0)))
    swarm.converge()
    for _ in range(TASK_HISTORY_LIMIT + 3):
        (task,) = swarm.running("web")
        swarm.fail(task.id)
        swarm.converge()
    ended = [t for t in swarm.of("web") if t.state.final]
    assert len(ended) == TASK_HISTORY_LIMIT
    assert len(swarm.running("web")) == 1


# ----- properties over random histories -----

SERVICES = {
    "web": ServiceSpec(name="web", image="nginx", replicas=3, restart=RestartPolicy(delay=1)),
    "db": ServiceSpec(
        name="db",
        image="db",
        replicas=2,
        ports=(parse_publish("mode=host,target=1433"),),
        restart=RestartPolicy(delay=0),
    ),
    "mon": ServiceSpec(name="mon", image="x", mode=ServiceMode.GLOBAL, replicas=None),
}

EVENTS = st.one_of(
    st.tuples(st.just("scale"), st.sampled_from(["web", "db"]), st.integers(0, 6)),
    st.tuples(st.just("ready"), st.sampled_from(NODES), st.booleans()),
    st.tuples(
        st.just("avail"), st.sampled_from(NODES), st.sampled_from(["active", "drain", "pause"])
    ),
    st.tuples(
        st.just("fail"), st.integers(0, 50), st.sampled_from(["failed", "complete", "rejected"])
    ),
    st.tuples(st.just("run"), st.integers(0, 3)),
)


def play(swarm: Swarm, event: tuple[Any, ...]) -> None:
    kind = event[0]
    if kind == "scale":
        swarm.scale(event[1], event[2])
    elif kind == "ready":
        swarm.set_node(event[1], ready=event[2])
    elif kind == "avail":
        swarm.set_node(event[1], availability=event[2])
    elif kind == "fail":
        live = [t for t in sorted(swarm.tasks.values(), key=lambda t: t.id) if t.live]
        candidates = [
            t
            for t in live
            if t.state is TaskState.RUNNING
            or (event[2] == "rejected" and t.state is TaskState.ASSIGNED)
        ]
        if candidates:
            task = candidates[event[1] % len(candidates)]
            state = TaskState(event[2])
            if state is TaskState.REJECTED and task.state is TaskState.RUNNING:
                state = TaskState.FAILED
            swarm.fail(task.id, state)
    else:
        for _ in range(event[1]):
            swarm.round()
            swarm.now += 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=25), st.integers(0, 1000))
def test_after_convergence_the_swarm_is_what_the_services_ask(
    events: list[tuple[Any, ...]], seed: int
) -> None:
    swarm = Swarm([node(n) for n in NODES], seed=seed)
    for sid, spec in SERVICES.items():
        swarm.add_service(spec, sid)
    for event in events:
        play(swarm, event)
    swarm.converge()

    # Idempotent: nothing left to do.
    assert swarm.orchestrate() == []
    assert swarm.placements() == []

    eligible = {n.id for n in swarm.nodes.values() if n.takes_new_tasks}
    usable = {n.id for n in swarm.nodes.values() if n.ready and n.availability.value != "drain"}
    for sid in ("web", "db"):
        replicas = swarm.services[sid].spec.replicas or 0
        live = swarm.live(sid)
        # Slots 1..N, each exactly once.
        assert sorted(t.slot for t in live) == list(range(1, replicas + 1))  # type: ignore[type-var]
        up = [t for t in live if t.state in UP_STATES]
        if sid == "web" and eligible:
            assert len(up) == replicas
        if sid == "db":
            # One host port per node: at most one db task per usable node.
            assert len(up) <= len(usable)
            if len(eligible) >= replicas:
                assert len(up) == replicas
    # No node holds the same host port twice.
    held = Counter(
        (t.node_id, port)
        for t in swarm.tasks.values()
        if t.holds_node
        for port in swarm.services[t.service_id].spec.host_ports
    )
    assert all(n == 1 for n in held.values()), held
    # No live task on a drained or down node.
    for t in swarm.tasks.values():
        if t.live and t.node_id is not None:
            assert t.node_id in usable, t
    # Global: one running task on every eligible node, and on no node twice.
    mon = Counter(t.node_id for t in swarm.live("mon"))
    assert all(n == 1 for n in mon.values())
    assert eligible <= {t.node_id for t in swarm.running("mon")}


@settings(max_examples=100, deadline=None)
@given(st.lists(EVENTS, max_size=15), st.integers(0, 1000))
def test_reconcile_is_idempotent_at_every_step(events: list[tuple[Any, ...]], seed: int) -> None:
    """Not only after convergence: at any moment, applying the actions and asking again (at
    the same time, with no worker moving) yields nothing more."""
    swarm = Swarm([node(n) for n in NODES], seed=seed)
    for sid, spec in SERVICES.items():
        swarm.add_service(spec, sid)
    for event in events:
        play(swarm, event)
        swarm._apply(swarm.orchestrate())
        assert (
            reconcile(swarm.services, swarm.tasks.values(), swarm.nodes.values(), now=swarm.now)
            == []
        )


def test_duplicate_tasks_in_a_slot_keep_the_one_furthest_along() -> None:
    """Two live tasks in one slot (e.g. a create replayed twice): the running one stays."""
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx"))
    swarm.converge()
    (running,) = swarm.running("web")
    swarm._apply([CreateTask("web", 1, None, 0, 0.0, 1, "replayed")])
    (dup,) = [t for t in swarm.live("web") if t.id != running.id]
    assert swarm.orchestrate() == [ShutdownTask(dup.id, "duplicate task for this slot")]
    swarm.converge()
    assert [t.id for t in swarm.live("web")] == [running.id]


def test_a_task_no_worker_has_yet_ends_when_shut_down() -> None:
    """A global task waits pending for its node; the node goes down: no worker will ever
    report that task, so shutting it down ends it at once."""
    swarm = Swarm([node("node1", availability="pause")])
    swarm.add_service(ServiceSpec(name="mon", image="x", mode=ServiceMode.GLOBAL, replicas=None))
    swarm.set_node("node1", availability="active")
    swarm._apply(swarm.orchestrate())
    swarm._allocate()
    (task,) = swarm.live("mon")
    assert (task.state, task.node_id) == (TaskState.PENDING, "node1")
    swarm.set_node("node1", ready=False)
    swarm._apply(swarm.orchestrate())
    assert swarm.tasks[task.id].state is TaskState.SHUTDOWN


def test_a_node_gossip_does_not_know_keeps_its_tasks_and_gets_no_new_ones() -> None:
    swarm = three()
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=3))
    swarm.converge()
    # A manager that just started has not heard from node3: unknown, not down.
    swarm.set_node("node3", ready=False, unknown=True)
    assert swarm.orchestrate() == []
    swarm.scale("web", 6)
    swarm.converge()
    per_node = Counter(t.node_id for t in swarm.live("web"))
    assert per_node == {"node1": 3, "node2": 2, "node3": 1} or per_node == {
        "node1": 2,
        "node2": 3,
        "node3": 1,
    }
    # Once gossip says it is down, its task moves.
    swarm.set_node("node3", unknown=False)
    swarm.converge()
    assert "node3" not in {t.node_id for t in swarm.live("web")}
