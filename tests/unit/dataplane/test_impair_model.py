"""The impairment model (`dataplane.impair`): seeded decisions, netem's semantics, bounds."""

from __future__ import annotations

import itertools
import statistics
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from overlaynet.dataplane.impair import (
    ALL_PEERS,
    MAX_DELAY,
    REORDER_HOLD,
    HeldQueue,
    Impairment,
    ImpairmentError,
    ImpairModel,
    load,
    save,
    updated,
)


def _decisions(
    imp: Impairment, n: int, size: int = 100, gap: float = 0.01
) -> list[tuple[tuple[float, ...], str]]:
    model = ImpairModel(imp)
    return [model.decide(i * gap, size) for i in range(n)]


def test_no_impairment_sends_every_datagram_at_once() -> None:
    for i, (moments, counter) in enumerate(_decisions(Impairment(), 100)):
        assert moments == (i * 0.01,) and counter == ""


def test_loss_drops_about_its_share_and_a_seed_repeats_it() -> None:
    imp = Impairment(loss=20, seed=7)
    first = _decisions(imp, 10_000)
    dropped = sum(1 for moments, _ in first if not moments)
    assert 1800 <= dropped <= 2200
    assert _decisions(imp, 10_000) == first
    assert _decisions(Impairment(loss=20, seed=8), 10_000) != first


def test_loss_20_seed_7_over_400_probes_is_within_the_issues_band() -> None:
    dropped = sum(1 for moments, _ in _decisions(Impairment(loss=20, seed=7), 400) if not moments)
    assert 60 <= dropped <= 100  # 15-25 %


def test_delay_holds_each_datagram_exactly_that_long() -> None:
    for i, (moments, counter) in enumerate(_decisions(Impairment(delay=20), 50)):
        assert len(moments) == 1 and counter == "impair_delayed"
        assert moments[0] == pytest.approx(i * 0.01 + 0.020)


def test_jitter_stays_within_its_bounds_and_centres_on_the_delay() -> None:
    delays = [
        moments[0] - i * 0.01
        for i, (moments, _) in enumerate(_decisions(Impairment(delay=20, jitter=5, seed=1), 2000))
    ]
    assert all(0.015 - 1e-9 <= d <= 0.025 + 1e-9 for d in delays)
    assert statistics.median(delays) == pytest.approx(0.020, abs=0.001)
    assert max(delays) - min(delays) > 0.008  # it does vary


def test_duplicate_sends_a_second_copy_at_the_same_moment() -> None:
    out = _decisions(Impairment(duplicate=50, seed=3), 1000)
    doubles = [moments for moments, counter in out if counter == "impair_duplicated"]
    assert 400 <= len(doubles) <= 600
    assert all(len(m) == 2 and m[0] == m[1] for m in doubles)


def test_reorder_with_a_delay_lets_the_chosen_datagrams_skip_it() -> None:
    out = _decisions(Impairment(delay=50, reorder=25, seed=5), 1000)
    skipped = [(i, m) for i, (m, c) in enumerate(out) if c == "impair_reordered"]
    assert 200 <= len(skipped) <= 300
    assert all(m == (i * 0.01,) for i, m in skipped)
    # ...so they leave before datagrams that arrived earlier: the order changes.
    leave = [m[0] for m, _ in out]
    assert leave != sorted(leave)


def test_reorder_without_a_delay_holds_the_chosen_ones_briefly() -> None:
    out = _decisions(Impairment(reorder=50, seed=5), 200, gap=0.001)
    held = [(i, m) for i, (m, c) in enumerate(out) if c == "impair_reordered"]
    assert held and all(
        len(m) == 1 and m[0] == pytest.approx(i * 0.001 + REORDER_HOLD) for i, m in held
    )
    leave = [m[0] for m, _ in out]
    assert leave != sorted(leave)


def test_rate_spaces_datagrams_at_the_link_speed_after_a_burst() -> None:
    # 1 Mbit/s = 125000 octets/s: 1250-octet datagrams leave every 10 ms once the burst is spent.
    model = ImpairModel(Impairment(rate=1))
    leave = [model.decide(0.0, 1250)[0][0] for _ in range(200)]
    assert leave[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(leave)]
    assert all(g >= -1e-12 for g in gaps)
    assert statistics.median(gaps[100:]) == pytest.approx(0.010)
    # Over the 200 datagrams (250 kB) the rate holds: ~2 s minus the 64 KiB burst.
    assert leave[-1] == pytest.approx((200 * 1250 - 65536) / 125000, abs=0.011)


