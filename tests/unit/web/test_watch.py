"""The agent's `watch` long-poll (overlaynet/agent/watch.py): the change log's generations and
cursors (pure), and the feed's waiting (trio, on a mock clock)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.agent.watch import MAX_WAIT, ChangeFeed, ChangeLog, WatchChanges, fingerprint
from overlaynet.errors import InvalidArgument


def test_first_look_changes_every_part_in_one_generation() -> None:
    log = ChangeLog("e1")
    assert sorted(log.observe({"containers": [], "networks": [1]})) == ["containers", "networks"]
    assert log.generation == 1
    assert log.since("e1", 0) == ["containers", "networks"]
    assert log.since("e1", 1) == []


def test_an_unchanged_look_keeps_the_generation() -> None:
    log = ChangeLog("e1")
    log.observe({"containers": [{"id": "a"}]})
    assert log.observe({"containers": [{"id": "a"}]}) == []
    assert log.generation == 1


def test_a_cursor_sees_only_the_parts_changed_after_it() -> None:
    log = ChangeLog("e1")
    log.observe({"containers": [], "networks": [], "members": []})
    log.observe({"containers": [{"id": "a"}], "networks": [], "members": []})
    answer = log.answer("e1", 1)
    assert answer == {"epoch": "e1", "generation": 2, "changed": {"containers": [{"id": "a"}]}}


def test_another_epoch_gets_everything() -> None:
    log = ChangeLog("new")
    log.observe({"containers": [], "fdb": {}})
    assert log.since("old", 1) == ["containers", "fdb"]
    assert log.since("", 0) == ["containers", "fdb"]


def test_a_cursor_ahead_of_the_log_gets_everything() -> None:
    log = ChangeLog("e1")
    log.observe({"vips": {}})
    assert log.since("e1", 99) == ["vips"]


def test_a_part_that_went_away_is_a_change() -> None:
    log = ChangeLog("e1")
    log.observe({"containers": [], "extra": 1})
    assert log.observe({"containers": []}) == ["extra"]
    assert log.answer("e1", 1)["changed"] == {"extra": None}


def test_request_bounds() -> None:
    assert WatchChanges(cursor=3).timeout == MAX_WAIT
    with pytest.raises(InvalidArgument):
        WatchChanges(timeout=MAX_WAIT + 1)
    with pytest.raises(InvalidArgument):
        WatchChanges(cursor=-1)


@given(st.dictionaries(st.text(max_size=3), st.integers()))
def test_fingerprint_ignores_key_order(d: dict[str, int]) -> None:
    assert fingerprint(d) == fingerprint(dict(reversed(list(d.items()))))


async def test_a_poke_after_a_change_answers_before_the_wait_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state: dict[str, Any] = {"containers": []}
    feed = ChangeFeed(lambda: dict(state), epoch="e")
    first = await feed.wait("", 0, MAX_WAIT)
    cursor = first["generation"]
    answers: list[dict[str, Any]] = []

    async def waiter() -> None:
        answers.append(await feed.wait("e", cursor, MAX_WAIT))
        answers[-1]["waited"] = trio.current_time() - start

    start = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        assert not answers  # nothing changed: still waiting
        state["containers"] = [{"id": "a"}]
        feed.poke()
    assert answers[0]["waited"] == 0  # (virtual time) woken by the poke, not the bound
    assert answers[0]["generation"] == cursor + 1
    assert answers[0]["changed"] == {"containers": [{"id": "a"}]}


async def test_nothing_changed_answers_empty_after_the_bound(
    autojump_clock: trio.testing.MockClock,
) -> None:
    feed = ChangeFeed(lambda: {"containers": []}, epoch="e")
    cursor = (await feed.wait("", 0, MAX_WAIT))["generation"]
    start = trio.current_time()
    answer = await feed.wait("e", cursor, MAX_WAIT)
    assert answer["changed"] == {}
    assert trio.current_time() - start == pytest.approx(MAX_WAIT)


async def test_a_change_without_a_poke_is_still_found_by_the_last_look(
    autojump_clock: trio.testing.MockClock,
) -> None:
    state: dict[str, Any] = {"vips": []}
    feed = ChangeFeed(lambda: dict(state), epoch="e")
    cursor = (await feed.wait("", 0, MAX_WAIT))["generation"]

    async def change_later() -> None:
        await trio.sleep(MAX_WAIT / 2)
        state["vips"] = ["web"]

    async with trio.open_nursery() as nursery:
        nursery.start_soon(change_later)
        answer = await feed.wait("e", cursor, MAX_WAIT)
    assert answer["changed"] == {"vips": ["web"]}
