"""Patches between views, and the timeline events that explain them."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overlaynet.web.diff import Level, Patch, apply, diff, events
from overlaynet.web.model import View, build_view
from tests.unit.web.reports import report, silent

keys = st.sampled_from([f"k{i}" for i in range(8)])
records = st.fixed_dictionaries({"kind": st.just("x"), "v": st.integers(0, 3)})
views = st.dictionaries(keys, records, max_size=8)


@given(views, views)
def test_applying_the_diff_gives_the_new_view(old: View, new: View) -> None:
    assert apply(old, diff(old, new)) == new


@given(views, views, views)
def test_merged_patches_equal_the_patches_in_turn(a: View, b: View, c: View) -> None:
    first, second = diff(a, b), diff(b, c)
    merged = Patch(dict(first.records), set(first.removed))
    merged.merge(second)
    assert apply(a, merged) == apply(apply(a, first), second) == c


@given(views)
def test_an_unchanged_view_is_an_empty_patch(view: View) -> None:
    assert not diff(view, dict(view))


def texts(old: View, new: View) -> list[str]:
    return [e.text for e in events(old, new, 100.0)]


def three(**kwargs: object) -> View:
    return build_view("lab", [report("node1"), report("node2", **kwargs), report("node3")], {})  # type: ignore[arg-type]


def test_the_first_view_is_no_event() -> None:
    assert texts({}, three()) == []


def test_a_started_container_is_one_event_in_its_hosts_words() -> None:
    after = three(containers=[("web", "running")])
    assert "node2: container web (alpine) created, running" in texts(three(), after)


def test_a_container_that_exits_is_a_warning() -> None:
    before = three(containers=[("web", "running")])
    after = three(containers=[("web", "exited")])
    (event,) = [e for e in events(before, after, 1.0) if e.kind == "container"]
    assert event.text == "node2: container web running → exited"
    assert event.level == Level.WARN


def test_a_removed_container_is_an_event() -> None:
    before = three(containers=[("web", "running")])
    assert "node2: container web removed" in texts(before, three())


def test_a_host_going_down_is_a_warning_with_both_states() -> None:
    before = three()
    dead = {"node1": "alive", "node2": "dead", "node3": "alive"}
    after = build_view(
        "lab", [report("node1", gossip=dead), silent("node2"), report("node3", gossip=dead)], before
    )
    found = events(before, after, 1.0)
    host = [e for e in found if e.kind == "host"]
    assert [e.text for e in host] == [
        "node2: agent stopped answering (no agent: connection refused)",
        "node2: Ready → Down",
    ]
    assert all(e.level == Level.WARN for e in host)
    gossip = [e.text for e in found if e.kind == "gossip"]
    assert gossip == ["node1 gossip: node2 alive → dead", "node3 gossip: node2 alive → dead"]


def test_a_silent_hosts_stale_records_tell_nothing() -> None:
    before = three(containers=[("web", "running")])
    after = build_view("lab", [report("node1"), silent("node2"), report("node3")], before)
    assert [e.kind for e in events(before, after, 1.0)] == ["host", "host"]


def test_endpoint_table_rows_added_and_withdrawn() -> None:
    before, after = three(), three(containers=[("web", "running")])
    assert "node2 endpoint table webnet: + web 10.0.1.2 on node2 (Lamport 1)" in texts(
        before, after
    )
    assert "node2 endpoint table webnet: − web 10.0.1.2" in texts(after, before)


def test_joining_an_overlay_names_the_host() -> None:
    before, after = three(on_overlay=False), three()
    assert "node2 joined overlay network webnet (VTEP up)" in texts(before, after)


def test_events_serialise_to_the_pages_shape() -> None:
    (event,) = [e for e in events(three(), three(containers=[("a", "running")]), 7.5)][:1]
    assert event.to_json() == {
        "t": 7.5,
        "kind": "container",
        "host": "node2",
        "text": "node2: container a (alpine) created, running",
        "level": "info",
    }


def test_a_container_seen_before_it_started_says_created_once() -> None:
    assert "node2: container web (alpine) created" in texts(
        three(), three(containers=[("web", "created")])
    )
