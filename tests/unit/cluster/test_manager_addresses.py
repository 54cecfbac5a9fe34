"""Addresses given twice (issue 18), at the manager: an address returns to the pool only when
its own node releases it, or when its node is removed and dead; a removed node is revoked.
Join tokens and the gossip key rotate."""

from __future__ import annotations

import pytest

from overlaynet.cluster.client import JoinResult, ManagerClient
from overlaynet.cluster.invariants import allocated_uses, duplicate_addresses
from overlaynet.cluster.state import ClusterError, ErrorKind, Role

from .loopback import Swarm


async def _worker_with_address(swarm: Swarm) -> tuple[JoinResult, ManagerClient, str]:
    await swarm.leader_client.call("network.create", name="myoverlay", attachable=True)
    w2 = await swarm.join("node2", "10.9.0.2")
    c2 = swarm.client(w2.node_id, w2.credential)
    alloc = await c2.call("ip.allocate", network="myoverlay", endpoint_id="ep1")
    return w2, c2, str(alloc["ip"])


def _assert_no_duplicates(swarm: Swarm) -> None:
    assert duplicate_addresses(allocated_uses(swarm.server.state)) == []


async def test_node_rm_force_of_a_live_node_keeps_its_addresses(swarm: Swarm) -> None:
    """Before: `node rm --force` freed the live node's addresses, and the next container
    elsewhere got the same IP and MAC as one still running."""
    w2, _, ip = await _worker_with_address(swarm)
    with pytest.raises(ClusterError, match="node2 is up and its containers hold 1") as info:
        await swarm.leader_client.call("node.rm", node="node2", force=True)
    assert info.value.kind is ErrorKind.CONFLICT
    assert w2.node_id in swarm.server.state.nodes
    leader_alloc = await swarm.leader_client.call(
        "ip.allocate", network="myoverlay", endpoint_id="ep2"
    )
    assert leader_alloc["ip"] != ip
    _assert_no_duplicates(swarm)


async def test_a_dead_node_is_removed_with_its_addresses_and_revoked(swarm: Swarm) -> None:
    w2, c2, ip = await _worker_with_address(swarm)
    swarm.status[w2.node_id] = "Down"
    await swarm.leader_client.call("node.rm", node="node2")
    assert swarm.server.state.allocations == {}
    # Its credential is gone: the node can no longer talk to the managers.
    with pytest.raises(ClusterError, match="not a member of this swarm") as info:
        await c2.call("state.snapshot")
    assert info.value.kind is ErrorKind.FORBIDDEN
    assert swarm.server.rejections()["unknown_node"] == 1
    again = await swarm.leader_client.call("ip.allocate", network="myoverlay", endpoint_id="ep2")
    assert again["ip"] == ip
    _assert_no_duplicates(swarm)


async def test_leave_is_refused_while_the_node_holds_addresses(swarm: Swarm) -> None:
    """Before: `swarm leave` with a container still on an overlay freed its address."""
    w2, c2, ip = await _worker_with_address(swarm)
    with pytest.raises(ClusterError, match="Remove those containers first"):
        await c2.call("leave", force=True)
    assert [a.ip for a in swarm.server.state.allocations.values()] == [ip]
    await c2.call("ip.release", network="myoverlay", endpoint_id="ep1")
    await c2.call("leave")
    assert w2.node_id not in swarm.server.state.nodes


async def test_a_manager_cannot_release_another_nodes_address(swarm: Swarm) -> None:
    _, _, ip = await _worker_with_address(swarm)
    with pytest.raises(ClusterError, match="belongs to node2") as info:
        await swarm.leader_client.call("ip.release", network="myoverlay", endpoint_id="ep1")
    assert info.value.kind is ErrorKind.FORBIDDEN
    assert [a.ip for a in swarm.server.state.allocations.values()] == [ip]


async def test_join_token_rotate_refuses_the_old_token(swarm: Swarm) -> None:
    old = swarm.init.worker_token
    reply = await swarm.leader_client.call("join_token", role="worker", rotate=True)
    assert reply["role"] == "worker" and reply["token"] != old
    with pytest.raises(ClusterError, match="invalid join token: its secret matches neither"):
        await ManagerClient.join(swarm.addr, old, "node2", "10.9.0.2")
    joined = await ManagerClient.join(swarm.addr, reply["token"], "node2", "10.9.0.2")
    assert joined.role is Role.WORKER
    # The other role's token is untouched, and a plain join-token prints the new one.
    manager = await swarm.leader_client.call("join_token", role="manager")
    assert manager["token"] == swarm.init.manager_token
    assert (await swarm.leader_client.call("join_token", role="worker"))["token"] == reply["token"]
    # The rotation is on disk.
    await swarm.stop()
    await swarm.restart()
    with pytest.raises(ClusterError, match="invalid join token"):
        await ManagerClient.join(swarm.addr, old, "node3", "10.9.0.3")


async def test_gossip_key_rotation_is_in_every_snapshot(swarm: Swarm) -> None:
    w2 = await swarm.join("node2", "10.9.0.2")
    c2 = swarm.client(w2.node_id, w2.credential)
    first = (await c2.call("state.snapshot"))["gossip_keyring"]
    assert first == [swarm.init.gossip_key.hex()]
    rotated = (await swarm.leader_client.call("gossip.rotate"))["gossip_keyring"]
    assert rotated[1:] == first and len(rotated) == 2
    assert (await c2.call("state.snapshot"))["gossip_keyring"] == rotated
    with pytest.raises(ClusterError, match=r"worker node and gossip\.rotate needs"):
        await c2.call("gossip.rotate")
    retired = (await swarm.leader_client.call("gossip.retire"))["gossip_keyring"]
    assert retired == rotated[:1]