def test_rate_drops_what_would_wait_longer_than_the_bound() -> None:
    model = ImpairModel(Impairment(rate=0.01))  # 1250 octets/s
    out = [model.decide(0.0, 1250) for _ in range(100)]
    assert all(m[0] - 0.0 <= MAX_DELAY for m, _ in out if m)
    assert any(c == "impair_drop_rate" for _, c in out)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"loss": 101}, "--loss"),
        ({"loss": -1}, "--loss"),
        ({"duplicate": float("nan")}, "--duplicate"),
        ({"delay": 10_001}, "--delay"),
        ({"delay": 5, "jitter": 6}, "--jitter"),
        ({"rate": 0}, "--rate"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_out_of_range_values_are_refused_naming_the_option(
    kwargs: dict[str, Any], option: str
) -> None:
    with pytest.raises(ImpairmentError, match=option):
        Impairment(**kwargs)


@settings(max_examples=200, deadline=None)
@given(
    loss=st.floats(0, 100),
    delay=st.floats(0, 1000),
    jitter_share=st.floats(0, 1),
    duplicate=st.floats(0, 100),
    reorder=st.floats(0, 100),
    rate=st.none() | st.floats(0.01, 1000),
    seed=st.integers(0, 2**32),
    sizes=st.lists(st.integers(50, 65535), min_size=1, max_size=50),
)
# Found by hypothesis: a delayed datagram's rate queue was bounded from its delayed moment,
# so delay + queue held it past MAX_DELAY.
@example(0.0, 293.0, 1.0, 0.0, 1.0, 0.01, 2033, [50] * 10 + [11318, 65535, 50])
def test_every_decision_is_bounded_and_repeatable(
    loss: float,
    delay: float,
    jitter_share: float,
    duplicate: float,
    reorder: float,
    rate: float | None,
    seed: int,
    sizes: list[int],
) -> None:
    imp = Impairment(loss, delay, delay * jitter_share, duplicate, reorder, rate, seed)
    a, b = ImpairModel(imp), ImpairModel(imp)
    for i, size in enumerate(sizes):
        now = i * 0.001
        got = a.decide(now, size)
        assert got == b.decide(now, size)
        moments, _ = got
        assert len(moments) <= 2
        assert all(now <= at <= now + MAX_DELAY + 1e-9 for at in moments)


def test_an_impairment_round_trips_through_its_document_and_refuses_typos() -> None:
    imp = Impairment(loss=5, delay=20, jitter=2, rate=10, seed=7)
    assert Impairment.from_doc(imp.to_doc()) == imp
    with pytest.raises(ImpairmentError, match="lost"):
        Impairment.from_doc({"lost": 5})
    with pytest.raises(ImpairmentError, match="number"):
        Impairment.from_doc({"loss": "5"})
    assert imp.describe() == "loss 5% delay 20ms±2ms rate 10Mbit seed 7"


def test_held_queue_releases_in_due_order_and_is_bounded() -> None:
    q: HeldQueue[str] = HeldQueue(max_items=3, max_bytes=1000)
    assert q.push(0.3, 100, "c") and q.push(0.1, 100, "a") and q.push(0.1, 100, "b")
    assert not q.push(0.2, 100, "over count")
    assert q.next_deadline() == 0.1
    assert q.due(0.05) == []
    assert q.due(0.1) == ["a", "b"]
    assert q.held_bytes == 100 and len(q) == 1
    assert not q.push(0.2, 901, "over bytes")
    assert q.push(0.2, 900, "d")
    assert q.due(10) == ["d", "c"]
    assert q.next_deadline() is None and q.held_bytes == 0


def test_the_table_persists_and_clearing_all_peers_clears_everything(tmp_path: Path) -> None:
    table = updated({}, ALL_PEERS, Impairment(loss=1))
    table = updated(table, "192.168.0.12", Impairment(delay=20))
    path = tmp_path / "impair.json"
    save(path, table)
    assert load(path) == table
    assert updated(table, "192.168.0.12", None) == {ALL_PEERS: Impairment(loss=1)}
    assert updated(table, ALL_PEERS, None) == {}
    save(path, {})
    assert not path.exists() and load(path) == {}
    path.write_text("{not json")
    with pytest.raises(ImpairmentError, match=str(path)):
        load(path)
