"""The task runner's long-poll: a manager's refusal reaches the runner's loop as the plain
ApiError it handles (counted, retried), never wrapped in the poll's nursery group — which used
to end the agent each time a revoked node polled or no manager answered."""

from __future__ import annotations

from typing import Any

import pytest

from overlaynet.agent.tasks import TaskHooks, TaskRunner
from overlaynet.errors import ApiError, Unavailable


async def _never(*_: Any) -> Any:
    raise AssertionError("not expected")


def _hooks(call: Any) -> TaskHooks:
    return TaskHooks(
        call=call,
        local_tasks=dict,
        create=_never,
        start=_never,
        stop=_never,
        remove=_never,
        active=lambda: True,
    )


async def test_a_refused_long_poll_raises_the_plain_api_error() -> None:
    async def refuse(op: str, **args: Any) -> Any:
        assert op == "task.assigned" and args == {"index": 3}
        raise Unavailable("no manager answers")

    runner = TaskRunner(_hooks(refuse), last_index=3)
    with pytest.raises(ApiError, match="no manager answers"):
        await runner.step()
