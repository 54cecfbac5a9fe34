"""A node's connections to its managers stay open between requests (issue 15), over real TCP on
127.0.0.1: requests in turn on one connection, a second one while a long-poll is out, a request
after the manager restarted or went away, a cancelled exchange never leaving its answer for the
next request; and a held task.assigned that other nodes' joins leave alone. Waits are bounded;
speed is not under test."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from overlaynet.cluster import manager
from overlaynet.cluster.client import ManagerClient
from overlaynet.cluster.store import ClusterStore

from .loopback import HOST, Swarm, eventually, free_port, serve

# A service on no network: its creation changes every worker's task.assigned answer.
DATABASE: dict[str, Any] = {"name": "database", "image": "dockersamples/atsea-db:mssql"}
# A held task.assigned that nothing ends within the test (it is cancelled or answered by a
# change of the caller's answer, never by the hold running out).
LONG_HOLD = 60.0


async def _worker(swarm: Swarm, name: str = "node2") -> ManagerClient:
    joined = await swarm.join(name, f"10.9.0.{name[-1]}")
    return swarm.client(joined.node_id, joined.credential)


async def test_requests_in_turn_share_one_connection(swarm: Swarm) -> None:
    client = await _worker(swarm)
    accepted = swarm.server.stats["accepted"]
    for _ in range(3):
        snap = await client.call("state.snapshot")
        assert snap["cluster_id"] == swarm.init.cluster_id
    assert client.pool.opened == 1
    assert swarm.server.stats["accepted"] == accepted + 1
    assert swarm.server.connections()["open"] == 1  # kept open, idle


async def test_a_request_after_the_manager_restarted_goes_on_a_new_connection(
    swarm: Swarm,
) -> None:
    client = await _worker(swarm)
    await client.call("state.snapshot")
    await swarm.stop()  # the idle connection is closed by the manager going away
    await swarm.restart()
    snap = await client.call("state.snapshot")
    assert snap["cluster_id"] == swarm.init.cluster_id
    assert client.pool.opened == 2
    assert swarm.server.stats["accepted"] == 1


async def test_a_manager_gone_for_good_is_skipped_for_the_next_one(
    swarm: Swarm, nursery: trio.Nursery
) -> None:
    # A follower beside the leader: the client knows both, the leader first.
    joined = await swarm.join("node2", "10.9.0.2")
    follower_port = free_port()
    follower_store = ClusterStore(swarm.tmp / "follower.db")
    follower_store.replace(swarm.server.store.load().records(), swarm.server.state.index)
    follower, follower_scope = await serve(
        nursery, follower_store, follower_port, upstream=swarm.leader_client
    )
    try:
        client = ManagerClient(
            [swarm.addr, f"{HOST}:{follower_port}"], joined.node_id, joined.credential, timeout=5
        )
        await client.call("state.snapshot")
        assert swarm.server.stats["requests"] >= 1 and client.pool.opened == 1
        await swarm.stop()  # the leader's port is closed now: its idle connection is dead
        snap = await client.call("state.snapshot")
        assert snap["cluster_id"] == swarm.init.cluster_id
        assert follower.stats["requests"] == 1
    finally:
        follower_scope.cancel()


async def test_a_long_poll_and_another_call_interleave_on_two_connections(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "ASSIGNED_HOLD", LONG_HOLD)
    client = await _worker(swarm)
    first = await client.call("task.assigned")
    polled: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def long_poll() -> None:
            polled.append(await client.call("task.assigned", index=first["index"]))

        nursery.start_soon(long_poll)
        await eventually(lambda: swarm.server.stats["assigned_held"] == 1)
        # Answered while the long-poll is held: on a second connection.
        snap = await client.call("state.snapshot")
        assert snap["cluster_id"] == swarm.init.cluster_id and not polled
        assert client.pool.opened == 2
        # A change of the worker's answer (a new service) ends the hold.
        await swarm.leader_client.call("service.create", **DATABASE)
    (doc,) = polled
    assert doc["index"] > first["index"] and [s["name"] for s in doc["services"]] == ["database"]
    # Both connections are idle now and serve the next requests: none opened.
    await client.call("state.snapshot")
    await client.call("task.assigned")
    assert client.pool.opened == 2


async def test_a_cancelled_request_never_leaves_its_answer_for_the_next(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "ASSIGNED_HOLD", LONG_HOLD)
    client = await _worker(swarm)
    first = await client.call("task.assigned")
    assert client.pool.idle_count(swarm.addr) == 1
    with trio.move_on_after(LONG_HOLD) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: client.call("task.assigned", index=first["index"]))
            await eventually(lambda: swarm.server.stats["assigned_held"] == 1)
            scope.cancel()  # as the task runner does when a local container changed
    # The held request took the idle connection; cancelled mid-exchange, it was closed.
    assert client.pool.idle_count(swarm.addr) == 0
    # Its answer, sent once the state moves, can reach no later request.
    await swarm.leader_client.call("service.create", **DATABASE)
    snap = await client.call("state.snapshot")
    assert snap["cluster_id"] == swarm.init.cluster_id and "node" in snap
    assert client.pool.opened == 2


async def test_other_nodes_joining_leave_a_held_task_assigned_held(
    swarm: Swarm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager, "ASSIGNED_HOLD", LONG_HOLD)
    client = await _worker(swarm)
    first = await client.call("task.assigned")
    polled: list[Any] = []
    async with trio.open_nursery() as nursery:

        async def long_poll() -> None:
            polled.append(await client.call("task.assigned", index=first["index"]))

        nursery.start_soon(long_poll)
        await eventually(lambda: swarm.server.stats["assigned_held"] == 1)
        for name in ("node3", "node4"):
            await swarm.join(name, f"10.9.0.{name[-1]}")
        # The state moved (two joins), the worker's answer did not: still held.
        await eventually(lambda: swarm.server.stats["assigned_held_unchanged"] >= 1)
        assert swarm.server.state.index > first["index"] and not polled
        await swarm.leader_client.call("service.create", **DATABASE)
    (doc,) = polled
    assert doc["index"] == swarm.server.state.index


async def test_idle_connections_kept_per_manager_are_bounded(swarm: Swarm) -> None:
    client = await _worker(swarm)
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(lambda: client.call("state.snapshot"))
    assert client.pool.idle_count(swarm.addr) <= 2
    client.close()
    assert client.pool.idle_count(swarm.addr) == 0
    await client.call("state.snapshot")  # a closed pool opens again
