"""An idle gossip node stays idle (issue 15): with nothing queued, the gossip tick is no
deadline, so a host wakes for its SWIM probes and periodic syncs only; news queued later
still leaves within one gossip interval."""

from __future__ import annotations

import itertools
import random

from overlaynet.gossip.config import LAB_CONFIG
from overlaynet.gossip.node import GossipNode
from overlaynet.wire.gossip import Address, TableEvent, decode

GOSSIP = LAB_CONFIG.gossip_interval
PROBE = LAB_CONFIG.probe_interval
# Simulated idle window: long enough for 25 probe rounds and 100 gossip ticks.
IDLE = 10.0


def make(name: str, index: int) -> GossipNode:
    return GossipNode(name, (f"10.0.0.{index}", 7946), LAB_CONFIG, random.Random(index), 0.0)


def converged_pair() -> tuple[GossipNode, GossipNode]:
    a, b = make("h1", 1), make("h2", 2)
    ours, theirs = a.push_pull_payload(True), b.push_pull_payload(False)
    b.merge_push_pull(ours, 0.0)
    a.merge_push_pull(theirs, 0.0)
    return a, b


def deliver(nodes: list[GossipNode], now: float) -> list[tuple[Address, bytes]]:
    """Hand every datagram to its addressee at `now` (lossless, zero delay) until none is
    left; returns all that were delivered."""
    by_addr = {n.addr: n for n in nodes}
    delivered: list[tuple[Address, bytes]] = []
    # Bounded: a ping and its ack are two rounds; a hundred is far past any exchange here.
    for _ in range(100):
        pending = [(n.addr, to, data) for n in nodes for to, data in n.drain_datagrams()]
        if not pending:
            break
        for src, to, data in pending:
            by_addr[to].receive_datagram(data, src, now)
            delivered.append((to, data))
    for n in nodes:
        n.drain_push_pulls()
        n.drain_events()
    return delivered


def run(nodes: list[GossipNode], start: float, until: float) -> tuple[float, dict[str, int]]:
    """Drive the nodes' timers from `start` to `until` at their deadlines; returns the last
    time reached and how often each node's timer fired."""
    wakes = {n.name: 0 for n in nodes}
    now = start
    # Bounded: at most one step per simulated millisecond.
    for _ in range(int((until - start) * 1000)):
        now = max(now, min(n.next_deadline() for n in nodes))
        if now > until:
            break
        for node in nodes:
            if node.next_deadline() <= now:
                node.handle_timer(now)
                wakes[node.name] += 1
        deliver(nodes, now)
    return now, wakes


def settled_pair() -> tuple[GossipNode, GossipNode, float]:
    """Two members past their start-up news (every queue empty)."""
    a, b = converged_pair()
    now, _ = run([a, b], 0.0, 5.0)
    assert not a.has_gossip() and not b.has_gossip()
    return a, b, now


def test_an_idle_node_has_no_gossip_deadline() -> None:
    a, _, now = settled_pair()
    a.next_gossip_at = now  # the gossip tick is the earliest timer: it must not count
    assert a.next_deadline() > now
    assert a.next_deadline() == min(
        a.membership.next_deadline(), a.next_push_pull_at, a.next_reconnect_at, a.next_reap_at
    )


def test_an_idle_node_wakes_for_its_probes_not_every_gossip_interval() -> None:
    a, b, now = settled_pair()
    _, wakes = run([a, b], now, now + IDLE)
    # A probe round is at most two wake-ups (the probe, its timeout or end); the gossip tick
    # alone would be IDLE / GOSSIP = 100 more.
    assert wakes["h1"] <= 2 * IDLE / PROBE + 2
    assert not a.has_gossip()


def test_news_queued_on_an_idle_node_leaves_at_once() -> None:
    a, b, now = settled_pair()
    a.join_network("net", now)
    b.join_network("net", now)
    deliver([a, b], now)
    run([a, b], now, now + 5.0)  # the joins' news dies out: both idle again
    assert not a.has_gossip()
    now += 5.0
    a.set_entry("ep", "net", "e1", b"v", now)
    assert a.has_gossip()
    due = a.next_deadline()
    assert due <= now + GOSSIP
    a.handle_timer(max(now, due))
    sent = [m for to, data in a.drain_datagrams() if to == b.addr for m in decode(data)]
    assert any(isinstance(m, TableEvent) and m.key == "e1" for m in sent)


def test_a_queued_rumour_is_gossiped_every_interval_until_spent() -> None:
    a, b, now = settled_pair()
    a.join_network("net", now)
    deliver([a, b], now)
    b.join_network("net", now)
    deliver([a, b], now)
    a.set_entry("ep", "net", "e2", b"v", now)
    ticks = []
    # Bounded: the retransmit limit is a handful of sends.
    for _ in range(50):
        if not a.has_gossip():
            break
        due = a.next_deadline()
        if due >= a.next_gossip_at:
            ticks.append(due)
        a.handle_timer(due)
        deliver([a, b], due)
    assert not a.has_gossip()
    assert len(ticks) >= 2
    gaps = [t2 - t1 for t1, t2 in itertools.pairwise(ticks)]
    assert max(gaps) <= GOSSIP + 1e-9
