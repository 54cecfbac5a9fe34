"""`--opt learning=...` on overlay networks: parsed once, bad values refused by name."""

from __future__ import annotations

import pytest

from overlaynet.dataplane.options import LEARNING_OPTION, OptionError, learning_wanted


def test_learning_is_off_unless_asked_for() -> None:
    assert learning_wanted({}) is False
    assert learning_wanted({"vni": "4200"}) is False


@pytest.mark.parametrize("value", ["on", "ON", "true", "yes", "1", " on "])
def test_learning_on(value: str) -> None:
    assert learning_wanted({LEARNING_OPTION: value}) is True


@pytest.mark.parametrize("value", ["off", "false", "no", "0"])
def test_learning_off(value: str) -> None:
    assert learning_wanted({LEARNING_OPTION: value}) is False


@pytest.mark.parametrize("value", ["", "maybe", "2"])
def test_a_bad_value_is_refused_by_name(value: str) -> None:
    with pytest.raises(OptionError, match=r"learning=.*on or off"):
        learning_wanted({LEARNING_OPTION: value})
