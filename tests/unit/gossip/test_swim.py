"""Each SWIM and Lifeguard rule of the membership state machine, one at a time."""

from __future__ import annotations

import random

from overlaynet.gossip.broadcast import BroadcastQueue
from overlaynet.gossip.config import SwimConfig
from overlaynet.gossip.swim import Membership
from overlaynet.wire.gossip import (
    Ack,
    Address,
    Alive,
    Dead,
    MemberRecord,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    decode,
    encode_packet,
)

CFG = SwimConfig(probe_interval=1.0, probe_timeout=0.5, suspicion_mult=4, indirect_checks=3)


def addr(name: str) -> Address:
    return (f"10.0.0.{name[1:]}", 7946)


def make(*peers: str, name: str = "h1") -> Membership:
    m = Membership(name, addr(name), CFG, random.Random(1), 0.0, BroadcastQueue())
    for peer in peers:
        m.on_alive(Alive(0, peer, addr(peer)), 0.0)
    m.changes.clear()
    m.broadcasts.clear()
    return m


def queued(m: Membership) -> list[Message]:
    return decode(encode_packet(m.broadcasts.take(100_000, 100)))


def sent(m: Membership) -> list[tuple[Address, Message]]:
    out = [(a, msg) for a, msgs in m.outbox for msg in msgs]
    m.outbox.clear()
    return out


def start_probe(m: Membership) -> tuple[float, Ping, Address]:
    at = m.next_probe_at
    m.handle_timer(at)
    ((to, ping),) = [(a, msg) for a, msg in sent(m) if isinstance(msg, Ping)]
    assert isinstance(ping, Ping)
    return at, ping, to


def test_a_ping_for_us_is_acked_and_a_misdirected_one_ignored() -> None:
    m = make("h2")
    m.handle(Ping(5, "h1", "h2", addr("h2")), addr("h2"), 0.0)
    m.handle(Ping(6, "h9", "h2", addr("h2")), addr("h2"), 0.0)
    assert sent(m) == [(addr("h2"), Ack(5, "h1"))]


def test_probes_visit_every_member_once_per_round() -> None:
    m = make("h2", "h3", "h4", "h5")
    targets = []
    for _ in range(8):
        _, ping, _ = start_probe(m)
        targets.append(ping.target)
        m.handle(Ack(ping.seq, ping.target), addr(ping.target), m.next_probe_at)
    assert sorted(targets[:4]) == sorted(targets[4:]) == ["h2", "h3", "h4", "h5"]


def test_a_missed_ack_sends_ping_req_through_k_other_members() -> None:
    m = make("h2", "h3", "h4", "h5")
    at, ping, _ = start_probe(m)
    m.handle_timer(at + CFG.probe_timeout)
    reqs = [(a, msg) for a, msg in sent(m) if isinstance(msg, PingReq)]
    assert len(reqs) == 3
    assert all(r.target == ping.target and r.seq == ping.seq for _, r in reqs)
    assert addr(ping.target) not in [a for a, _ in reqs]


def test_an_acked_probe_suspects_no_one() -> None:
    m = make("h2", "h3")
    at, ping, _ = start_probe(m)
    m.handle(Ack(ping.seq, ping.target), addr(ping.target), at + 0.1)
    m.handle_timer(at + CFG.probe_interval)
    assert all(v.state == MemberState.ALIVE for v in m.views())


def test_a_probe_without_any_ack_suspects_the_target_and_broadcasts_it() -> None:
    m = make("h2", "h3")
    at, ping, _ = start_probe(m)
    m.handle_timer(at + CFG.probe_timeout)
    m.handle_timer(at + CFG.probe_interval)
    assert m.state_of(ping.target) == MemberState.SUSPECT
    assert Suspect(0, ping.target, "h1") in queued(m)


def test_an_intermediary_forwards_the_targets_ack_to_the_origin() -> None:
    m = make("h2", "h3", name="h4")
    m.handle(PingReq(77, "h3", addr("h3"), "h2", addr("h2"), True), addr("h2"), 0.0)
    ((to, ping),) = sent(m)
    assert to == addr("h3") and isinstance(ping, Ping)
    m.handle(Ack(ping.seq, "h3"), addr("h3"), 0.1)
    assert sent(m) == [(addr("h2"), Ack(77, "h4"))]


