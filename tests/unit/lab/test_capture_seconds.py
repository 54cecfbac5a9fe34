"""`lab capture --seconds` past the limit (or not above 0) is refused before anything runs; it
was cut to 30 s without a word (and 0 would have been `timeout 0`: no limit)."""

from __future__ import annotations

import pytest

from overlaynet.lab import capture


@pytest.mark.parametrize("seconds", [31.0, 0.0, -1.0])
def test_seconds_out_of_range_are_refused(seconds: float) -> None:
    # A lab name that does not exist: the refusal comes before any lab is looked at.
    with pytest.raises(capture.CaptureError) as e:
        capture.run("nosuchlab", "underlay", None, None, 8, None, seconds, None)
    assert str(e.value) == (
        "--seconds must be more than 0 and at most 30 (a capture stops then, so a quiet "
        f"network cannot hang it), not {seconds:g}"
    )


def test_the_limit_itself_is_accepted() -> None:
    # 30 passes the check and reaches the lab lookup, which names the missing lab.
    with pytest.raises(capture.CaptureError, match="lab nosuchlab has no underlay"):
        capture.run("nosuchlab", "underlay", None, None, 8, None, capture.MAX_SECONDS, None)
