"""Sizing the kernel's neighbour table for a lab: one table serves every namespace, so a big
lab whose hosts all talk (a swarm) must raise the machine's caps, and a small one changes
nothing (the thresholds are read and written as files; here, files of the test's own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlaynet.lab import hosttune


def test_small_labs_fit_the_kernels_defaults_and_big_ones_get_hosts_squared() -> None:
    assert hosttune.neighbour_room(3)[3] <= 1024  # the kernel's default hard cap
    assert hosttune.neighbour_room(10)[3] <= 1024
    room = hosttune.neighbour_room(100)
    assert room[3] >= 2 * 100 * 99  # every host pair, both ends
    assert room[2] < room[3]


@pytest.fixture
def sysctls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for n, value in ((1, 128), (2, 512), (3, 1024)):
        (tmp_path / f"gc_thresh{n}").write_text(f"{value}\n")
    monkeypatch.setattr(hosttune, "NEIGH_SYSCTLS", str(tmp_path / "gc_thresh{}"))
    return tmp_path


def test_a_big_lab_raises_the_caps_and_says_so(sysctls: Path) -> None:
    lines = hosttune.ensure_neighbour_room(100)
    room = hosttune.neighbour_room(100)
    assert int((sysctls / "gc_thresh3").read_text()) == room[3]
    assert int((sysctls / "gc_thresh2").read_text()) == room[2]
    assert (sysctls / "gc_thresh1").read_text().strip() == "128"  # untouched
    assert lines == [
        f"net.ipv4.neigh.default.gc_thresh2 512 -> {room[2]}",
        f"net.ipv4.neigh.default.gc_thresh3 1024 -> {room[3]}",
    ]


def test_caps_are_never_lowered_and_a_small_lab_changes_nothing(sysctls: Path) -> None:
    assert hosttune.ensure_neighbour_room(3) == []
    (sysctls / "gc_thresh3").write_text("999999\n")
    hosttune.ensure_neighbour_room(100)
    assert (sysctls / "gc_thresh3").read_text().strip() == "999999"
