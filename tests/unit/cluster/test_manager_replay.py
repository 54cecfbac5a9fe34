"""Replays on tcp/2377 (issue 18): frames captured on the wire and sent again to a follower
manager, or to the leader after a restart, re-ran `ip.allocate` and left ghost addresses. A
frame is bound to the manager it was sealed for, and a write runs once per request id."""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from overlaynet.cluster import client as client_module
from overlaynet.cluster import protocol
from overlaynet.cluster.client import JoinResult, ManagerClient
from overlaynet.cluster.manager import ManagerServer
from overlaynet.cluster.state import ClusterError, Role
from overlaynet.cluster.store import ClusterStore

from .loopback import HOST, Swarm, Wiretap, frames_from, free_port, open_frame, raw_exchange, serve

# Every request of a client built with it carries this request id (it is the first 8 random
# bytes a call draws), as a client retrying one request at several managers does.
FIXED_RID = bytes.fromhex("0123456789abcdef")


def fixed_rid_rand(n: int) -> bytes:
    return FIXED_RID if n == 8 else secrets.token_bytes(n)


@dataclass
class Scene:
    swarm: Swarm
    tap: Wiretap
    worker: JoinResult

    @property
    def worker_client(self) -> ManagerClient:
        return self.swarm.client(self.worker.node_id, self.worker.credential)

    def endpoints(self, server: ManagerServer) -> list[str]:
        return sorted(a.endpoint_id for a in server.state.allocations.values())


@pytest.fixture
async def scene(swarm: Swarm, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Scene]:
    await swarm.leader_client.call("network.create", name="myoverlay", attachable=True)
    worker = await swarm.join("node2", "10.9.0.2")
    tap = Wiretap()
    monkeypatch.setattr(client_module, "trio", tap)
    yield Scene(swarm, tap, worker)


async def _allocate_captured_then_release(scene: Scene) -> tuple[dict[str, object], bytes]:
    """ep1 allocated (the frame captured on its way), then released by its own node."""
    first = await scene.worker_client.call("ip.allocate", network="myoverlay", endpoint_id="ep1")
    captured = frames_from(scene.tap.sent, scene.worker.node_id)[-1]
    await scene.worker_client.call("ip.release", network="myoverlay", endpoint_id="ep1")
    assert scene.endpoints(scene.swarm.server) == []
    return first, captured


async def test_a_frame_replayed_to_another_manager_is_refused(scene: Scene, tmp_path: Path) -> None:
    swarm = scene.swarm
    m2 = await swarm.join("node3", "10.9.0.3", Role.MANAGER)
    follower_port = free_port()
    upstream = ManagerClient([swarm.addr], m2.node_id, m2.credential, timeout=2.0)
    follower, follower_scope = await serve(
        swarm.nursery, ClusterStore(tmp_path / "follower.db"), follower_port, upstream=upstream
    )
    await follower.sync_once()
    _, captured = await _allocate_captured_then_release(scene)

    reply = await raw_exchange(follower_port, captured)

    assert b"not to this manager" in reply
    assert follower.rejections()["misdirected"] == 1
    assert scene.endpoints(swarm.server) == [], "the replay re-ran ip.allocate (ghost address)"
    follower_scope.cancel()


async def test_a_frame_replayed_after_a_restart_changes_nothing(scene: Scene) -> None:
    swarm = scene.swarm
    first, captured = await _allocate_captured_then_release(scene)
    await swarm.stop()
    await swarm.restart()

    reply = await raw_exchange(swarm.port, captured)

    assert scene.endpoints(swarm.server) == [], "the replay re-ran ip.allocate (ghost address)"
    # The answer is the first one, sealed for the worker alone: the replayer learns nothing.
    key = protocol.derive_node_key(scene.worker.credential, scene.worker.node_id)
    rid = protocol.open_sealed(open_frame(captured), key, now=time.time())["rid"]
    assert protocol.open_response(open_frame(reply), key, rid, now=time.time()) == first
    assert swarm.server.stats["duplicate_requests"] == 1
    # The worker itself is unaffected: a new request allocates as usual.
    again = await scene.worker_client.call("ip.allocate", network="myoverlay", endpoint_id="ep1")
    assert again["ip"] == first["ip"] and scene.endpoints(swarm.server) == ["ep1"]


