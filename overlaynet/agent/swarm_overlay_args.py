"""`network create -d overlay` in a swarm: what of the request the managers can honour, and a
clear refusal for the rest (sans-IO).

A swarm overlay is made by the managers (VNI, subnet, gateway, labels, data keys) and built on
each host from their record (`hostcore.network_from_swarm`), so a flag or option that record
does not carry would be lost without a word: `--opt vni=4200` used to give VNI 4100 and
`--ip-range` handed out addresses from the whole subnet. The VNI is carried (the managers check
its range and that it is free); the others are refused, naming the flag.
"""

from __future__ import annotations

from overlaynet.agent.requests import NetworkCreate
from overlaynet.cluster import lbidle
from overlaynet.dataplane import datakeys
from overlaynet.dataplane.options import OFFLOAD_OPTION
from overlaynet.errors import InvalidArgument

VNI_OPTIONS = ("vni", "com.docker.network.driver.overlay.vxlanid_list")
# What a swarm overlay here carries from `--opt`: the VNI, sealing and its rotation, the VIPs'
# idle timeout and offload (the last three travel as labels or data keys).
CARRIED_OPTIONS = frozenset(
    (
        *VNI_OPTIONS,
        datakeys.ENCRYPTED_OPTION,
        datakeys.ROTATION_OPTION,
        lbidle.LB_IDLE_OPTION,
        OFFLOAD_OPTION,
    )
)


def requested_vni(req: NetworkCreate) -> int | None:
    """The VNI asked for with `--opt vni=N` (or Docker's vxlanid_list), None for any free one."""
    given = {k: req.options[k] for k in VNI_OPTIONS if k in req.options}
    if not given:
        return None
    if len(set(given.values())) > 1:
        raise InvalidArgument(f"two different VNIs asked for: {given}")
    text = next(iter(given.values()))
    try:
        return int(text)
    except ValueError:
        raise InvalidArgument(f"invalid VNI {text!r}: expected a number") from None


def refuse_what_is_not_carried(req: NetworkCreate) -> None:
    """InvalidArgument naming the first flag or option a swarm overlay would silently drop."""
    flags = (("--ip-range", req.ip_range is not None), ("--internal", req.internal))
    for flag, given in flags:
        if given:
            raise InvalidArgument(
                f"{flag} is not supported for a swarm overlay here (the managers would not keep "
                "it); create the network without it"
            )
    dropped = sorted(k for k in req.options if k not in CARRIED_OPTIONS)
    if dropped:
        carried = ", ".join(sorted(CARRIED_OPTIONS))
        raise InvalidArgument(
            f"--opt {dropped[0]} is not supported for a swarm overlay (its options here: {carried})"
        )
