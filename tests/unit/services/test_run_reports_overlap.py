"""A task's container is made while the managers hear `accepted` and `preparing` (two commits),
not after: the create starts before those reports are answered, and the managers still see
the states in Docker's order (starting only after both, rejected too)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from overlaynet.agent.tasks import AssignedTask, TaskHooks, TaskRunner
from overlaynet.errors import ApiError, Unavailable
from tests.unit.services.test_health_runner import entry


class SlowManagers:
    """Reports are answered only once `release` is set; every state is recorded as sent."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.release = trio.Event()

    async def call(self, op: str, **args: Any) -> Any:
        assert op == "task.report"
        self.sent.append(args["state"])
        await self.release.wait()
        return {"accepted": True}


def runner(managers: SlowManagers, created: list[str], refuse: bool = False) -> TaskRunner:
    async def create(task: AssignedTask) -> str:
        created.append(task.id)
        if refuse:
            raise Unavailable("no such image")
        return "c1"

    async def nothing(*_: Any) -> None:
        return None

    hooks = TaskHooks(
        call=managers.call,
        local_tasks=dict,
        create=create,
        start=nothing,
        stop=nothing,
        remove=nothing,
        active=lambda: True,
    )
    return TaskRunner(hooks)


async def test_the_container_is_made_while_accepted_is_reported() -> None:
    managers, created = SlowManagers(), list[str]()
    task = AssignedTask.from_doc(entry("assigned", None))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner(managers, created)._run, task)
        await trio.testing.wait_all_tasks_blocked()
        # `accepted` is still waiting for its answer, and the container is made already.
        assert managers.sent == ["accepted"] and created == ["t1"]
        managers.release.set()
    assert managers.sent == ["accepted", "preparing", "starting", "running"]


async def test_a_refused_create_is_reported_rejected_after_preparing() -> None:
    managers, created = SlowManagers(), list[str]()
    task_runner = runner(managers, created, refuse=True)
    task = AssignedTask.from_doc(entry("assigned", None))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(task_runner._run, task)
        await trio.testing.wait_all_tasks_blocked()
        managers.release.set()
    assert managers.sent == ["accepted", "preparing", "rejected"]
    assert task_runner.counters["tasks_rejected"] == 1


async def test_an_unheard_accepted_leaves_the_container_for_the_next_plan() -> None:
    created: list[str] = []

    async def unreachable(op: str, **args: Any) -> Any:
        raise ApiError("no manager reachable")

    task_runner = runner(SlowManagers(), created)
    task_runner.hooks.call = unreachable
    task = AssignedTask.from_doc(entry("assigned", None))
    try:
        await task_runner._run(task)
    except ApiError:
        pass
    else:
        raise AssertionError("the unheard report must reach the caller (counted there)")
    assert created == ["t1"]  # made; the next plan sees it made, not started: `Start`
