"""SharedCall (the task runner's one `state.snapshot` for the tasks of one assignment): callers
that arrive during a call share its answer or its error; a later caller makes a new call; a
caller left waiting by a cancelled first caller makes the call itself."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from overlaynet.agent.tasks import SharedCall
from overlaynet.errors import ApiError


class Manager:
    def __init__(self, fail: bool = False) -> None:
        self.release = trio.Event()
        self.calls = 0
        self.fail = fail

    async def snapshot(self) -> Any:
        self.calls += 1
        n = self.calls
        await self.release.wait()
        if self.fail:
            raise ApiError("no manager reachable")
        return {"call": n}


async def test_concurrent_callers_share_one_call_and_a_later_one_calls_again() -> None:
    manager = Manager()
    shared = SharedCall(manager.snapshot)
    answers: list[Any] = []

    async def ask() -> None:
        answers.append(await shared())

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        manager.release.set()
    assert manager.calls == 1 and answers == [{"call": 1}] * 4
    assert await shared() == {"call": 2}


async def test_an_error_reaches_every_caller_of_that_call() -> None:
    manager = Manager(fail=True)
    shared = SharedCall(manager.snapshot)
    errors: list[str] = []

    async def ask() -> None:
        with pytest.raises(ApiError) as e:
            await shared()
        errors.append(str(e.value))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        manager.release.set()
    assert manager.calls == 1 and errors == ["no manager reachable"] * 3


async def test_a_waiter_calls_again_when_the_first_caller_is_cancelled() -> None:
    manager = Manager()
    shared = SharedCall(manager.snapshot)
    answers: list[Any] = []

    async def ask() -> None:
        answers.append(await shared())

    first = trio.CancelScope()

    async def cancelled_caller() -> None:
        with first:
            await shared()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancelled_caller)  # makes the call
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(ask)  # waits on it
        await trio.testing.wait_all_tasks_blocked()
        assert manager.calls == 1
        first.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert manager.calls == 2  # the waiter made its own
        manager.release.set()
    assert answers == [{"call": 2}]
