"""The node ties membership, tables and dissemination together within the datagram budget."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.gossip.config import LAB_CONFIG
from overlaynet.gossip.node import GossipNode, NonMemberGossip, PushPullRequest
from overlaynet.wire.gossip import (
    Ack,
    Alive,
    Dead,
    MalformedGossip,
    Message,
    Nack,
    NetworkEvent,
    OversizedGossip,
    Ping,
    PingReq,
    PushPullHeader,
    Suspect,
    TableEvent,
    decode,
    encode,
)


def make(name: str, index: int) -> GossipNode:
    return GossipNode(name, (f"10.0.0.{index}", 7946), LAB_CONFIG, random.Random(index), 0.0)


def exchange(a: GossipNode, b: GossipNode, now: float, join: bool = False) -> None:
    ours, theirs = a.push_pull_payload(join), b.push_pull_payload(False)
    b.merge_push_pull(ours, now)
    a.merge_push_pull(theirs, now)


def test_join_by_push_pull_teaches_both_sides_each_other() -> None:
    a, b = make("h1", 1), make("h2", 2)
    a.start_join([b.addr])
    assert [r.addr for r in a.drain_push_pulls()] == [b.addr]
    exchange(a, b, 0.0, join=True)
    assert {m.name for m in a.members()} == {m.name for m in b.members()} == {"h1", "h2"}


def test_push_pull_carries_tables_and_participation() -> None:
    a, b = make("h1", 1), make("h2", 2)
    exchange(a, b, 0.0, join=True)
    a.join_network("net", 0.0)
    a.set_entry("ep", "net", "e1", b"value", 0.0)
    b.join_network("net", 0.0)
    exchange(b, a, 1.0)
    assert b.entries("ep", "net")["e1"].value == b"value"


def test_every_copy_of_a_rumour_about_us_is_answered_not_skipped_as_a_repeat() -> None:
    a, b = make("a", 1), make("b", 2)
    exchange(a, b, 0.0, join=True)
    a.drain_datagrams()
    rumour = encode([Suspect(0, "a", "b")])
    answers = 0
    for at in (1.0, 2.0):
        a.receive_datagram(rumour, b.addr, at)
        for to, data in a.drain_datagrams():
            answers += to == b.addr and Alive(1, "a", a.addr) in decode(data)
    assert answers == 2


def test_every_datagram_fits_the_budget_even_with_a_long_queue() -> None:
    a = make("h1", 1)
    peers = [make(f"h{i}", i) for i in range(2, 6)]
    for p in peers:
        exchange(a, p, 0.0)
    a.join_network("net", 0.0)
    for i in range(60):
        a.set_entry("ep", "net", f"e{i}", b"x" * 200, 0.0)
    t = 0.0
    sizes = []
    for _ in range(40):
        t = a.next_deadline()
        a.handle_timer(t)
        sizes += [len(d) for _, d in a.drain_datagrams()]
    assert sizes and max(sizes) <= LAB_CONFIG.packet_budget


def test_malformed_push_pull_is_refused_without_changing_state() -> None:
    a = make("h1", 1)
    with pytest.raises(MalformedGossip):
        a.merge_push_pull(b"\x01\x99", 0.0)
    with pytest.raises(MalformedGossip):
        a.merge_push_pull(encode([]), 0.0)
    assert [m.name for m in a.members()] == ["h1"]


def test_oversized_datagram_is_refused_as_oversized() -> None:
    a = make("h1", 1)
    with pytest.raises(OversizedGossip):
        a.receive_datagram(b"\x01" + b"\x00" * LAB_CONFIG.packet_budget, ("10.0.0.2", 7946), 0.0)


def test_push_pull_payload_starts_with_its_header() -> None:
    a = make("h1", 1)
    assert decode(a.push_pull_payload(True))[0] == PushPullHeader("h1", True)


_names = st.sampled_from(["h1", "h2", "h3"])
_addrs = st.tuples(st.sampled_from(["10.0.0.1", "10.0.0.2", "::1"]), st.integers(1, 65535))
_messages = st.one_of(
    st.builds(Ping, st.integers(0, 2**32 - 1), _names, _names, _addrs),
    st.builds(PingReq, st.integers(0, 2**32 - 1), _names, _addrs, _names, _addrs, st.booleans()),
    st.builds(Ack, st.integers(0, 2**32 - 1), _names),
    st.builds(Nack, st.integers(0, 2**32 - 1), _names),
    st.builds(Alive, st.integers(0, 2**32 - 1), _names, _addrs),
    st.builds(Suspect, st.integers(0, 2**32 - 1), _names, _names),
    st.builds(Dead, st.integers(0, 2**32 - 1), _names, _names),
    st.builds(NetworkEvent, _names, st.just("net"), st.integers(0, 2**64 - 1), st.booleans()),
    st.builds(
        TableEvent,
        st.just("ep"),
        st.just("net"),
        st.sampled_from(["a", "b"]),
        _names,
        st.integers(0, 2**64 - 1),
        st.booleans(),
        st.binary(max_size=20),
    ),
)


@given(st.lists(st.lists(_messages, min_size=1, max_size=6), max_size=12))
def test_any_well_formed_traffic_from_an_authenticated_peer_never_raises(
    packets: list[list[Message]],
) -> None:
    node = make("h1", 1)
    exchange(node, make("h2", 2), 0.0, join=True)  # 10.0.0.2 is a member's address
    node.join_network("net", 0.0)
    now = 0.0
    for packet in packets:
        now += 0.3
        # Counters at the very top of their range are refused as malformed, never a crash.
        with contextlib.suppress(MalformedGossip):
            node.receive_datagram(encode(packet), ("10.0.0.2", 7946), now)
        node.handle_timer(max(now, node.next_deadline()))
        node.drain_datagrams()
        node.drain_events()


STRANGER = ("10.0.0.99", 7946)


def test_a_strangers_datagram_is_refused_unanswered_and_changes_nothing() -> None:
    """Issue 18: replayed datagrams from a non-member got sealed replies (a reflector)."""
    a, b = make("h1", 1), make("h2", 2)
    exchange(a, b, 0.0, join=True)
    a.drain_datagrams()
    before = a.members()
    with pytest.raises(NonMemberGossip):
        a.receive_datagram(
            encode([Ping(5, "h1", "h2", b.addr), Suspect(0, "h2", "h1")]), STRANGER, 1.0
        )
    assert a.drain_datagrams() == []
    assert a.members() == before


def test_a_joiner_is_answered_because_its_datagram_introduces_it() -> None:
    a = make("h1", 1)
    a.receive_datagram(
        encode([Ping(5, "h1", "h9", STRANGER), Alive(0, "h9", STRANGER)]), STRANGER, 1.0
    )
    assert (STRANGER, [Ack(5, "h1")]) in [(to, decode(d)[:1]) for to, d in a.drain_datagrams()]
    assert "h9" in {m.name for m in a.members()}


def test_nothing_is_sent_to_an_address_no_member_has() -> None:
    """A ping-req (even from a member) naming strangers as target or origin sends nothing."""
    a, b = make("h1", 1), make("h2", 2)
    exchange(a, b, 0.0, join=True)
    a.drain_datagrams()
    a.receive_datagram(encode([PingReq(7, "h9", STRANGER, "h2", b.addr, True)]), b.addr, 1.0)
    a.receive_datagram(encode([PingReq(8, "h2", b.addr, "h9", STRANGER, True)]), b.addr, 1.0)
    a.handle_timer(1.5)
    sent_to = {to for to, _ in a.drain_datagrams()}
    assert STRANGER not in sent_to
    assert b.addr in sent_to  # the second ping-req's ping to h2 still goes out
    assert a.refused_sends >= 1


def test_push_pulls_go_to_members_and_seeds_only() -> None:
    a, b = make("h1", 1), make("h2", 2)
    a.start_join([b.addr])
    assert [r.addr for r in a.drain_push_pulls()] == [b.addr]  # a seed
    a._push_pulls.append(PushPullRequest(STRANGER, False))
    assert a.drain_push_pulls() == []
    assert a.refused_sends == 1


def test_a_push_pull_must_come_from_its_senders_own_address() -> None:
    a, b = make("h1", 1), make("h2", 2)
    with pytest.raises(NonMemberGossip):
        a.merge_push_pull(b.push_pull_payload(True), 0.0, src_host=STRANGER[0])
    assert [m.name for m in a.members()] == ["h1"]
    assert a.merge_push_pull(b.push_pull_payload(True), 0.0, src_host=b.addr[0]) == "h2"
