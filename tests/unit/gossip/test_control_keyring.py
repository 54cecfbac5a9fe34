"""The agent's side of a key rotation (agent/control.py): whatever stage the managers answer,
the host's gossip ends holding exactly those keys, sealing with the first, one memberlist step
at a time; a keyring it cannot use is counted and changes nothing."""

from __future__ import annotations

import pytest

from overlaynet.agent.control import ControlPlane
from overlaynet.gossip.keyring import Keyring
from overlaynet.gossip.service import GossipService
from tests.unit.gossip.loopback import HOST, K1, K2, K3

K4 = bytes([4]) * 32


def plane(*keys: bytes) -> ControlPlane:
    control = ControlPlane()
    control.gossip = GossipService("h0", HOST, Keyring(list(keys)))
    return control


@pytest.mark.parametrize(
    ("held", "given"),
    [
        ((K1,), [K1, K2]),  # install: the staged key opens, K1 still seals
        ((K1, K2), [K2, K1]),  # use
        ((K2, K1), [K2]),  # retire
        ((K1, K3), [K1, K3, K2]),  # install beside an older key: three slots suffice
        ((K1, K3, K2), [K2, K1]),  # use, and the oldest goes
        ((K1,), [K2]),  # restarted after a whole rotation
        ((K1, K2, K3), [K4, K2]),  # far behind: taken whole
    ],
)
async def test_the_gossip_ends_with_the_keyring_given(
    held: tuple[bytes, ...], given: list[bytes]
) -> None:
    control = plane(*held)
    assert control.apply_keyring(given)
    assert control.gossip is not None
    assert control.gossip.keyring.keys[0] == given[0]
    assert set(control.gossip.keyring.keys) == set(given)
    assert control.counters["keyring_changes"] == 1
    assert not control.apply_keyring(given)  # applying again changes nothing


async def test_a_keyring_it_cannot_use_changes_nothing() -> None:
    control = plane(K1)
    assert not control.apply_keyring([b"short"])
    assert not control.apply_keyring([])
    assert control.gossip is not None and control.gossip.keyring.keys == (K1,)
    assert control.counters["bad_keyrings"] == 2


def test_without_gossip_there_is_nothing_to_apply() -> None:
    assert not ControlPlane().apply_keyring([K1])
    assert ControlPlane().key_fingerprints() == []
