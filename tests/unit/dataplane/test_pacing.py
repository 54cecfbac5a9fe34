"""The "paced" nice policy's decision (`pacing.Pacer`, issue 15): nice 0 while lone frames wake
the loop at a high rate (a paced UDP stream), the loop's nice for pings, bulk and quiet."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.dataplane.pacing import PACED_RATE, SAMPLE_PASSES, Pacer

HIGH = -10
#: One sample's span at twice the paced rate (a paced stream) and at a ping's 100 per second.
FAST = SAMPLE_PASSES / (2 * PACED_RATE)
PING = SAMPLE_PASSES / 100.0


def _paced(now: float = 0.0) -> Pacer:
    """A pacer that has stepped down to 0 at `now`."""
    pacer = Pacer(HIGH)
    pacer.start(now - FAST)
    assert pacer.on_sample(now, SAMPLE_PASSES) == 0
    return pacer


def test_a_paced_stream_of_lone_frames_steps_down_to_nice_0() -> None:
    pacer = Pacer(HIGH)
    pacer.start(0.0)
    assert pacer.on_sample(FAST, SAMPLE_PASSES) == 0
    assert pacer.paced and pacer.nice == 0


def test_a_ping_keeps_the_loop_nice_value() -> None:
    pacer = Pacer(HIGH)
    pacer.start(0.0)
    for n in range(1, 20):
        assert pacer.on_sample(n * PING, SAMPLE_PASSES) is None
    assert pacer.nice == HIGH and not pacer.paced


def test_bulk_that_finds_work_on_every_pass_keeps_the_loop_nice_value() -> None:
    pacer = Pacer(HIGH)
    pacer.start(0.0)
    assert pacer.on_sample(FAST, 0) is None
    assert pacer.nice == HIGH


def test_bulk_returning_while_paced_steps_back_up() -> None:
    pacer = _paced()
    assert pacer.on_sample(FAST, SAMPLE_PASSES // 8) == HIGH
    assert pacer.nice == HIGH


def test_a_stream_slowing_to_a_ping_rate_steps_back_up() -> None:
    pacer = _paced()
    assert pacer.on_sample(PING, SAMPLE_PASSES) == HIGH


def test_a_paced_stream_batching_at_nice_0_stays_paced() -> None:
    """At nice 0 the loop wakes once for several datagrams: a quarter of the rate that
    stepped down keeps it there (hysteresis: no flip back on the next sample)."""
    pacer = _paced()
    assert pacer.on_sample(4 * (SAMPLE_PASSES / PACED_RATE), SAMPLE_PASSES) is None
    assert pacer.paced


def test_quiet_steps_back_up_once() -> None:
    pacer = _paced()
    assert pacer.on_quiet(1.0) == HIGH
    assert pacer.on_quiet(2.0) is None


def test_quiet_restarts_the_sample_clock() -> None:
    """Passes before a quiet spell do not make a rate with the ones after it."""
    pacer = Pacer(HIGH)
    pacer.start(0.0)
    pacer.on_quiet(10.0)
    assert pacer.on_sample(10.0 + FAST, SAMPLE_PASSES) == 0


def test_a_sample_before_start_only_opens_the_first() -> None:
    pacer = Pacer(HIGH)
    assert pacer.on_sample(0.0, SAMPLE_PASSES) is None
    assert pacer.on_sample(FAST, SAMPLE_PASSES) == 0


def test_a_loop_at_nice_0_is_never_stepped() -> None:
    """With `nice` 0 there is nothing to step between."""
    pacer = Pacer(0)
    pacer.start(0.0)
    assert pacer.on_sample(FAST, SAMPLE_PASSES) is None
    assert not pacer.paced


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sample": 0},
        {"rate": 0.0},
        {"quiet": 0.0},
        {"bulk_share": 0.9},
        {"lone_share": 1.5},
        {"leave_share": 0.0},
    ],
)
def test_bad_thresholds_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Pacer(HIGH, **kwargs)  # type: ignore[arg-type]


_samples = st.lists(
    st.tuples(
        st.floats(min_value=1e-6, max_value=2.0, allow_nan=False),
        st.integers(min_value=0, max_value=SAMPLE_PASSES),
        st.booleans(),
    ),
    max_size=60,
)


@given(_samples)
def test_every_answer_is_a_change_between_the_two_values(
    events: list[tuple[float, int, bool]],
) -> None:
    """Whatever the loop reports, the pacer only answers with a change to the other value and
    its `nice` is what it last answered."""
    pacer = Pacer(HIGH)
    now = 0.0
    pacer.start(now)
    current = HIGH
    for span, lone, quiet in events:
        now += span
        answer = pacer.on_quiet(now) if quiet else pacer.on_sample(now, lone)
        if answer is not None:
            assert answer != current and answer in (HIGH, 0)
            current = answer
        assert pacer.nice == current


@given(_samples)
def test_a_quiet_spell_always_ends_at_the_loop_nice_value(
    events: list[tuple[float, int, bool]],
) -> None:
    pacer = Pacer(HIGH)
    now = 0.0
    pacer.start(now)
    for span, lone, quiet in events:
        now += span
        pacer.on_quiet(now) if quiet else pacer.on_sample(now, lone)
    pacer.on_quiet(now + 1.0)
    assert pacer.nice == HIGH


@given(st.lists(st.floats(min_value=PING, max_value=100.0), max_size=40))
def test_slow_lone_frames_never_step_down(spans: list[float]) -> None:
    """However the samples fall, at a ping's rate (≤ 100 wake-ups a second) the loop keeps
    its nice value."""
    pacer = Pacer(HIGH)
    now = 0.0
    pacer.start(now)
    for span in spans:
        now += span
        assert pacer.on_sample(now, SAMPLE_PASSES) is None