async def test_a_repeated_request_id_gets_the_first_answer_and_changes_nothing(
    scene: Scene,
) -> None:
    swarm = scene.swarm
    leader = ManagerClient(
        [swarm.addr], swarm.init.node_id, swarm.init.credential, rand=fixed_rid_rand
    )
    created = await leader.call("network.create", name="once", attachable=True)
    # Not "network with name once already exists": the same request, answered again.
    assert await leader.call("network.create", name="once", attachable=True) == created
    assert [n.name for n in swarm.server.state.networks.values()].count("once") == 1

    worker = ManagerClient(
        [swarm.addr], scene.worker.node_id, scene.worker.credential, rand=fixed_rid_rand
    )
    first = await worker.call("ip.allocate", network="myoverlay", endpoint_id="ep1")
    await scene.worker_client.call("ip.release", network="myoverlay", endpoint_id="ep1")
    index = swarm.server.state.index
    assert await worker.call("ip.allocate", network="myoverlay", endpoint_id="ep1") == first
    assert swarm.server.state.index == index and scene.endpoints(swarm.server) == []

    # Request ids are per sender: another node's request with the same id is its own.
    other = await swarm.join("node4", "10.9.0.4")
    other_client = ManagerClient([swarm.addr], other.node_id, other.credential, rand=fixed_rid_rand)
    mine = await other_client.call("ip.allocate", network="myoverlay", endpoint_id="ep9")
    assert mine["endpoint_id"] == "ep9" and scene.endpoints(swarm.server) == ["ep9"]


async def test_a_refused_write_stays_refused_when_repeated(scene: Scene) -> None:
    swarm = scene.swarm
    worker = ManagerClient(
        [swarm.addr], scene.worker.node_id, scene.worker.credential, rand=fixed_rid_rand
    )
    with pytest.raises(ClusterError, match="network nothere not found"):
        await worker.call("ip.allocate", network="nothere", endpoint_id="ep1")
    await swarm.leader_client.call("network.create", name="nothere", attachable=True)
    # The same request again (a replay within the window): it failed once, it fails again.
    with pytest.raises(ClusterError, match="network nothere not found"):
        await worker.call("ip.allocate", network="nothere", endpoint_id="ep1")
    assert scene.endpoints(swarm.server) == []


async def test_a_retry_at_another_manager_runs_once(scene: Scene, tmp_path: Path) -> None:
    """A client retries a request elsewhere under the same id; the follower forwards it
    under that id, so the leader recognises it."""
    swarm = scene.swarm
    m2 = await swarm.join("node3", "10.9.0.3", Role.MANAGER)
    follower_port = free_port()
    upstream = ManagerClient([swarm.addr], m2.node_id, m2.credential, timeout=2.0)
    follower, follower_scope = await serve(
        swarm.nursery, ClusterStore(tmp_path / "follower.db"), follower_port, upstream=upstream
    )
    await follower.sync_once()
    via_follower = ManagerClient(
        [f"{HOST}:{follower_port}"],
        swarm.init.node_id,
        swarm.init.credential,
        rand=fixed_rid_rand,
    )
    via_leader = ManagerClient(
        [swarm.addr], swarm.init.node_id, swarm.init.credential, rand=fixed_rid_rand
    )
    created = await via_follower.call("network.create", name="retried", attachable=True)
    assert await via_leader.call("network.create", name="retried", attachable=True) == created
    with trio.fail_after(5):
        await follower.sync_once()
    assert [n.name for n in follower.state.networks.values()].count("retried") == 1
    follower_scope.cancel()
