"""The replay guard takes an authenticated message once, only inside its window, and stays
complete (never admits a replay) when its bounded memory fills."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.gossip.config import LAB_CONFIG, LAN_CONFIG
from overlaynet.gossip.replay import (
    ReplayedGossip,
    ReplayGuard,
    StaleGossip,
    replay_window,
)
from overlaynet.wire.gossip import FutureGossip, MalformedGossip

NOW = 1_700_000_000.0
WINDOW = 3.0


def nonce(i: int) -> bytes:
    return i.to_bytes(12, "big")


def test_a_fresh_message_is_taken_once_and_its_replay_refused() -> None:
    guard = ReplayGuard(WINDOW)
    guard.admit(NOW - 1, nonce(1), NOW)
    with pytest.raises(ReplayedGossip):
        guard.admit(NOW - 1, nonce(1), NOW + 0.5)


def test_a_capture_replayed_after_the_window_is_stale() -> None:
    """Issue 18 replayed captures 20-56 s later; a guard that never saw them must refuse."""
    guard = ReplayGuard(WINDOW)
    with pytest.raises(StaleGossip):
        guard.admit(NOW - 20, nonce(1), NOW)
    guard.admit(NOW, nonce(2), NOW)
    with pytest.raises(StaleGossip):
        guard.admit(NOW, nonce(2), NOW + WINDOW + 0.001)


def test_a_message_stamped_beyond_the_window_is_from_the_future() -> None:
    guard = ReplayGuard(WINDOW)
    with pytest.raises(FutureGossip):
        guard.admit(NOW + WINDOW + 1, nonce(1), NOW)
    guard.admit(NOW + WINDOW - 1, nonce(2), NOW)  # skew inside the window is tolerated


def test_memory_is_bounded_by_the_window() -> None:
    guard = ReplayGuard(WINDOW)
    for i in range(1000):
        guard.admit(NOW + i * 0.1, nonce(i), NOW + i * 0.1)
    # Ten messages a second for a 3 s window: about 30 remembered, not 1000.
    assert len(guard) <= WINDOW / 0.1 + 1


def test_a_full_cache_shrinks_the_window_instead_of_forgetting_a_replay() -> None:
    guard = ReplayGuard(WINDOW, capacity=4)
    for i in range(6):
        guard.admit(NOW - 2 + i * 0.1, nonce(i), NOW)
    assert len(guard) == 4
    # nonce(0) and nonce(1) were forgotten: their replays are refused as stale, not taken.
    for i in range(6):
        with pytest.raises(StaleGossip if i < 2 else ReplayedGossip):
            guard.admit(NOW - 2 + i * 0.1, nonce(i), NOW)


@given(
    st.lists(st.floats(-4, 4), min_size=1, max_size=40),
    st.lists(st.tuples(st.integers(0, 39), st.floats(0, 1)), max_size=200),
    st.integers(1, 8),
)
def test_no_message_is_ever_taken_twice(
    send_offsets: list[float], arrivals: list[tuple[int, float]], capacity: int
) -> None:
    """Messages (a nonce and the send time sealed with it) arrive any number of times, in
    any order, with skew: whatever the memory size, each is admitted at most once."""
    guard = ReplayGuard(WINDOW, capacity=capacity)
    now = NOW
    taken: set[int] = set()
    for index, step in arrivals:
        n = index % len(send_offsets)
        now += step
        try:
            guard.admit(NOW + send_offsets[n], nonce(n), now)
        except MalformedGossip:
            continue
        assert n not in taken
        taken.add(n)


def test_the_window_follows_the_probe_timing_and_stays_under_the_issues_replays() -> None:
    assert replay_window(LAB_CONFIG) == pytest.approx(3.2)
    assert replay_window(LAN_CONFIG) == pytest.approx(8.0)
    assert replay_window(LAN_CONFIG.with_changes(probe_interval=0.5)) == pytest.approx(4.0)
    assert max(replay_window(LAB_CONFIG), replay_window(LAN_CONFIG)) < 20
