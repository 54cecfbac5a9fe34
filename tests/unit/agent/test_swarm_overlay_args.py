"""What a swarm overlay's `network create` carries to the managers, and what it refuses."""

from __future__ import annotations

import pytest

from overlaynet.agent.requests import NetworkCreate
from overlaynet.agent.swarm_overlay_args import refuse_what_is_not_carried, requested_vni
from overlaynet.errors import InvalidArgument


def _req(**kw: object) -> NetworkCreate:
    return NetworkCreate(name="ov", driver="overlay", **kw)  # type: ignore[arg-type]


def test_the_vni_comes_from_either_option_name() -> None:
    assert requested_vni(_req()) is None
    assert requested_vni(_req(options={"vni": "4200"})) == 4200
    vxlanid = {"com.docker.network.driver.overlay.vxlanid_list": "4300"}
    assert requested_vni(_req(options=vxlanid)) == 4300


def test_a_vni_that_is_no_number_or_two_vnis_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="expected a number"):
        requested_vni(_req(options={"vni": "x"}))
    with pytest.raises(InvalidArgument, match="two different VNIs"):
        requested_vni(
            _req(options={"vni": "1", "com.docker.network.driver.overlay.vxlanid_list": "2"})
        )


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"ip_range": "10.0.9.0/25", "subnet": "10.0.9.0/24"}, "--ip-range"),
        ({"internal": True}, "--internal"),
        ({"options": {"learning": "on"}}, "--opt learning"),
        ({"options": {"com.docker.network.driver.mtu": "1400"}}, "--opt com.docker"),
    ],
)
def test_what_the_managers_would_not_keep_is_refused(kw: dict[str, object], says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        refuse_what_is_not_carried(_req(**kw))


def test_what_they_keep_passes() -> None:
    opts = {"vni": "4200", "encrypted": "", "lb-idle-timeout": "60", "offload": "on"}
    refuse_what_is_not_carried(_req(options=opts, subnet="10.0.9.0/24", attachable=True))
