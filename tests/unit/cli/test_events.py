"""The event ring, its filters and node up/down (agent/events.py), and how the CLI reads times
and prints events (cli/events_cmd.py): pure, no agent."""

from __future__ import annotations

import itertools

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.agent.events import (
    EventLog,
    EventRing,
    Events,
    MemberWatch,
    matches,
    parse_filters,
)
from overlaynet.cli.events_cmd import TimeError, line, parse_time, timestamp
from overlaynet.errors import InvalidArgument

CID = "a" * 64
NID = "b" * 64


def _ring() -> EventRing:
    ring = EventRing()
    ring.emit("container", "create", CID, {"image": "alpine", "name": "web"}, 1_000)
    ring.emit("network", "connect", NID, {"name": "mynet", "container": CID}, 2_000)
    ring.emit("container", "start", CID, {"image": "alpine", "name": "web"}, 3_000)
    ring.emit("container", "start", "c" * 64, {"image": "busybox", "name": "db"}, 4_000)
    return ring


def _actions(ring: EventRing, *filters: str, cursor: int = 0) -> list[str]:
    return [f"{e.type} {e.action}" for e in ring.after(cursor, parse_filters(filters))]


def test_events_come_in_order_after_the_cursor() -> None:
    ring = _ring()
    assert ring.cursor == 4
    assert _actions(ring) == [
        "container create",
        "network connect",
        "container start",
        "container start",
    ]
    assert _actions(ring, cursor=2) == ["container start", "container start"]
    assert _actions(ring, cursor=4) == []


def test_filters_narrow_by_type_event_and_name_and_keys_combine() -> None:
    ring = _ring()
    assert _actions(ring, "type=network") == ["network connect"]
    assert _actions(ring, "event=start") == ["container start", "container start"]
    # A container by name, or by id (any prefix): then its network connects too.
    assert _actions(ring, "container=web") == ["container create", "container start"]
    assert _actions(ring, "container=aaaa") == [
        "container create",
        "network connect",
        "container start",
    ]
    assert _actions(ring, "container=aaaa", "type=container") == [
        "container create",
        "container start",
    ]
    assert _actions(ring, "network=mynet") == ["network connect"]
    # The same key twice is either; two keys are both.
    assert len(_actions(ring, "container=web", "container=db", "event=start")) == 2
    assert _actions(ring, "image=busybox") == ["container start"]


def test_since_and_until_bound_the_events_by_time() -> None:
    ring = _ring()
    got = ring.after(0, {}, since=2e-6, until=3e-6)
    assert [e.time_ns for e in got] == [2_000, 3_000]


