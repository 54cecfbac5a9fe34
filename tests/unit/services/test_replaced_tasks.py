"""A replaced task's desired state (issue 13): once the leader starts a replacement, the task it
replaces is wanted shut down, so `service ps` shows its row as Docker does (DESIRED STATE
Shutdown, CURRENT STATE Failed); a task nobody replaces keeps its desired state."""

from __future__ import annotations

from overlaynet.cluster.services import RestartCondition, RestartPolicy, ServiceSpec
from overlaynet.cluster.state import ClusterState, Role
from overlaynet.cluster.tasks import TaskState
from overlaynet.cluster.tokens import RandomBytes
from tests.unit.cluster.helpers import converge, seeded_rand

NOW = 1_700_000_000.0


def swarm() -> tuple[ClusterState, RandomBytes]:
    rand = seeded_rand(5)
    s = ClusterState()
    s.init(hostname="node1", addr="192.168.0.11", now=NOW, rand=rand)
    s.join_node(hostname="node2", addr="192.168.0.12", role=Role.WORKER, now=NOW, rand=rand)
    s.create_network("atsea", now=NOW, rand=rand)
    return s, rand


def ready(state: ClusterState) -> dict[str, str]:
    return {n.id: "Ready" for n in state.nodes.values()}


def fail_the_task(spec: ServiceSpec) -> tuple[ClusterState, str, str, float]:
    state, rand = swarm()
    service = state.create_service(spec, now=NOW, rand=rand)
    now = converge(state, ready(state), rand, NOW)
    (task,) = state.tasks_of(service.id)
    assert task.node_id is not None
    state.report_task(task.node_id, task.id, "failed", now=now, error="exit 137", exit_code=137)
    state.orchestrate(ready(state), now=now, rand=rand)
    return state, service.id, task.id, now


def test_a_failed_task_that_is_replaced_is_wanted_shut_down() -> None:
    state, service_id, old_id, now = fail_the_task(
        ServiceSpec(name="web", image="nginx", networks=("atsea",))
    )
    old = state.tasks[old_id]
    assert (old.state, old.desired) == (TaskState.FAILED, TaskState.SHUTDOWN)
    assert old.updated == now  # the time it failed: the restart delay counts from it
    (new,) = [t for t in state.tasks_of(service_id) if t.live]
    assert (new.slot, new.desired) == (old.slot, TaskState.RUNNING)
    # A second pass changes nothing more.
    assert not state.orchestrate(ready(state), now=now, rand=seeded_rand(9))


def test_a_failed_task_nobody_replaces_keeps_its_desired_state() -> None:
    spec = ServiceSpec(
        name="web",
        image="nginx",
        networks=("atsea",),
        restart=RestartPolicy(condition=RestartCondition.NONE),
    )
    state, service_id, old_id, _ = fail_the_task(spec)
    assert state.tasks[old_id].desired is TaskState.RUNNING
    assert [t.id for t in state.tasks_of(service_id)] == [old_id]
