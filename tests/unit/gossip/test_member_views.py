"""The members' view is kept between changes (issue 15: a swarm manager asks for it per node
per request, and rebuilding it each time was most of an idle 60-host manager's CPU): whatever
sequence of rumours, probes, timers, syncs and reaps a node goes through, `views()` and
`view_of()` always say what the members are now, and nothing a caller does to the list it got
changes them."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.gossip.broadcast import BroadcastQueue
from overlaynet.gossip.config import SwimConfig
from overlaynet.gossip.swim import Membership, MemberView
from overlaynet.wire.gossip import (
    Ack,
    Address,
    Alive,
    Dead,
    MemberRecord,
    MemberState,
    Message,
    Ping,
    Suspect,
)

# Short reap time so that reaps happen within a generated run's few simulated seconds.
CFG = SwimConfig(probe_interval=1.0, probe_timeout=0.5, dead_reap_time=3.0)
NAMES = ["h1", "h2", "h3", "h4", "h5"]


def addr(name: str, alt: bool = False) -> Address:
    return (f"10.0.{1 if alt else 0}.{name[1:]}", 7946)


def fresh(m: Membership) -> list[MemberView]:
    """The view built from the members as they are now."""
    return [
        MemberView(x.name, x.addr, x.state, x.incarnation)
        for x in sorted(m.members.values(), key=lambda x: x.name)
    ]


names = st.sampled_from(NAMES)
incarnations = st.integers(0, 3)
states = st.sampled_from(list(MemberState))
messages = st.one_of(
    st.builds(lambda i, n, alt: Alive(i, n, addr(n, alt)), incarnations, names, st.booleans()),
    st.builds(Suspect, incarnations, names, names),
    st.builds(Dead, incarnations, names, names),
    st.builds(lambda s, n: Ping(s, n, "h2", addr("h2")), st.integers(0, 5), names),
    st.builds(Ack, st.integers(0, 5), names),
)
steps = st.one_of(
    st.tuples(st.just("message"), messages),
    st.tuples(st.just("timer"), st.floats(0.0, 2.0)),
    st.tuples(
        st.just("sync"),
        st.lists(
            st.builds(lambda n, i, s: MemberRecord(n, addr(n), i, s), names, incarnations, states),
            max_size=4,
        ),
    ),
    st.tuples(st.just("reap"), st.floats(0.0, 5.0)),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(steps, max_size=40))
def test_views_always_match_the_members(run: list[tuple[str, object]]) -> None:
    m = Membership("h1", addr("h1"), CFG, random.Random(1), 0.0, BroadcastQueue())
    now = 0.0
    for kind, arg in run:
        if kind == "message":
            assert isinstance(arg, Message)
            m.handle(arg, addr("h2"), now)
        elif kind == "timer":
            assert isinstance(arg, float)
            now += arg
            m.handle_timer(now)
        elif kind == "sync":
            assert isinstance(arg, list)
            m.merge_remote(arg, now, peer="h2")
        else:
            assert isinstance(arg, float)
            now += arg
            m.reap(now)
        m.outbox.clear()
        got = m.views()
        assert got == fresh(m)
        for name in NAMES:
            want = next((v for v in got if v.name == name), None)
            assert m.view_of(name) == want


def test_a_caller_changing_its_list_changes_nothing() -> None:
    m = Membership("h1", addr("h1"), CFG, random.Random(1), 0.0, BroadcastQueue())
    m.on_alive(Alive(0, "h2", addr("h2")), 0.0)
    first = m.views()
    first.clear()
    assert [v.name for v in m.views()] == ["h1", "h2"]


def test_a_refutation_shows_our_new_incarnation() -> None:
    m = Membership("h1", addr("h1"), CFG, random.Random(1), 0.0, BroadcastQueue())
    m.on_alive(Alive(0, "h2", addr("h2")), 0.0)
    assert m.view_of("h1") == MemberView("h1", addr("h1"), MemberState.ALIVE, 0)
    m.views()
    m.on_suspect(Suspect(0, "h1", "h2"), 0.0)
    assert m.views()[0].incarnation == 1
