"""Health in the views: `service ps` rows and CURRENT STATE `(health: starting)`/`(healthy)`/
`(unhealthy)`, and the worker's per-container health that `ps` and `inspect` show."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from overlaynet.agent.health import UNHEALTHY_ERROR, Health, HealthStatus, ProbeResult
from overlaynet.agent.tasks import TASK_LABEL, TaskHooks, TaskRunner
from overlaynet.cli.service import current_state
from overlaynet.cluster.service_views import task_rows
from overlaynet.cluster.services import HealthCheck, ServiceSpec
from overlaynet.cluster.state import ClusterState, Role
from overlaynet.cluster.tasks import TaskState, transition
from overlaynet.cluster.tokens import RandomBytes
from overlaynet.model import Container

from ..cluster.helpers import converge, seeded_rand

NOW = 1_700_000_000.0
CHECK = HealthCheck(("CMD-SHELL", "true"), interval=1.0)


@pytest.fixture
def rand() -> RandomBytes:
    return seeded_rand(9)


def swarm(rand: RandomBytes, check: HealthCheck | None) -> ClusterState:
    s = ClusterState()
    s.init(hostname="node1", addr="192.168.0.11", now=NOW, rand=rand)
    s.join_node(hostname="node2", addr="192.168.0.12", role=Role.WORKER, now=NOW, rand=rand)
    s.create_service(ServiceSpec(name="web", image="web", healthcheck=check), now=NOW, rand=rand)
    s.orchestrate({n: "Ready" for n in s.nodes}, now=NOW, rand=rand)
    return s


def the_task_row(state: ClusterState) -> dict[str, object]:
    (row,) = task_rows(state, state.find_service("web"))
    return row


def test_service_ps_health_follows_the_task(rand: RandomBytes) -> None:
    state = swarm(rand, CHECK)
    (task,) = state.tasks.values()
    assert the_task_row(state)["health"] is None  # not started yet
    task = transition(task, TaskState.STARTING, now=NOW)
    state.tasks[task.id] = task = dataclasses.replace(task, container_id="c1")
    assert the_task_row(state)["health"] == "starting"
    state.tasks[task.id] = task = transition(task, TaskState.RUNNING, now=NOW)
    assert the_task_row(state)["health"] == "healthy"
    state.tasks[task.id] = transition(task, TaskState.FAILED, now=NOW, error=UNHEALTHY_ERROR)
    row = the_task_row(state)
    assert row["health"] == "unhealthy"
    assert current_state(row, NOW + 3).endswith("3 seconds ago (unhealthy)")


def test_without_a_check_no_health_is_shown(rand: RandomBytes) -> None:
    state = swarm(rand, None)
    converge(state, {n: "Ready" for n in state.nodes}, rand, NOW)
    row = the_task_row(state)
    assert row["health"] is None
    assert current_state({**row, "current_state": "Running"}, NOW).endswith("ago")
    assert current_state(
        {"current_state": "Starting", "since": NOW, "health": "starting"}, NOW
    ) == ("Starting less than a second ago (health: starting)")


def test_the_runner_knows_each_task_containers_health() -> None:
    async def never(*_: Any) -> Any:
        raise AssertionError

    runner = TaskRunner(TaskHooks(never, dict, never, never, never, never, lambda: True))
    health = Health(CHECK, 0.0).record(ProbeResult(1.0, 1.1, 0, "ok"))
    runner.health.states["t1"] = health
    task_container = Container.__new__(Container)
    object.__setattr__(task_container, "name", "web.1.t1")
    object.__setattr__(task_container, "labels", {TASK_LABEL: "t1"})
    object.__setattr__(task_container, "env", ())
    assert runner.health_of(task_container) == health
    assert health.status is HealthStatus.HEALTHY
    object.__setattr__(task_container, "labels", {})
    assert runner.health_of(task_container) is None
