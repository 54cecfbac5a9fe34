"""`node rm` revokes the removed node's gossip key (issue 18): the leader stages a new key and
takes each step of the rotation only once every live node has reported the previous one."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from overlaynet.cluster.client import ManagerClient
from overlaynet.cluster.errors import ClusterError, Role
from overlaynet.cluster.keyrotation import SETTLE, KeyStage, KeyStep
from overlaynet.cluster.store import ClusterStore
from overlaynet.gossip.keyring import fingerprint

from .loopback import HOST, Swarm, free_port, serve


def fp(hex_key: str) -> str:
    return fingerprint(bytes.fromhex(hex_key))


async def report(client: ManagerClient, *keys: str) -> list[str]:
    reply = await client.call("gossip.report", key_fingerprints=[fp(k) for k in keys])
    keyring: list[str] = reply["gossip_keyring"]
    return keyring


def stage(swarm: Swarm) -> KeyStage:
    return swarm.server.state.require_cluster().gossip_rotation


async def test_node_rm_rotates_the_gossip_key_in_stages(swarm: Swarm) -> None:
    # A clock the test moves on: SETTLE must pass between steps (within the frames' skew).
    offset = [0.0]
    swarm.server._clock = lambda: time.time() + offset[0]
    w2 = await swarm.join("node2", "10.9.0.2")
    w3 = await swarm.join("node3", "10.9.0.3")
    c1, c2 = swarm.leader_client, swarm.client(w2.node_id, w2.credential)
    old = swarm.init.gossip_key.hex()
    assert await report(c1, old) == [old]
    swarm.status[w3.node_id] = "Down"

    await c1.call("node.rm", node="node3", force=True)
    assert stage(swarm) is KeyStage.INSTALL
    ring = await report(c1, old)
    new = ring[1]
    assert ring == [old, new]  # install: still sealing with the old key

    # node2 has not installed it yet: however long, nobody is told to use it.
    await report(c1, old, new)
    offset[0] += 2 * SETTLE
    assert await report(c2, old) == [old, new]
    assert stage(swarm) is KeyStage.INSTALL

    # Both hold it (node3 is Down and gone: not waited for); after SETTLE, use it.
    await report(c2, old, new)
    assert stage(swarm) is KeyStage.INSTALL
    offset[0] += SETTLE
    assert await report(c1, old, new) == [new, old]
    assert stage(swarm) is KeyStage.USE

    # Retired only once both seal with the new one.
    await report(c1, new, old)
    offset[0] += 2 * SETTLE
    assert await report(c2, old, new) == [new, old]
    await report(c2, new, old)
    offset[0] += SETTLE
    assert await report(c1, new, old) == [new]
    assert stage(swarm) is KeyStage.IDLE
    assert (await c2.call("state.snapshot"))["gossip_keyring"] == [new]
    # node3 can no longer ask for the keyring either: its credential went with it.
    c3 = swarm.client(w3.node_id, w3.credential)
    with pytest.raises(ClusterError, match="not a member"):
        await report(c3, old)


async def test_a_refused_node_rm_stages_nothing(swarm: Swarm) -> None:
    await swarm.join("node2", "10.9.0.2")
    with pytest.raises(ClusterError, match="not down"):
        await swarm.leader_client.call("node.rm", node="node2")
    assert stage(swarm) is KeyStage.IDLE
    assert swarm.server.state.require_cluster().pending_gossip_key == ""


async def test_a_report_must_list_fingerprints(swarm: Swarm) -> None:
    for bad in ([], ["a"] * 4, "abc", [1]):
        with pytest.raises(ClusterError) as info:
            await swarm.leader_client.call("gossip.report", key_fingerprints=bad)
        assert info.value.kind == "invalid"


async def test_a_follower_forwards_reports_to_the_leader_which_alone_steps(
    swarm: Swarm, tmp_path: Path
) -> None:
    m2 = await swarm.join("node2", "10.9.0.2", Role.MANAGER)
    upstream = ManagerClient([swarm.addr], m2.node_id, m2.credential, timeout=2.0)
    follower, follower_scope = await serve(
        swarm.nursery, ClusterStore(tmp_path / "follower.db"), free_port(), upstream=upstream
    )
    await follower.sync_once()
    via_follower = swarm.client(m2.node_id, m2.credential, [f"{HOST}:{follower.port}"])
    old = swarm.init.gossip_key.hex()
    w3 = await swarm.join("node3", "10.9.0.3")
    swarm.status[w3.node_id] = "Down"
    await swarm.leader_client.call("node.rm", node="node3", force=True)
    _, new = await report(via_follower, old)
    await report(via_follower, old, new)
    # The report reached the leader (the follower keeps none and takes no step).
    assert swarm.server._key_reports[m2.node_id] == (fp(old), fp(new))
    assert follower._key_reports == {}
    assert follower.advance_key_rotation() is KeyStep.WAIT
    follower_scope.cancel()