@pytest.mark.parametrize("bad", ["type", "type=volume", "colour=red", "event="])
def test_bad_filters_are_refused_clearly(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_filters([bad])
    with pytest.raises(InvalidArgument):
        Events(filters=(bad,)).check()


def test_the_ring_is_bounded_and_keeps_the_newest() -> None:
    ring = EventRing(capacity=3)
    for i in range(10):
        ring.emit("container", "start", CID, {}, i)
    assert [e.seq for e in ring.after(0, {})] == [8, 9, 10]


@given(st.lists(st.sampled_from(["alive", "suspect", "dead"]), max_size=20))
def test_member_watch_alternates_up_and_down(states: list[str]) -> None:
    watch = MemberWatch()
    seen = []
    for state in states:
        seen += [a for _, _, a in watch.changes([{"name": "node2", "state": state}])]
    # Never the same twice in a row, and never down before up.
    assert all(a != b for a, b in itertools.pairwise(seen))
    assert not seen or seen[0] == "up"


def test_member_watch_reports_a_node_going_down_and_coming_back() -> None:
    watch = MemberWatch()
    alive = [{"name": "node1", "state": "alive", "addr": "192.168.0.11"}]
    assert watch.changes(alive) == [("node1", "192.168.0.11", "up")]
    assert watch.changes(alive) == []
    assert watch.changes([{"name": "node1", "state": "suspect"}]) == []
    assert watch.changes([{"name": "node1", "state": "dead", "addr": "x"}]) == [
        ("node1", "x", "down")
    ]
    assert watch.changes(alive) == [("node1", "192.168.0.11", "up")]


def test_docker_json_shape() -> None:
    doc = _ring().after(2, {})[0].doc()
    assert doc["Type"] == "container" and doc["Action"] == "start" and doc["status"] == "start"
    assert doc["Actor"] == {"ID": CID, "Attributes": {"image": "alpine", "name": "web"}}
    assert doc["from"] == "alpine" and doc["timeNano"] == 3_000 and doc["time"] == 0
    assert "status" not in _ring().after(1, {})[0].doc()  # network events have no old fields


async def test_handle_waits_for_a_new_event_then_answers() -> None:
    clock = iter(range(10**6))
    log = EventLog(clock_ns=lambda: next(clock))
    now = await log.handle(Events(after=-1))
    assert now == {"events": [], "cursor": 0}

    async def later() -> None:
        await trio.sleep(0.3)
        log.emit("container", "die", CID, {"exitCode": "0"})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(later)
        res = await log.handle(Events(after=0, timeout=1.0))
    assert [d["Action"] for d in res["events"]] == ["die"] and res["cursor"] == 1
    # Nothing new: it answers empty after the wait, with the cursor unchanged.
    assert await log.handle(Events(after=1, timeout=0.2)) == {"events": [], "cursor": 1}
    # Filtered out: the cursor still moves past it.
    log.emit("network", "create", NID, {"name": "n"})
    res = await log.handle(Events(after=1, timeout=0.1, filters=("type=container",)))
    assert res == {"events": [], "cursor": 2}


def test_matches_label_filter() -> None:
    ring = EventRing()
    ev = ring.emit("container", "start", CID, {"tier": "web", "name": "x"}, 0)
    assert matches(ev, parse_filters(["label=tier=web"]))
    assert matches(ev, parse_filters(["label=tier"]))
    assert not matches(ev, parse_filters(["label=tier=db"]))


def test_times_docker_reads() -> None:
    now = 1_800_000_000.0
    assert parse_time("1700000000", now) == 1_700_000_000.0
    assert parse_time("1700000000.5", now) == 1_700_000_000.5
    assert parse_time("10m", now) == now - 600
    assert parse_time("1h30m", now) == now - 5400
    assert parse_time("1.5s", now) == now - 1.5
    assert parse_time("-30s", now) == now + 30
    assert parse_time("2026-11-29T19:30:00Z", now) == 1_795_980_600.0
    assert parse_time("2026-11-29T19:30:00", now) == 1_795_980_600.0
    assert parse_time("2026-11-29T20:30:00+01:00", now) == 1_795_980_600.0
    for bad in ("yesterday", "10x", "m10", ""):
        with pytest.raises(TimeError):
            parse_time(bad, now)


def test_an_event_prints_as_docker_prints_it() -> None:
    assert timestamp(1_795_980_600_000_000_123) == "2026-11-29T19:30:00.000000123Z"
    doc = {
        "Type": "container",
        "Action": "start",
        "Actor": {"ID": CID, "Attributes": {"name": "web", "image": "alpine"}},
        "timeNano": 1_795_980_600_000_000_000,
    }
    assert (
        line(doc)
        == f"2026-11-29T19:30:00.000000000Z container start {CID} (image=alpine, name=web)"
    )
    doc["Actor"] = {"ID": "node2", "Attributes": {}}
    assert line(doc).endswith("container start node2")


def test_node_events_carry_the_hostname_when_the_managers_give_it() -> None:
    log = EventLog(clock_ns=lambda: 0)
    members = [{"name": "id2", "state": "alive", "addr": "192.168.0.12"}]
    assert log.moved(members) and log.moved(members)  # looking changes nothing
    log.members(members, {"id2": "node2"})
    assert not log.moved(members)
    (ev,) = log.ring.after(0, {})
    assert (ev.actor_id, ev.attributes["name"], ev.action) == ("id2", "node2", "up")
    log.members([{"name": "id2", "state": "dead", "addr": "192.168.0.12"}])
    assert log.ring.after(1, {})[0].attributes["name"] == "id2"  # no names: the id
