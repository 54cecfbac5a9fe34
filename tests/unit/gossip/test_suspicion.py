"""Lifeguard's suspicion timer shrinks with independent confirmations; local health scales."""

from __future__ import annotations

import pytest

from overlaynet.gossip.config import SwimConfig, suspicion_timeouts
from overlaynet.gossip.suspicion import Awareness, Suspicion


def test_timeout_starts_at_max_and_falls_to_min_with_k_confirmations() -> None:
    s = Suspicion(started=10.0, k=2, low=4.0, high=24.0, origin="h1")
    assert s.deadline() == pytest.approx(34.0)
    assert s.confirm("h2")
    assert 14.0 < s.deadline() < 34.0
    assert s.confirm("h3")
    assert s.deadline() == pytest.approx(14.0)


def test_origin_duplicates_and_extra_confirmations_do_not_count() -> None:
    s = Suspicion(started=0.0, k=2, low=4.0, high=24.0, origin="h1")
    assert not s.confirm("h1")
    assert s.confirm("h2")
    assert not s.confirm("h2")
    assert s.confirm("h3")
    assert not s.confirm("h4")


def test_no_confirmations_expected_means_min_timeout() -> None:
    assert Suspicion(started=0.0, k=0, low=4.0, high=24.0).deadline() == 4.0


def test_suspicion_timeouts_scale_with_log_cluster_size() -> None:
    config = SwimConfig(probe_interval=1.0, suspicion_mult=4, suspicion_max_timeout_mult=6)
    assert suspicion_timeouts(config, 5) == (4.0, 24.0)
    assert suspicion_timeouts(config, 100) == (8.0, 48.0)


def test_awareness_is_bounded_and_scales_timeouts() -> None:
    health = Awareness(max_multiplier=8)
    health.apply(-1)
    assert health.scale(0.5) == 0.5
    health.apply(3)
    assert health.scale(0.5) == 2.0
    health.apply(100)
    assert health.score == 7
