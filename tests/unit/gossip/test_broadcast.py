"""The piggyback queue limits retransmissions, supersedes stale news and respects the budget."""

from __future__ import annotations

from overlaynet.gossip.broadcast import BroadcastQueue
from overlaynet.gossip.config import retransmit_limit


def test_an_update_leaves_the_queue_after_its_retransmit_limit() -> None:
    queue = BroadcastQueue()
    queue.push("a", b"x" * 10)
    sent = [queue.take(1000, limit=3) for _ in range(5)]
    assert sent == [[b"x" * 10]] * 3 + [[], []]
    assert len(queue) == 0


def test_a_newer_update_about_the_same_subject_replaces_the_older() -> None:
    queue = BroadcastQueue()
    queue.push(("member", "h1"), b"old")
    queue.push(("member", "h1"), b"new")
    assert queue.take(1000, limit=5) == [b"new"]


def test_least_transmitted_updates_go_first_and_the_budget_holds() -> None:
    queue = BroadcastQueue()
    queue.push("a", b"a" * 40)
    queue.take(1000, limit=5)
    queue.push("b", b"b" * 40)
    assert queue.take(50, limit=5) == [b"b" * 40]
    # Both sent once now: the newer goes first.
    assert queue.take(100, limit=5) == [b"b" * 40, b"a" * 40]


def test_retransmit_limit_grows_with_log_of_cluster_size() -> None:
    assert retransmit_limit(4, 1) == 4
    assert retransmit_limit(4, 9) == 4
    assert retransmit_limit(4, 10) == 8
    assert retransmit_limit(4, 100) == 12
    assert retransmit_limit(4, 1000) == 16
