"""A browser's backlog: coalesced per key, events bounded, nothing silently lost."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from overlaynet.web.diff import Event, Patch, apply, diff
from overlaynet.web.feed import ClientFeed
from overlaynet.web.model import View


def event(i: int) -> Event:
    return Event(float(i), "container", "node1", f"event {i}")


def test_many_changes_of_one_record_are_one_record_to_send() -> None:
    feed = ClientFeed()
    for i in range(100):
        feed.push(Patch({"ctr/a": {"kind": "container", "n": i}}), [])
    message = feed.take()
    assert message is not None
    assert message["set"] == {"ctr/a": {"kind": "container", "n": 99}}
    assert message["del"] == []


def test_a_record_set_then_deleted_is_sent_as_deleted() -> None:
    feed = ClientFeed()
    feed.push(Patch({"k": {"v": 1}}), [])
    feed.push(Patch(removed={"k"}), [])
    assert feed.take() == {"set": {}, "del": ["k"], "events": [], "dropped": 0}


def test_events_past_the_bound_drop_the_oldest_and_say_how_many() -> None:
    feed = ClientFeed(max_events=10)
    feed.push(Patch(), [event(i) for i in range(25)])
    message = feed.take()
    assert message is not None
    assert [e["text"] for e in message["events"]] == [f"event {i}" for i in range(15, 25)]
    assert message["dropped"] == 15
    assert feed.dropped_total == 15


def test_take_empties_the_backlog() -> None:
    feed = ClientFeed()
    assert feed.take() is None
    feed.push(Patch({"k": {}}), [event(1)])
    assert feed.pending
    assert feed.take() is not None
    assert not feed.pending
    assert feed.take() is None


views = st.dictionaries(st.sampled_from("abcdef"), st.fixed_dictionaries({"v": st.integers(0, 2)}))


@given(st.lists(views, min_size=1, max_size=12))
def test_a_lagging_browser_ends_at_the_same_view(history: list[View]) -> None:
    """However the server's views went, one coalesced message brings the page to the last."""
    feed = ClientFeed()
    for old, new in zip([{}, *history], history, strict=False):
        feed.push(diff(old, new), [])
    message = feed.take()
    page: View = {}
    if message is not None:
        page = apply(page, Patch(message["set"], set(message["del"])))
    assert page == history[-1]
