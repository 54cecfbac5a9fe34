"""Strict argument types on every manager operation, and every rejection counted by reason.

Issue 18: API booleans were coerced with bool(), so "false" meant true. Here a wrong type is an
`invalid` error that changes nothing; `labels: []` is not an empty map, `"4097"` not a VNI.
"""

from __future__ import annotations

import secrets
import struct
import time
from typing import Any

import pytest

from overlaynet.cluster import protocol, tokens
from overlaynet.cluster.client import ManagerClient
from overlaynet.cluster.protocol import FrameKind
from overlaynet.cluster.state import Change, ClusterError, ErrorKind

from .loopback import HOST, Swarm, raw_exchange

WRONG_TYPES: list[tuple[str, dict[str, Any]]] = [
    ("network.create", {"name": "n", "labels": []}),
    ("network.create", {"name": "n", "labels": ""}),
    ("network.create", {"name": "n", "labels": 0}),
    ("network.create", {"name": "n", "labels": {"a": 1}}),
    ("network.create", {"name": "n", "vni": "4097"}),
    ("network.create", {"name": "n", "vni": 4097.0}),
    ("network.create", {"name": "n", "vni": True}),
    ("network.create", {"name": "n", "attachable": "yes"}),
    ("network.create", {"name": "n", "attachable": 1}),
    ("network.create", {"name": 5}),
    ("network.create", {"name": "n", "subnet": 10}),
    ("node.update", {"node": "node1", "availability": 1}),
    ("node.rm", {"node": "node2", "force": "false"}),
    ("node.inspect", {"node": ["node1"]}),
    ("join_token", {"role": "worker", "rotate": "true"}),
    ("join_token", {"role": "worker", "rotate": 1}),
    ("replica.fetch", {"since": "0"}),
    ("replica.fetch", {"since": True}),
    ("ip.allocate", {"network": "myoverlay", "endpoint_id": "e1", "ip": 167772418}),
    ("ip.release", {"network": "myoverlay", "endpoint_id": 1}),
    ("leave", {"force": "yes please"}),
    ("join.admit", {"hostname": "h", "addr": "10.9.0.9", "role": "boss"}),
    ("node.ls", {"_as": 5}),
    # Unknown arguments are refused on every operation (a typo must not fall back to a default).
    ("network.create", {"name": "n", "attachble": True}),
    ("node.rm", {"node": "node2", "forced": True}),
    ("ip.allocate", {"network": "myoverlay", "endpoint_id": "e1", "address": "10.0.0.9"}),
    ("node.inspect", {"node": ""}),
]


def _snapshot(swarm: Swarm) -> tuple[list[Change], int]:
    state = swarm.server.state
    return sorted(state.records(), key=lambda c: (c.kind, c.key)), state.index


@pytest.mark.parametrize(("op", "args"), WRONG_TYPES, ids=[f"{o}-{a}" for o, a in WRONG_TYPES])
async def test_a_wrong_type_is_invalid_and_changes_nothing(
    swarm: Swarm, op: str, args: dict[str, Any]
) -> None:
    await swarm.leader_client.call("network.create", name="myoverlay", attachable=True)
    await swarm.join("node2", "10.9.0.2")
    before = _snapshot(swarm)
    with pytest.raises(ClusterError) as info:
        await swarm.leader_client.call(op, **args)
    assert info.value.kind is ErrorKind.INVALID, info.value.message
    assert _snapshot(swarm) == before
    assert swarm.server.rejections()["refused"] == 1


def _sealed(swarm: Swarm, *, to: str | None = None, now: float | None = None) -> bytes:
    key = protocol.derive_node_key(swarm.init.credential, swarm.init.node_id)
    data, _ = protocol.seal_request(
        FrameKind.REQUEST,
        swarm.init.node_id,
        key,
        "node.ls",
        {},
        to=swarm.addr if to is None else to,
        now=time.time() if now is None else now,
        rand=secrets.token_bytes,
    )
    return data


async def test_every_rejection_is_counted_by_reason(swarm: Swarm) -> None:
    # A wrong join secret, and a token of another swarm: bad tokens.
    good = tokens.parse_token(swarm.init.worker_token)
    for token in (
        tokens.make_token(good.digest, "0" * 25),
        tokens.make_token(tokens.cluster_digest(b"other"), "1" * 25),
    ):
        with pytest.raises(ClusterError, match="invalid join token"):
            await ManagerClient.join(swarm.addr, token, "node9", "10.9.0.9")
    # A forgery under the leader's id.
    forged_key = protocol.derive_node_key(bytes(32), swarm.init.node_id)
    forged, _ = protocol.seal_request(
        FrameKind.REQUEST,
        swarm.init.node_id,
        forged_key,
        "node.ls",
        {},
        to=swarm.addr,
        now=time.time(),
        rand=secrets.token_bytes,
    )
    assert b"does not authenticate" in await raw_exchange(swarm.port, forged)
    # A sender that is not a member.
    stranger_key = protocol.derive_node_key(bytes(32), "nobody")
    stranger, _ = protocol.seal_request(
        FrameKind.REQUEST,
        "nobody",
        stranger_key,
        "node.ls",
        {},
        to=swarm.addr,
        now=time.time(),
        rand=secrets.token_bytes,
    )
    assert b"not a member" in await raw_exchange(swarm.port, stranger)
    # An old frame, a replayed one, one for another manager, garbage.
    assert b"check the clocks" in await raw_exchange(
        swarm.port, _sealed(swarm, now=time.time() - 600)
    )
    frame = _sealed(swarm)
    await raw_exchange(swarm.port, frame)
    assert b"replayed frame" in await raw_exchange(swarm.port, frame)
    assert b"not to this manager" in await raw_exchange(swarm.port, _sealed(swarm, to=f"{HOST}:1"))
    assert b"malformed" in await raw_exchange(swarm.port, struct.pack("!I", 1 << 30))
    # A request the state refuses.
    with pytest.raises(ClusterError, match="not found"):
        await swarm.leader_client.call("network.inspect", network="nothere")

    assert swarm.server.rejections() == {
        "bad_token": 2,
        "auth_failed": 1,
        "unknown_node": 1,
        "stale": 1,
        "replay": 1,
        "misdirected": 1,
        "malformed": 1,
        "refused": 1,
        "over_cap_total": 0,
        "over_cap_source": 0,
        "over_cap_unauthenticated": 0,
        "first_frame_timeout": 0,
        "idle_timeout": 0,
    }
