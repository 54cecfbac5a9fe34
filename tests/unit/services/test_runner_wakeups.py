"""Issue 15: an idle task runner sleeps until something it follows changes. Outside a swarm it
waits for swarm init/join (`poke`), not a poll interval; while a long-polled `task.assigned` is
held it rechecks its task containers when the agent pokes it (a process ended), not ten times a
second. Both keep a slow safety net, and a poke is answered at once."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from overlaynet.agent import tasks as tasks_mod
from overlaynet.agent.tasks import LocalTask, TaskHooks, TaskRunner

# Virtual seconds an idle runner is watched for: long enough for a poll to show up many times.
IDLE_SPAN = 60.0


class Managers:
    """The first ask answered at once (index 7, no task); an ask from an index held for ever."""

    def __init__(self) -> None:
        self.asks: list[dict[str, Any]] = []

    async def call(self, op: str, **args: Any) -> Any:
        assert op == "task.assigned"
        self.asks.append(args)
        if "index" in args:
            await trio.sleep_forever()
        return {"index": 7, "tasks": []}


class Host:
    """What the runner reads of its host, counted: each read is one of its wake-ups."""

    def __init__(self, in_swarm: bool) -> None:
        self.in_swarm = in_swarm
        self.local: dict[str, LocalTask] = {}
        self.active_reads = 0
        self.local_reads = 0
        self.removed: list[str] = []

    def active(self) -> bool:
        self.active_reads += 1
        return self.in_swarm

    def local_tasks(self) -> dict[str, LocalTask]:
        self.local_reads += 1
        return dict(self.local)

    async def remove(self, cid: str) -> None:
        self.removed.append(cid)


async def idle_for(clock: trio.testing.MockClock, seconds: float) -> None:
    """Let `seconds` pass on the clock with every timer on the way firing (the clock jumps from
    deadline to deadline while all tasks sleep), then stop the jumping again."""
    clock.autojump_threshold = 0
    await trio.sleep(seconds)
    clock.autojump_threshold = float("inf")
    await trio.testing.wait_all_tasks_blocked()


def runner(managers: Managers, host: Host) -> TaskRunner:
    async def never(*_: Any) -> Any:
        raise AssertionError("nothing to run in this test")

    hooks = TaskHooks(
        call=managers.call,
        local_tasks=host.local_tasks,
        create=never,
        start=never,
        stop=never,
        remove=host.remove,
        active=host.active,
    )
    return TaskRunner(hooks)


async def test_outside_a_swarm_the_runner_sleeps_until_swarm_join_pokes_it(
    mock_clock: trio.testing.MockClock,
) -> None:
    managers, host = Managers(), Host(in_swarm=False)
    task_runner = runner(managers, host)
    async with trio.open_nursery() as nursery:
        await nursery.start(task_runner.run)
        await trio.testing.wait_all_tasks_blocked()
        await idle_for(mock_clock, IDLE_SPAN)
        # A look per safety period, not one per poll interval (0.5 s: 120 looks).
        assert host.active_reads <= IDLE_SPAN / tasks_mod.IDLE_RECHECK + 2
        assert managers.asks == []
        # Joined: the runner asks the managers at once, with no time passing on its clock.
        host.in_swarm = True
        task_runner.poke()
        await trio.testing.wait_all_tasks_blocked()
        assert managers.asks[0] == {}
        nursery.cancel_scope.cancel()


async def test_a_held_ask_is_not_a_poll_of_the_task_containers(
    mock_clock: trio.testing.MockClock,
) -> None:
    managers, host = Managers(), Host(in_swarm=True)
    task_runner = runner(managers, host)
    async with trio.open_nursery() as nursery:
        await nursery.start(task_runner.run)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(tasks_mod.LONG_POLL_GAP)
        await trio.testing.wait_all_tasks_blocked()
        assert managers.asks == [{}, {"index": 7}]  # held now
        before = host.local_reads
        await idle_for(mock_clock, IDLE_SPAN)
        # A recheck per safety period, not one per 0.1 s (600 rechecks).
        assert host.local_reads - before <= IDLE_SPAN / tasks_mod.LOCAL_RECHECK + 2
        nursery.cancel_scope.cancel()


async def test_a_poke_for_a_task_container_that_ended_ends_the_held_ask_at_once(
    mock_clock: trio.testing.MockClock,
) -> None:
    managers, host = Managers(), Host(in_swarm=True)
    task_runner = runner(managers, host)
    async with trio.open_nursery() as nursery:
        await nursery.start(task_runner.run)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(tasks_mod.LONG_POLL_GAP)
        await trio.testing.wait_all_tasks_blocked()
        assert len(managers.asks) == 2
        # A container of a task the managers do not list ended here; the agent pokes.
        host.local["t1"] = LocalTask("t1", "c1", running=False, exit_code=137)
        task_runner.poke()
        await trio.testing.wait_all_tasks_blocked()
        # No time passed on the clock: the held ask was dropped, asked plainly, plan carried out.
        assert managers.asks[2] == {}
        assert task_runner.counters["assigned_woken"] == 1
        assert host.removed == ["c1"]
        nursery.cancel_scope.cancel()


async def test_a_poke_without_a_change_keeps_the_ask_held(
    mock_clock: trio.testing.MockClock,
) -> None:
    managers, host = Managers(), Host(in_swarm=True)
    task_runner = runner(managers, host)
    async with trio.open_nursery() as nursery:
        await nursery.start(task_runner.run)
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(tasks_mod.LONG_POLL_GAP)
        await trio.testing.wait_all_tasks_blocked()
        task_runner.poke()  # another container's change, say: nothing of the tasks moved
        await trio.testing.wait_all_tasks_blocked()
        assert managers.asks == [{}, {"index": 7}]
        assert task_runner.counters["assigned_woken"] == 0
        nursery.cancel_scope.cancel()
