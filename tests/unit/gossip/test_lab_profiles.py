"""The lab profile by lab size (issue 15): small labs keep the fast lab timings, big labs probe
less often so that idle hosts stay idle, within the bounds the rest of gossip relies on; the
agents learn the size from their environment, and a bad value falls back to the lab profile."""

from __future__ import annotations

import logging

import pytest
import trio

from overlaynet.gossip.config import (
    LAB_CONFIG,
    LAB_HOSTS_ENV,
    LAB_TIERS,
    LAN_CONFIG,
    config_from_env,
    detection_estimate,
    lab_config,
)
from overlaynet.gossip.keyring import Keyring
from overlaynet.gossip.replay import replay_window
from overlaynet.gossip.service import GossipService

SIZES = (1, 2, 3, 10, 19, 20, 50, 63, 64, 100, 250, 1000)
# Issue 18's shortest replay came 20 s after the capture: every window must close before it.
SHORTEST_REPLAY = 20.0


def test_small_labs_keep_the_lab_profile() -> None:
    for hosts in range(1, LAB_TIERS[0][0]):
        assert lab_config(hosts) == LAB_CONFIG


def test_probes_slow_down_with_size_and_never_speed_up() -> None:
    intervals = [lab_config(n).probe_interval for n in SIZES]
    assert intervals == sorted(intervals)
    assert lab_config(100).probe_interval >= LAN_CONFIG.probe_interval


def test_a_hundred_host_lab_probes_less_than_a_small_one_did() -> None:
    # The lab's probes per second, all hosts together: 100 hosts at the lab's 0.4 s made 250.
    rate = 100 / lab_config(100).probe_interval
    assert rate <= 50
    assert 100 / LAB_CONFIG.probe_interval == 250


@pytest.mark.parametrize("hosts", SIZES)
def test_every_tier_keeps_the_replay_window_and_timeouts_sane(hosts: int) -> None:
    config = lab_config(hosts)
    assert replay_window(config) < SHORTEST_REPLAY
    assert 0 < config.probe_timeout < config.probe_interval
    # Gossip of news is not slowed: a change still leaves within the lab's gossip interval.
    assert config.gossip_interval == LAB_CONFIG.gossip_interval


def test_detection_is_slower_in_big_labs_and_said_so() -> None:
    small = detection_estimate(LAB_CONFIG, 100)
    big = detection_estimate(lab_config(100), 100)
    assert small < 5 < big < 30


def test_environment_sets_the_profile() -> None:
    assert config_from_env({}) == LAB_CONFIG
    assert config_from_env({LAB_HOSTS_ENV: "3"}) == LAB_CONFIG
    assert config_from_env({LAB_HOSTS_ENV: "100"}) == lab_config(100)


@pytest.mark.parametrize("raw", ["", "many", "0", "-5", "1.5"])
def test_a_bad_size_is_logged_and_the_lab_profile_used(
    raw: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="overlaynet.gossip.config"):
        assert config_from_env({LAB_HOSTS_ENV: raw}) == LAB_CONFIG
    assert LAB_HOSTS_ENV in caplog.text


def test_the_service_takes_its_profile_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(LAB_HOSTS_ENV, "100")

    async def build() -> tuple[GossipService, GossipService]:
        ring = Keyring([bytes(16)])
        chosen = GossipService("h0", "127.0.0.1", ring, port=0, config=LAB_CONFIG)
        return GossipService("h1", "127.0.0.1", ring, port=0), chosen

    default, chosen = trio.run(build)
    assert default.config == lab_config(100)
    assert default.replay.window == replay_window(lab_config(100))
    assert chosen.config == LAB_CONFIG
