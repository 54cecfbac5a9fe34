"""`task.assigned` long-polled (issue 13): the managers hold an answer while the state is still at
the index the worker already has, and answer as soon as it moves (or after ASSIGNED_HOLD, with
the same index); the worker's runner passes its index and stops waiting when one of its task
containers changes meanwhile (a task's process ended: its report must not wait)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from overlaynet.agent.tasks import LocalTask, TaskHooks, TaskRunner
from overlaynet.cluster import manager
from tests.unit.cluster.conftest import swarm as swarm  # the loopback leader fixture
from tests.unit.cluster.loopback import Swarm, eventually
from tests.unit.cluster.test_manager_services import APPSERVER, two_nodes


async def test_a_held_answer_leaves_when_the_state_moves(swarm: Swarm) -> None:
    _, client = await two_nodes(swarm)
    first = await client.call("task.assigned")
    assert first["tasks"] == []
    answers: list[dict[str, Any]] = []

    async def held() -> None:
        answers.append(await client.call("task.assigned", index=first["index"]))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(held)
        await eventually(lambda: swarm.server.stats["assigned_held"] == 1)
        await swarm.leader_client.call("service.create", **{**APPSERVER, "replicas": 2})
    # Asked before the service existed, answered with it: held until the state moved.
    (answer,) = answers
    assert answer["index"] > first["index"]
    assert [t["service_name"] for t in answer["tasks"]] == ["appserver"]


async def test_an_unchanged_state_is_answered_after_the_hold(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "ASSIGNED_HOLD", 0.05)
    _, client = await two_nodes(swarm)
    first = await client.call("task.assigned")
    again = await client.call("task.assigned", index=first["index"])
    assert again == first
    assert swarm.server.stats["assigned_held"] == 1
    # Without an index (an old worker, or a first ask) nothing is held.
    await client.call("task.assigned")
    assert swarm.server.stats["assigned_held"] == 1


class Managers:
    """task.assigned as a manager answers it: the first ask at once, a held one never (the
    state does not move here), an ask without an index at once."""

    def __init__(self) -> None:
        self.asks: list[dict[str, Any]] = []

    async def call(self, op: str, **args: Any) -> Any:
        assert op == "task.assigned"
        self.asks.append(args)
        if "index" in args:
            await trio.sleep_forever()
        return {"index": 7, "tasks": []}


async def test_the_runner_passes_its_index_and_a_local_change_ends_the_wait() -> None:
    managers = Managers()
    local: dict[str, LocalTask] = {}

    removed: list[str] = []

    async def never(*_: Any) -> Any:
        raise AssertionError("nothing to do in this test")

    async def remove(cid: str) -> None:
        removed.append(cid)

    hooks = TaskHooks(
        call=managers.call,
        local_tasks=lambda: dict(local),
        create=never,
        start=never,
        stop=never,
        remove=remove,
        active=lambda: True,
    )
    runner = TaskRunner(hooks)
    await runner.step()
    assert managers.asks == [{}] and runner.last_index == 7
    async with trio.open_nursery() as nursery:
        nursery.start_soon(runner.step)
        await eventually(lambda: len(managers.asks) == 2)
        assert managers.asks[1] == {"index": 7}
        # A task's container appears (or ends): the held ask is dropped and asked again plainly.
        local["t1"] = LocalTask("t1", "c1", running=False, exit_code=137)
        runner.poke()  # as the agent does on every change of its containers
    assert managers.asks[2] == {}
    assert runner.counters["assigned_woken"] == 1
    assert removed == ["c1"]  # the plan saw the change: not a task the managers list
