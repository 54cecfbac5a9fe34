"""Task states: Docker's order, forward-only moves, final states that stay final."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cluster.tasks import (
    FINAL_STATES,
    Task,
    TaskState,
    TaskStateError,
    check_transition,
    task_doc,
    task_from_doc,
    task_name,
    transition,
)

LIFE = [
    TaskState.NEW,
    TaskState.PENDING,
    TaskState.ASSIGNED,
    TaskState.ACCEPTED,
    TaskState.PREPARING,
    TaskState.STARTING,
    TaskState.RUNNING,
]


def new_task(**fields: object) -> Task:
    base: dict[str, object] = {
        "id": "t1",
        "service_id": "s1",
        "slot": 1,
        "node_id": None,
        "state": TaskState.NEW,
        "desired": TaskState.RUNNING,
        "created": 0.0,
        "updated": 0.0,
    }
    return Task(**{**base, **fields})  # type: ignore[arg-type]


def test_a_task_walks_dockers_states_to_running_and_completes() -> None:
    task = new_task()
    for i, state in enumerate(LIFE[1:], start=1):
        node = "n1" if state is TaskState.ASSIGNED else None
        task = transition(task, state, now=float(i), node_id=node)
    assert (task.state, task.node_id, task.updated) == (TaskState.RUNNING, "n1", 6.0)
    assert transition(task, TaskState.COMPLETE, now=7.0).state is TaskState.COMPLETE


def test_reports_may_skip_forward() -> None:
    task = new_task(state=TaskState.ASSIGNED, node_id="n1")
    assert transition(task, TaskState.RUNNING, now=1.0).state is TaskState.RUNNING


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (TaskState.RUNNING, TaskState.PENDING),
        (TaskState.RUNNING, TaskState.RUNNING),
        (TaskState.STARTING, TaskState.ASSIGNED),
        (TaskState.PENDING, TaskState.COMPLETE),
        (TaskState.PENDING, TaskState.FAILED),
        (TaskState.RUNNING, TaskState.REJECTED),
        (TaskState.FAILED, TaskState.RUNNING),
        (TaskState.SHUTDOWN, TaskState.FAILED),
        (TaskState.COMPLETE, TaskState.SHUTDOWN),
        (TaskState.ORPHANED, TaskState.RUNNING),
    ],
)
def test_illegal_moves_are_refused(old: TaskState, new: TaskState) -> None:
    with pytest.raises(TaskStateError):
        check_transition(old, new)


def test_a_refused_move_changes_nothing() -> None:
    task = new_task(state=TaskState.RUNNING, node_id="n1")
    with pytest.raises(TaskStateError, match="only moves forward: running cannot become pending"):
        transition(task, TaskState.PENDING, now=5.0)
    assert task.state is TaskState.RUNNING and task.updated == 0.0


def test_a_task_cannot_run_without_a_node_nor_change_node() -> None:
    with pytest.raises(TaskStateError, match="has no node"):
        transition(new_task(state=TaskState.PENDING), TaskState.ASSIGNED, now=1.0)
    placed = new_task(state=TaskState.ASSIGNED, node_id="n1")
    with pytest.raises(TaskStateError, match="cannot move nodes"):
        transition(placed, TaskState.RUNNING, now=1.0, node_id="n2")


def test_an_unplaced_task_can_be_shut_down() -> None:
    task = transition(new_task(state=TaskState.PENDING), TaskState.SHUTDOWN, now=1.0)
    assert task.state is TaskState.SHUTDOWN


@given(st.lists(st.sampled_from(list(TaskState)), max_size=30))
def test_any_sequence_of_reports_only_moves_forward(reports: list[TaskState]) -> None:
    task = new_task()
    for i, state in enumerate(reports):
        before = task
        try:
            task = transition(task, state, now=float(i), node_id="n1")
        except TaskStateError:
            assert task is before
            continue
        assert task.state.rank > before.state.rank or (task.state.final and not before.state.final)
        assert not before.state.final


def test_final_states_are_dockers() -> None:
    assert {s.value for s in FINAL_STATES} == {
        "complete",
        "failed",
        "shutdown",
        "rejected",
        "orphaned",
    }


def test_a_task_survives_its_document_and_has_dockers_name() -> None:
    task = new_task(state=TaskState.RUNNING, node_id="n1", attempt=2, message="started")
    assert task_from_doc(task_doc(task)) == task
    assert task_name("web", task) == "web.1"
    assert task_name("mon", new_task(slot=None, node_id="abc")) == "mon.abc"
