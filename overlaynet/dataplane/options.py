"""Overlay network options that reach the VTEP (`network create -d overlay --opt KEY=VALUE`),
parsed in one place so that network creation can refuse a bad value before anything is built
and the overlay driver reads the same meaning when it attaches the network."""

from __future__ import annotations

from collections.abc import Mapping

#: `--opt learning=on`: the VTEP learns the source MACs of frames from member hosts (bounded,
#: aged: `Vtep.set_learning`), as a Linux vxlan device does by default. Off unless asked for:
#: a forged inner source MAC must not steer traffic; it is for static-peer overlays toward
#: kernel VTEPs whose endpoints nobody announces (issue 19).
LEARNING_OPTION = "learning"
_ON = frozenset(("on", "true", "yes", "1"))
_OFF = frozenset(("off", "false", "no", "0"))


class OptionError(ValueError):
    """An overlay option with a value it cannot take; the message names both."""


def learning_wanted(options: Mapping[str, str]) -> bool:
    """Whether the options turn MAC learning on (absent: off)."""
    value = options.get(LEARNING_OPTION)
    if value is None:
        return False
    text = value.strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise OptionError(f"--opt {LEARNING_OPTION}={value}: expected on or off")
