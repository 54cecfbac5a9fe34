"""Overlay network options that reach the VTEP (`network create -d overlay --opt KEY=VALUE`),
parsed in one place so that network creation can refuse a bad value before anything is built
and the overlay driver reads the same meaning when it attaches the network."""

from __future__ import annotations

from collections.abc import Mapping

from overlaynet.dataplane.datakeys import ENCRYPTED_OPTION

#: `--opt learning=on`: the VTEP learns the source MACs of frames from member hosts (bounded,
#: aged: `Vtep.set_learning`), as a Linux vxlan device does by default. Off unless asked for:
#: a forged inner source MAC must not steer traffic; it is for static-peer overlays toward
#: kernel VTEPs whose endpoints nobody announces (issue 19).
LEARNING_OPTION = "learning"
#: `--opt offload=on` (issue 15): the network's TAP hands over TCP super-frames, which cross
#: whole to the agents that advertised offload through gossip (not RFC 7348: `wire.chunks`);
#: every other peer (kernel VTEPs, static peers, older agents) still gets RFC 7348. Off unless
#: asked for. Not with `encrypted` (sealing is per VXLAN datagram): refused at create.
OFFLOAD_OPTION = "offload"
#: How the option travels with a swarm network: the managers keep a network's labels, not its
#: options (as `--opt lb-idle-timeout` does, cluster/lbidle.py), so create folds it in here.
OFFLOAD_LABEL = "com.overlaynet.network.offload"
_ON = frozenset(("on", "true", "yes", "1"))
_OFF = frozenset(("off", "false", "no", "0"))


class OptionError(ValueError):
    """An overlay option with a value it cannot take; the message names both."""


def _switch(options: Mapping[str, str], name: str) -> bool:
    """An on/off option (absent: off); anything else is one OptionError naming it."""
    value = options.get(name)
    if value is None:
        return False
    text = value.strip().lower()
    if text in _ON:
        return True
    if text in _OFF:
        return False
    raise OptionError(f"--opt {name}={value}: expected on or off")


def learning_wanted(options: Mapping[str, str]) -> bool:
    """Whether the options turn MAC learning on (absent: off)."""
    return _switch(options, LEARNING_OPTION)


def offload_wanted(options: Mapping[str, str]) -> bool:
    """Whether the options turn offload mode on (absent: off); refused with `encrypted`."""
    wanted = _switch(options, OFFLOAD_OPTION)
    if wanted and ENCRYPTED_OPTION in options:
        raise OptionError(
            f"--opt {OFFLOAD_OPTION}=on: not on an encrypted network (frames are sealed per "
            "VXLAN datagram)"
        )
    return wanted


def check_overlay_options(options: Mapping[str, str]) -> None:
    """Every option here, as `network create` checks them before anything is built."""
    learning_wanted(options)
    offload_wanted(options)


def fold_offload_into_labels(
    options: Mapping[str, str], labels: Mapping[str, str]
) -> dict[str, str]:
    """A swarm network's labels for the managers, with `--opt offload=on` (validated) among
    them; off adds nothing."""
    out = dict(labels)
    if offload_wanted(options):
        out[OFFLOAD_LABEL] = "on"
    return out


def network_offload(options: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """Whether a network is in offload mode: the option (a local network) or the label (a swarm
    network, `fold_offload_into_labels`); an unreadable value is off."""
    try:
        return offload_wanted(options) or _switch(labels, OFFLOAD_LABEL)
    except OptionError:
        return False