def test_an_intermediary_nacks_when_the_target_stays_silent() -> None:
    m = make("h2", "h3", name="h4")
    m.handle(PingReq(77, "h3", addr("h3"), "h2", addr("h2"), True), addr("h2"), 0.0)
    sent(m)
    m.handle_timer(CFG.probe_timeout)
    assert (addr("h2"), Nack(77, "h4")) in sent(m)


def test_missing_nacks_raise_local_health_and_stretch_the_next_probe() -> None:
    m = make("h2", "h3", "h4", "h5")
    at, ping, _ = start_probe(m)
    m.handle_timer(at + CFG.probe_timeout)
    m.handle(Nack(ping.seq, "h9"), addr("h9"), at + 0.7)
    m.handle_timer(at + CFG.probe_interval)
    assert m.awareness.score == 2  # 3 expected nacks, 1 came
    assert m.next_probe_at == at + CFG.probe_interval + 3 * CFG.probe_interval


def test_a_suspect_target_is_told_it_is_suspected_inside_the_ping() -> None:
    m = make("h2")
    m.on_suspect(Suspect(0, "h2", "h3"), 0.0)
    sent(m)
    m.handle_timer(m.next_probe_at)
    messages = [msg for _, msg in sent(m)]
    assert Suspect(0, "h2", "h1") in messages
    assert any(isinstance(msg, Ping) and msg.target == "h2" for msg in messages)


def test_suspect_about_us_is_refuted_with_a_higher_incarnation() -> None:
    m = make("h2")
    m.handle(Suspect(0, "h1", "h2"), addr("h2"), 1.0)
    assert m.incarnation == 1
    assert Alive(1, "h1", addr("h1")) in queued(m)
    assert m.awareness.score == 1


def test_dead_about_us_is_refuted_unless_we_are_leaving() -> None:
    m = make("h2")
    m.handle(Dead(4, "h1", "h2"), addr("h2"), 1.0)
    assert m.incarnation == 5
    m.leave(2.0)
    m.handle(Dead(5, "h1", "h2"), addr("h2"), 2.1)
    assert m.incarnation == 5


def test_a_stale_suspicion_about_us_is_answered_with_our_alive_to_relay_and_suspecter() -> None:
    m = make("h2", "h3")
    m.handle(Suspect(0, "h1", "h3"), addr("h3"), 1.0)  # refuted: now at incarnation 1
    sent(m)
    # h3's suspicion at incarnation 0 reaches us again, relayed by h2: both still hold it.
    m.handle(Suspect(0, "h1", "h3"), addr("h2"), 2.0)
    assert m.incarnation == 1  # a stale rumour costs no new incarnation...
    alive = Alive(1, "h1", addr("h1"))
    assert sorted(to for to, msg in sent(m) if msg == alive) == [addr("h2"), addr("h3")]


def test_a_fresh_suspicion_about_us_is_refuted_directly_to_the_suspecter_too() -> None:
    m = make("h2", "h3")
    m.handle(Suspect(0, "h1", "h3"), addr("h2"), 1.0)
    alive = Alive(1, "h1", addr("h1"))
    assert alive in queued(m)
    assert sorted(to for to, msg in sent(m) if msg == alive) == [addr("h2"), addr("h3")]


def test_a_stale_death_notice_about_us_is_answered_to_its_sender() -> None:
    m = make("h2")
    m.handle(Dead(4, "h1", "h2"), addr("h2"), 1.0)
    sent(m)
    m.handle(Dead(4, "h1", "h2"), addr("h2"), 2.0)
    assert sent(m) == [(addr("h2"), Alive(5, "h1", addr("h1")))]


def test_a_leaving_node_answers_no_rumour_about_itself() -> None:
    m = make("h2")
    m.leave(1.0)
    m.handle(Suspect(0, "h1", "h2"), addr("h2"), 2.0)
    assert sent(m) == []


