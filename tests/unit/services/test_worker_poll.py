"""The task runner's loop asks the managers again at once after a long-polled answer (they hold
the next ask until the assignment moves): a new assignment is carried out after LONG_POLL_GAP,
not after the poll interval. After a failed ask it waits the interval (no manager to hold it)."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from overlaynet.agent import tasks as tasks_mod
from overlaynet.agent.tasks import LocalTask, TaskHooks, TaskRunner
from overlaynet.errors import ApiError
from tests.unit.services.test_health_runner import entry

# Far longer than anything the test lets pass on its clock: a loop that waited it would hang.
LONG_INTERVAL = 1000.0


class Managers:
    """Index 1 with no task at the first ask; asked on from 1, index 2 with task t1 at once
    (the state moved while the ask was held); asked on from 2, held for ever."""

    def __init__(self, fail_first: bool = False) -> None:
        self.asks: list[dict[str, Any]] = []
        self.reports: list[str] = []
        self.fail_first = fail_first

    async def call(self, op: str, **args: Any) -> Any:
        if op == "task.report":
            self.reports.append(args["state"])
            return {"accepted": True}
        self.asks.append(args)
        if self.fail_first and len(self.asks) == 1:
            raise ApiError("no manager reachable")
        index = args.get("index")
        if index is None:
            return {"index": 1, "tasks": []}
        if index == 1:
            return {"index": 2, "tasks": [entry("assigned", None)]}
        await trio.sleep_forever()


def runner(managers: Managers, created: list[str]) -> TaskRunner:
    local: dict[str, LocalTask] = {}

    async def create(task: Any) -> str:
        created.append(task.id)
        return "c1"

    async def nothing(*_: Any) -> None:
        return None

    hooks = TaskHooks(
        call=managers.call,
        local_tasks=lambda: dict(local),
        create=create,
        start=nothing,
        stop=nothing,
        remove=nothing,
        active=lambda: True,
    )
    return TaskRunner(hooks, interval=LONG_INTERVAL)


async def test_a_new_assignment_is_run_after_the_gap_not_the_interval(
    mock_clock: trio.testing.MockClock,
) -> None:
    managers = Managers()
    created: list[str] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(runner(managers, created).run)
        await trio.testing.wait_all_tasks_blocked()
        assert managers.asks == [{}] and created == []
        mock_clock.jump(tasks_mod.LONG_POLL_GAP)
        await trio.testing.wait_all_tasks_blocked()
        # Asked again from index 1 (answered at once with t1), t1 created and running: no
        # poll interval passed on the clock meanwhile.
        assert created == ["t1"]
        assert managers.reports == ["accepted", "preparing", "starting", "running"]
        mock_clock.jump(tasks_mod.LONG_POLL_GAP)
        await trio.testing.wait_all_tasks_blocked()
        assert managers.asks[1:] == [{"index": 1}, {"index": 2}]  # held there now
        nursery.cancel_scope.cancel()


async def test_after_a_failed_ask_the_runner_waits_the_interval(
    mock_clock: trio.testing.MockClock,
) -> None:
    managers = Managers(fail_first=True)
    created: list[str] = []
    task_runner = runner(managers, created)
    async with trio.open_nursery() as nursery:
        await nursery.start(task_runner.run)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(tasks_mod.LONG_POLL_GAP)
        await trio.testing.wait_all_tasks_blocked()
        assert len(managers.asks) == 1  # still waiting: nothing holds its next ask
        assert task_runner.counters["assigned_failures"] == 1
        mock_clock.jump(LONG_INTERVAL)
        await trio.testing.wait_all_tasks_blocked()
        assert managers.asks[1] == {}
        nursery.cancel_scope.cancel()
