"""Placement: spread, drained and down nodes, constraints, host ports, Docker's reasons."""

from __future__ import annotations

import random
from collections import Counter

from overlaynet.cluster.scheduler import Assign, StayPending, explain, schedule
from overlaynet.cluster.services import ServiceSpec, parse_constraint, parse_publish
from overlaynet.cluster.tasks import TaskState

from .sim import Swarm, node


def seeded(seed: int = 1):  # type: ignore[no-untyped-def]
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


def test_replicas_spread_one_per_node_first() -> None:
    swarm = Swarm([node("node1"), node("node2"), node("node3")])
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=6))
    swarm.converge()
    assert Counter(t.node_id for t in swarm.running("web")) == {
        "node1": 2,
        "node2": 2,
        "node3": 2,
    }


def test_fewest_tasks_of_the_service_first_then_fewest_overall() -> None:
    swarm = Swarm([node("node1"), node("node2")])
    swarm.add_service(ServiceSpec(name="big", image="x", replicas=3))
    swarm.converge()
    busy = Counter(t.node_id for t in swarm.running("big")).most_common(1)[0][0]
    swarm.add_service(ServiceSpec(name="small", image="x", replicas=1))
    swarm.converge()
    (task,) = swarm.running("small")
    assert task.node_id != busy


def test_drained_and_down_nodes_get_nothing() -> None:
    swarm = Swarm([node("node1"), node("node2", availability="drain"), node("node3", ready=False)])
    swarm.add_service(ServiceSpec(name="web", image="nginx", replicas=4))
    swarm.converge()
    assert {t.node_id for t in swarm.running("web")} == {"node1"}


def test_paused_nodes_take_no_new_tasks() -> None:
    swarm = Swarm([node("node1", availability="pause")])
    swarm.add_service(ServiceSpec(name="web", image="nginx"))
    swarm.converge()
    (task,) = swarm.live("web")
    assert task.state is TaskState.PENDING
    assert task.message == "no suitable node (1 node not available for new tasks)"


def test_constraints_are_honoured() -> None:
    swarm = Swarm([node("node1", zone="a"), node("node2", zone="b"), node("node3", zone="b")])
    spec = ServiceSpec(
        name="web",
        image="nginx",
        replicas=4,
        constraints=(parse_constraint("node.labels.zone==b"),),
    )
    swarm.add_service(spec)
    swarm.converge()
    assert Counter(t.node_id for t in swarm.running("web")) == {"node2": 2, "node3": 2}


def test_unplaceable_task_stays_pending_with_dockers_reason() -> None:
    swarm = Swarm([node("node1", ready=False), node("node2"), node("node3")])
    swarm.add_service(
        ServiceSpec(
            name="db", image="db", replicas=3, ports=(parse_publish("mode=host,target=1433"),)
        )
    )
    swarm.converge()
    assert len(swarm.running("db")) == 2
    (pending,) = [t for t in swarm.live("db") if t.state is TaskState.PENDING]
    assert pending.message == (
        "no suitable node (1 node not available for new tasks; "
        "host-mode port already in use on 2 nodes)"
    )


def test_reasons_in_swarmkits_words() -> None:
    assert explain(2, 1, 0) == (
        "no suitable node (2 nodes not available for new tasks; "
        "scheduling constraints not satisfied on 1 node)"
    )
    assert explain(0, 0, 1) == "no suitable node (host-mode port already in use on 1 node)"


def test_a_pending_reason_is_written_once() -> None:
    swarm = Swarm([node("node1", ready=False)])
    swarm.add_service(ServiceSpec(name="web", image="nginx"))
    swarm.converge()
    first = swarm.placements()
    assert first == []
    (task,) = swarm.live("web")
    assert task.message.startswith("no suitable node")


def test_host_port_is_held_until_the_old_task_stops() -> None:
    """moby#36934: a replacement of a mode=host task waits for the port rather than failing
    with "port already in use"; once the old task has stopped it is placed."""
    swarm = Swarm([node("node1")])
    swarm.add_service(
        ServiceSpec(name="db", image="db", ports=(parse_publish("mode=host,target=1433"),))
    )
    swarm.converge()
    (old,) = swarm.running("db")
    swarm.set_node("node1", ready=False)
    swarm.round()  # the orchestrator replaces the task; node1 cannot report it stopped
    swarm.set_node("node1", ready=True)
    placements = swarm.placements()
    (replacement,) = [t for t in swarm.live("db")]
    assert replacement.id != old.id
    assert placements == [StayPending(replacement.id, placements[0].reason)]  # type: ignore[union-attr]
    assert "host-mode port already in use on 1 node" in placements[0].reason  # type: ignore[union-attr]
    swarm.converge()
    assert [t.id for t in swarm.running("db")] == [replacement.id]
    assert swarm.tasks[old.id].state is TaskState.SHUTDOWN


def test_ties_are_broken_by_the_seeded_random_source() -> None:
    def first_node(seed: int) -> str | None:
        swarm = Swarm([node(f"node{i}") for i in range(1, 6)], seed=seed)
        swarm.add_service(ServiceSpec(name="web", image="nginx"))
        swarm._apply(swarm.orchestrate())
        swarm._allocate()
        (assign,) = schedule(
            swarm.services, swarm.tasks.values(), swarm.nodes.values(), rand=seeded(seed)
        )
        assert isinstance(assign, Assign)
        return assign.node_id

    assert first_node(7) == first_node(7)
    assert len({first_node(s) for s in range(20)}) > 1


def test_spread_counts_the_services_own_tasks_before_the_nodes_load() -> None:
    """node1 is busy with another service; the new service still gets half its tasks there,
    as swarmkit spreads a service over nodes before balancing the nodes' totals."""
    swarm = Swarm([node("node1", zone="a"), node("node2", zone="b")])
    pinned = ServiceSpec(
        name="big", image="x", replicas=3, constraints=(parse_constraint("node.labels.zone==a"),)
    )
    swarm.add_service(pinned)
    swarm.converge()
    swarm.add_service(ServiceSpec(name="web", image="x", replicas=4))
    swarm.converge()
    assert Counter(t.node_id for t in swarm.running("web")) == {"node1": 2, "node2": 2}