def final_probe(m: Membership, name: str, at: float) -> tuple[float, float, Ping]:
    """Suspect `name` at `at` and run its timer to the final probe, one probe period before
    the deadline; returns when the probe went out, the deadline, and the probe's ping."""
    m.on_suspect(Suspect(0, name, "h3"), at)
    deadline = m.suspicion_deadline(name)
    assert deadline is not None
    m.next_probe_at = float("inf")  # keep routine probes out of the way
    sent(m)
    start = deadline - CFG.probe_interval
    m.handle_timer(start)
    (ping,) = [msg for _, msg in sent(m) if isinstance(msg, Ping)]
    return start, deadline, ping


def test_suspicion_expires_into_dead_after_the_timeout_when_the_final_probe_fails() -> None:
    m = make("h2", "h4")
    m.on_suspect(Suspect(0, "h2", "h3"), 10.0)
    low = CFG.suspicion_mult * CFG.probe_interval  # three members: no confirmations expected
    m.next_probe_at = float("inf")
    m.handle_timer(10.0 + low - CFG.probe_interval - 0.01)
    assert sent(m) == []
    m.handle_timer(10.0 + low - CFG.probe_interval)
    assert any(isinstance(msg, Ping) for _, msg in sent(m))
    m.handle_timer(10.0 + low - 0.01)
    assert m.state_of("h2") == MemberState.SUSPECT
    m.handle_timer(10.0 + low)
    assert m.state_of("h2") == MemberState.DEAD
    assert Dead(0, "h2", "h1") in queued(m)


def test_the_final_probe_goes_to_the_suspect_with_the_rumour_then_through_k_members() -> None:
    m = make("h2", "h4", "h5")
    start, deadline, ping = final_probe(m, "h2", 10.0)
    assert ping.target == "h2"
    assert m.next_deadline() == start + CFG.probe_timeout
    m.handle_timer(start + CFG.probe_timeout)
    reqs = [(to, msg) for to, msg in sent(m) if isinstance(msg, PingReq)]
    assert sorted(to for to, _ in reqs) == [addr("h4"), addr("h5")]
    assert all(msg.target == "h2" and not msg.want_nack for _, msg in reqs)
    assert m.next_deadline() == deadline


def test_the_final_probe_carries_the_suspicion_so_a_live_suspect_can_refute() -> None:
    m = make("h2")
    m.on_suspect(Suspect(0, "h2", "h3"), 10.0)
    deadline = m.suspicion_deadline("h2")
    assert deadline is not None
    m.next_probe_at = float("inf")
    sent(m)
    m.handle_timer(deadline - CFG.probe_interval)
    to_suspect = [msg for to, msg in sent(m) if to == addr("h2")]
    assert Suspect(0, "h2", "h1") in to_suspect


def test_a_suspicion_already_due_still_gets_a_whole_final_probe_period() -> None:
    m = make(*[f"h{i}" for i in range(2, 12)])
    m.next_probe_at = float("inf")
    m.on_suspect(Suspect(0, "h2", "h3"), 0.0)
    # Two confirmations at once cut the timer to its minimum, already past.
    m.on_suspect(Suspect(0, "h2", "h4"), 100.0)
    m.on_suspect(Suspect(0, "h2", "h5"), 100.0)
    m.handle_timer(100.0)
    assert m.state_of("h2") == MemberState.SUSPECT
    m.handle_timer(100.0 + CFG.probe_interval)
    assert m.state_of("h2") == MemberState.DEAD


def test_a_suspect_that_acks_the_final_probe_is_not_declared_dead() -> None:
    m = make("h2", "h4")
    start, deadline, ping = final_probe(m, "h2", 10.0)
    m.handle(Ack(ping.seq, "h2"), addr("h2"), start + 0.1)
    m.handle_timer(deadline)
    assert m.state_of("h2") == MemberState.SUSPECT
    # Its suspicion starts over from the ack.
    assert m.suspicion_deadline("h2") == start + 0.1 + (deadline - 10.0)


