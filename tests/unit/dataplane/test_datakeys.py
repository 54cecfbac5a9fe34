"""Data keys of encrypted overlays on the managers: options, the keyring of two, one rotation
in ClusterState (replicated like any change), and views that show key ids, never keys."""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest

from overlaynet.cluster.state import (
    ClusterError,
    ClusterState,
    ErrorKind,
    member_network_doc,
    network_doc,
)
from overlaynet.dataplane import datakeys
from overlaynet.dataplane.seal import DataKey

NOW = 1_000_000.0


def seeded(seed: int = 1) -> Callable[[int], bytes]:
    rng = random.Random(seed)
    return lambda n: rng.randbytes(n)


@pytest.fixture
def state() -> ClusterState:
    s = ClusterState()
    s.init(hostname="node1", addr="192.168.0.11", now=NOW, rand=seeded())
    s.take_changes()
    return s


def test_options_as_docker_takes_them() -> None:
    assert datakeys.wanted({}) == (False, datakeys.ROTATION_PERIOD)
    assert datakeys.wanted({"encrypted": ""}) == (True, datakeys.ROTATION_PERIOD)
    assert datakeys.wanted({"encrypted": "true", "encrypted.rotation": "600"}) == (True, 600.0)
    assert datakeys.wanted({"encrypted": "false"})[0] is False
    for bad in (
        {"encrypted": "yes please"},
        {"encrypted": "", "encrypted.rotation": "soon"},
        {"encrypted": "", "encrypted.rotation": "1"},
        {"encrypted.rotation": "600"},
    ):
        with pytest.raises(datakeys.DataKeyError):
            datakeys.wanted(bad)


def test_a_keyring_keeps_two_keys_primary_first_and_ids_wrap() -> None:
    rand = seeded()
    ring = datakeys.new_keyring(NOW, rand)
    assert datakeys.key_ids(ring) == [1] and len(bytes.fromhex(ring[0]["key"])) == 16
    assert not datakeys.due(ring, NOW + 10, 60)
    assert datakeys.due(ring, NOW + 60, 60)
    ring = datakeys.rotated(ring, NOW + 60, rand)
    assert datakeys.key_ids(ring) == [2, 1]
    ring = datakeys.rotated(ring, NOW + 120, rand)
    assert datakeys.key_ids(ring) == [3, 2]  # key 1's grace period is over
    assert datakeys.key_ids(datakeys.rotated([{**ring[0], "id": 255}], NOW, rand))[0] == 1
    keys = datakeys.data_keys(ring)
    assert [k.key_id for k in keys] == [3, 2] and all(isinstance(k, DataKey) for k in keys)
    with pytest.raises(ValueError):
        datakeys.data_keys([{"id": 1}])


def test_an_encrypted_network_gets_a_key_and_views_show_only_its_id(state: ClusterState) -> None:
    plain = state.create_network("plain", now=NOW, rand=seeded(2))
    net = state.create_network("secret", now=NOW, rand=seeded(3), encrypted=True)
    assert not plain.encrypted and plain.data_keys == []
    assert net.encrypted and datakeys.key_ids(net.data_keys) == [1]
    secret = net.data_keys[0]["key"]
    shown = network_doc(net)
    assert shown["encrypted"] is True and shown["key_ids"] == [1]
    assert secret not in json.dumps(shown)
    assert member_network_doc(net)["data_keys"][0]["key"] == secret


def test_one_rotation_new_primary_previous_kept_replicated(state: ClusterState) -> None:
    net = state.create_network("secret", now=NOW, rand=seeded(3), encrypted=True, key_period=600)
    state.take_changes()
    assert state.rotate_data_keys(now=NOW + 599, rand=seeded(4)) == []
    assert state.take_changes() == []
    (rotated,) = state.rotate_data_keys(now=NOW + 600, rand=seeded(4))
    assert datakeys.key_ids(rotated.data_keys) == [2, 1]
    assert rotated.data_keys[1] == net.data_keys[0]  # the previous key, for the grace period
    changes = state.take_changes()
    assert [c.kind for c in changes] == ["network"]
    follower = ClusterState()
    for change in state.records():
        follower.apply(change)
    assert follower.networks[net.id] == state.networks[net.id]


def test_a_too_short_rotation_period_is_refused_and_changes_nothing(state: ClusterState) -> None:
    state.take_changes()
    with pytest.raises(ClusterError) as info:
        state.create_network("secret", now=NOW, rand=seeded(3), encrypted=True, key_period=1)
    assert info.value.kind is ErrorKind.INVALID
    assert state.take_changes() == []
    assert all(n.name != "secret" for n in state.networks.values())
