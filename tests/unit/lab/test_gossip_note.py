"""`lab up` says when a lab is big enough for the slower gossip profile, and hands its size to
the agents it starts (their gossip picks the profile from it, gossip/config.py)."""

from __future__ import annotations

import pytest

from overlaynet.gossip.config import LAB_HOSTS_ENV, LAB_TIERS, detection_estimate, lab_config
from overlaynet.lab import lifecycle
from overlaynet.lab.lifecycle import LabHost


def test_small_labs_say_nothing() -> None:
    assert lifecycle.gossip_note(3) is None
    assert lifecycle.gossip_note(LAB_TIERS[0][0] - 1) is None


def test_big_labs_state_the_probe_interval_and_detection_time() -> None:
    note = lifecycle.gossip_note(100)
    assert note is not None
    assert f"every {lab_config(100).probe_interval:g} s" in note
    assert f"about {detection_estimate(lab_config(100), 100):.0f} s" in note


def test_agents_get_the_lab_size(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = [LabHost.numbered(n) for n in range(1, 101)]
    monkeypatch.setattr(lifecycle, "read_hosts", lambda lab: hosts if lab == "idbig" else [])
    monkeypatch.delenv(LAB_HOSTS_ENV, raising=False)
    assert lifecycle._agent_env("idbig")[LAB_HOSTS_ENV] == "100"
    assert LAB_HOSTS_ENV not in lifecycle._agent_env("idnone")


def test_a_size_set_by_the_caller_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = [LabHost.numbered(n) for n in range(1, 101)]
    monkeypatch.setattr(lifecycle, "read_hosts", lambda lab: hosts)
    monkeypatch.setenv(LAB_HOSTS_ENV, "3")
    assert lifecycle._agent_env("idbig")[LAB_HOSTS_ENV] == "3"
