"""The worker's task plan (agent/tasks.py): assignments and local containers in, actions out."""

from __future__ import annotations

from typing import Any

from overlaynet.agent.tasks import (
    TASK_ENV,
    AssignedTask,
    LocalTask,
    Remove,
    Report,
    Run,
    Start,
    Stop,
    container_name,
    local_tasks,
    parse_assigned,
    plan,
)
from overlaynet.cluster.tasks import TaskState
from overlaynet.model import Container, Status

NET = {
    "network_id": "n" * 25,
    "network_name": "atsea",
    "vni": 4097,
    "subnet": "10.0.1.0/24",
    "gateway": "10.0.1.1",
    "ingress": False,
    "ip": "10.0.1.5",
    "address": "10.0.1.5/24",
    "mac": "02:42:0a:00:01:05",
    "vip": "10.0.1.2",
}


def task_doc(task_id: str = "t1", **over: Any) -> dict[str, Any]:
    doc = {
        "id": task_id,
        "service_id": "s1",
        "service_name": "web",
        "name": "web.1",
        "slot": 1,
        "image": "alpine",
        "command": ["sleep", "100"],
        "env": [],
        "desired_state": "running",
        "state": "assigned",
        "attempt": 0,
        "not_before": 0.0,
        "networks": [NET],
    }
    doc.update(over)
    return doc


def task(task_id: str = "t1", **over: Any) -> AssignedTask:
    return AssignedTask.from_doc(task_doc(task_id, **over))


def test_new_assignment_is_run_once_its_start_time_came() -> None:
    t = task(not_before=100.0)
    assert plan([t], [], {}, now=99.0) == []
    assert plan([t], [], {}, now=100.0) == [Run(t)]


def test_running_container_reports_running_once() -> None:
    local = {"t1": LocalTask("t1", "c1", running=True)}
    assert plan([task(state="starting")], [], local, 0) == [
        Report("t1", (TaskState.RUNNING,), "c1")
    ]
    assert plan([task(state="running")], [], local, 0) == []


def test_restarted_agent_does_not_start_a_task_twice() -> None:
    # The container exists (found again by its name and marker): no second Run.
    local = {"t1": LocalTask("t1", "c1", running=True)}
    assert not any(isinstance(a, Run) for a in plan([task(state="running")], [], local, 0))


def test_container_made_but_never_started_is_started() -> None:
    local = {"t1": LocalTask("t1", "c1", running=False, exit_code=None)}
    assert plan([task(state="starting")], [], local, 0) == [Start("t1", "c1")]


def test_ended_process_is_reported_complete_or_failed_with_its_code() -> None:
    ok = {"t1": LocalTask("t1", "c1", running=False, exit_code=0)}
    bad = {"t1": LocalTask("t1", "c1", running=False, exit_code=137)}
    assert plan([task(state="running")], [], ok, 0) == [
        Report("t1", (TaskState.COMPLETE,), "c1", exit_code=0)
    ]
    assert plan([task(state="running")], [], bad, 0) == [
        Report("t1", (TaskState.FAILED,), "c1", exit_code=137, error="task: non-zero exit (137)")
    ]


def test_quick_exit_reports_running_before_complete() -> None:
    # The managers accept complete only after running.
    ok = {"t1": LocalTask("t1", "c1", running=False, exit_code=0)}
    (report,) = plan([task(state="starting")], [], ok, 0)
    assert isinstance(report, Report)
    assert report.states == (TaskState.RUNNING, TaskState.COMPLETE)


def test_desired_shutdown_stops_a_running_task_and_reports_one_that_is_not() -> None:
    running = {"t1": LocalTask("t1", "c1", running=True)}
    assert plan([task(desired_state="shutdown", state="running")], [], running, 0) == [
        Stop("t1", "c1")
    ]
    assert plan([task(desired_state="shutdown", state="assigned")], [], {}, 0) == [
        Report("t1", (TaskState.SHUTDOWN,), None)
    ]


def test_tasks_of_removed_services_are_stopped() -> None:
    running = {"t9": LocalTask("t9", "c9", running=True)}
    assert plan([], ["t9"], running, 0) == [Stop("t9", "c9")]


def test_containers_of_tasks_no_longer_listed_are_removed() -> None:
    local = {"old": LocalTask("old", "c0", running=False, exit_code=1)}
    assert plan([task()], [], local, 0) == [Run(task()), Remove("old", "c0")]


def test_task_that_ran_here_but_lost_its_container_is_failed() -> None:
    (report,) = plan([task(state="running")], [], {}, 0)
    assert isinstance(report, Report) and report.states == (TaskState.FAILED,)


def test_unreadable_entries_are_counted_and_the_rest_kept() -> None:
    doc = {"tasks": [task_doc("t1"), {"id": 3}, task_doc("t2", desired_state="bogus")]}
    doc["stop"] = [{"id": "t5"}, "nonsense"]  # type: ignore[list-item]
    tasks, stop, bad = parse_assigned(doc)
    assert [t.id for t in tasks] == ["t1"]
    assert stop == ["t5"]
    assert bad == 3


def test_container_name_keeps_the_task_id_whole() -> None:
    assert container_name("web.1", "abc") == "web.1.abc"
    long = container_name("s" * 80 + ".1", "x" * 25)
    assert len(long) == 64 and long.endswith("." + "x" * 25)


def test_only_marked_containers_are_tasks() -> None:
    def c(name: str, env: list[str], status: Status) -> Container:
        return Container(name, name, "alpine", [], "", env=env, status=status, exit_code=3)

    found = local_tasks(
        [
            c("web.1.t1", [f"{TASK_ENV}=t1"], Status.RUNNING),
            c("web.2.t2", [f"{TASK_ENV}=t2"], Status.EXITED),
            c("user.made.name", [], Status.RUNNING),  # a user's container, never touched
            c("web.3.t3", [f"{TASK_ENV}=other"], Status.RUNNING),  # marker and name disagree
        ]
    )
    assert found == {
        "t1": LocalTask("t1", "web.1.t1", True, None),
        "t2": LocalTask("t2", "web.2.t2", False, 3),
    }