def test_a_refutation_during_the_final_probe_ends_it() -> None:
    m = make("h2", "h4")
    start, deadline, _ = final_probe(m, "h2", 10.0)
    m.handle(Alive(1, "h2", addr("h2")), addr("h2"), start + 0.1)
    m.handle_timer(deadline)
    assert m.state_of("h2") == MemberState.ALIVE
    assert m.next_deadline() == m.next_probe_at


def test_independent_confirmations_shorten_the_suspicion() -> None:
    m = make(*[f"h{i}" for i in range(2, 12)])
    m.on_suspect(Suspect(0, "h2", "h3"), 0.0)
    slow = m.suspicion_deadline("h2")
    assert slow is not None
    m.on_suspect(Suspect(0, "h2", "h4"), 0.1)
    middle = m.suspicion_deadline("h2")
    m.on_suspect(Suspect(0, "h2", "h5"), 0.2)
    fast = m.suspicion_deadline("h2")
    assert middle is not None and fast is not None
    assert fast < middle < slow


def test_alive_with_a_higher_incarnation_clears_suspicion_but_an_equal_one_does_not() -> None:
    m = make("h2")
    m.on_suspect(Suspect(3, "h2", "h3"), 0.0)
    m.on_alive(Alive(3, "h2", addr("h2")), 0.1)
    assert m.state_of("h2") == MemberState.SUSPECT
    m.on_alive(Alive(4, "h2", addr("h2")), 0.2)
    assert m.state_of("h2") == MemberState.ALIVE


def test_older_incarnations_are_ignored() -> None:
    m = make("h2")
    m.on_alive(Alive(5, "h2", addr("h2")), 0.0)
    m.on_suspect(Suspect(4, "h2", "h3"), 0.1)
    m.on_dead(Dead(4, "h2", "h3"), 0.2)
    assert m.state_of("h2") == MemberState.ALIVE


def test_dead_member_comes_back_only_with_a_newer_incarnation() -> None:
    m = make("h2")
    m.on_dead(Dead(2, "h2", "h3"), 0.0)
    m.on_alive(Alive(2, "h2", addr("h2")), 0.1)
    assert m.state_of("h2") == MemberState.DEAD
    m.on_alive(Alive(3, "h2", addr("h2")), 0.2)
    assert m.state_of("h2") == MemberState.ALIVE


def test_graceful_leave_is_announced_and_marked_left() -> None:
    leaver = make("h2")
    leaver.leave(1.0)
    (dead,) = queued(leaver)
    assert dead == Dead(0, "h1", "h1")
    other = make("h1", name="h2")
    other.on_dead(Dead(0, "h1", "h1"), 1.0)
    assert other.state_of("h1") == MemberState.LEFT


def test_leaving_node_stops_probing() -> None:
    m = make("h2")
    m.leave(0.0)
    m.handle_timer(m.next_probe_at)
    assert not [msg for _, msg in sent(m) if isinstance(msg, Ping)]


def test_a_peers_dead_verdict_only_makes_us_suspect() -> None:
    m = make("h2")
    m.merge_remote([MemberRecord("h2", addr("h2"), 0, MemberState.DEAD)], 1.0)
    assert m.state_of("h2") == MemberState.SUSPECT


def test_push_pull_that_says_we_are_dead_makes_us_refute() -> None:
    m = make()
    m.merge_remote([MemberRecord("h1", addr("h1"), 7, MemberState.DEAD)], 1.0)
    assert m.incarnation == 8


def test_new_members_are_announced_and_reported_as_changes() -> None:
    m = make()
    m.on_alive(Alive(0, "h2", addr("h2")), 0.0)
    assert [c.name for c in m.changes] == ["h2"]
    assert Alive(0, "h2", addr("h2")) in queued(m)


def test_dead_members_are_forgotten_after_the_reap_time() -> None:
    m = make("h2")
    m.on_dead(Dead(0, "h2", "h3"), 0.0)
    assert m.reap(CFG.dead_reap_time - 1) == []
    assert m.reap(CFG.dead_reap_time) == ["h2"]
    assert m.state_of("h2") is None
