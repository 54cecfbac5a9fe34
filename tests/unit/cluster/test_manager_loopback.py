"""A manager and its clients over real TCP on 127.0.0.1: joins, rights, allocations, restarts,
garbage and a follower manager. No root needed; every server binds a free high port."""

from __future__ import annotations

import secrets
import struct
import time
from pathlib import Path

import pytest
import trio

from overlaynet.cluster import protocol, tokens
from overlaynet.cluster.client import JoinResult, ManagerClient
from overlaynet.cluster.protocol import FrameKind
from overlaynet.cluster.state import ClusterError, ErrorKind, Role
from overlaynet.cluster.store import ClusterStore

from .loopback import HOST, Swarm, free_port, raw_exchange, serve

# ----- joining -----


async def test_join_as_worker_returns_identity_managers_and_keyring(swarm: Swarm) -> None:
    result = await swarm.join("node2", "10.9.0.2")
    assert result.role is Role.WORKER
    assert result.managers == (swarm.addr,)
    assert result.peers == (HOST,)
    assert result.gossip_key == swarm.init.gossip_key and len(result.credential) == 32
    assert swarm.server.state.nodes[result.node_id].hostname == "node2"
    assert JoinResult.from_doc(result.to_doc()) == result
    leader = swarm.init.as_join_result()
    assert (leader.cluster_id, leader.managers) == (result.cluster_id, (swarm.addr,))


async def test_the_manager_token_joins_as_a_manager(swarm: Swarm) -> None:
    result = await swarm.join("node2", "10.9.0.2", Role.MANAGER)
    assert result.role is Role.MANAGER
    nodes = await swarm.leader_client.call("node.ls")
    assert [(n["hostname"], n["manager_status"]) for n in nodes] == [
        ("node1", "Leader"),
        ("node2", "Reachable"),
    ]
    assert [n["self"] for n in nodes] == [True, False]


async def test_a_wrong_secret_is_an_invalid_join_token(swarm: Swarm) -> None:
    good = tokens.parse_token(swarm.init.worker_token)
    wrong = tokens.make_token(good.digest, "0" * 25)
    with pytest.raises(ClusterError, match="invalid join token: its secret matches neither"):
        await ManagerClient.join(swarm.addr, wrong, "node2", "10.9.0.2")
    assert swarm.server.stats["rejected_bad_token"] == 1
    assert len(swarm.server.state.nodes) == 1


async def test_a_token_of_another_swarm_says_so(swarm: Swarm) -> None:
    other = tokens.make_token(tokens.cluster_digest(b"other"), "1" * 25)
    with pytest.raises(ClusterError, match="belongs to a different swarm"):
        await ManagerClient.join(swarm.addr, other, "node2", "10.9.0.2")


async def test_a_malformed_token_fails_before_connecting(swarm: Swarm) -> None:
    with pytest.raises(ClusterError, match="invalid join token: it must start with SWMTKN-"):
        await ManagerClient.join(swarm.addr, "SWMTKX-1-abc", "node2", "10.9.0.2")
    assert swarm.server.stats.total() == 0


async def test_joining_twice_is_refused_clearly(swarm: Swarm) -> None:
    await swarm.join("node2", "10.9.0.2")
    with pytest.raises(ClusterError, match=r"10\.9\.0\.2 is already in the swarm \(node2") as info:
        await swarm.join("node2", "10.9.0.2")
    assert info.value.kind is ErrorKind.CONFLICT


async def test_a_wrong_address_says_no_manager_is_there(swarm: Swarm) -> None:
    with pytest.raises(ClusterError, match=r"cannot reach a swarm manager at .*refused") as info:
        await ManagerClient.join(f"{HOST}:{free_port()}", swarm.init.worker_token, "n", "10.9.0.9")
    assert info.value.kind is ErrorKind.UNAVAILABLE
    with pytest.raises(ClusterError, match="invalid manager address"):
        await ManagerClient.join(f"{HOST}:notaport", swarm.init.worker_token, "n", "10.9.0.9")


# ----- rights -----


async def test_a_worker_may_not_call_manager_operations(swarm: Swarm) -> None:
    worker = await swarm.join("node2", "10.9.0.2")
    client = swarm.client(worker.node_id, worker.credential)
    calls: list[tuple[str, dict[str, object]]] = [
        ("node.ls", {}),
        ("network.create", {"name": "x"}),
        ("join_token", {"role": "manager"}),
        ("node.promote", {"node": "node2"}),
        ("replica.fetch", {"since": 0}),
    ]
    for op, args in calls:
        with pytest.raises(ClusterError, match=f"node2 is a worker node and {op} needs") as info:
            await client.call(op, **args)
        assert info.value.kind is ErrorKind.FORBIDDEN
        assert f"node1 at {swarm.addr}" in info.value.message
    snapshot = await client.call("state.snapshot")
    assert [n["name"] for n in snapshot["networks"]] == ["ingress"]
    assert snapshot["node"]["role"] == "worker" and snapshot["managers"] == [swarm.addr]


async def test_a_worker_releases_only_its_own_addresses(swarm: Swarm) -> None:
    await swarm.leader_client.call("network.create", name="myoverlay", attachable=True)
    w2 = await swarm.join("node2", "10.9.0.2")
    w3 = await swarm.join("node3", "10.9.0.3")
    c2, c3 = swarm.client(w2.node_id, w2.credential), swarm.client(w3.node_id, w3.credential)
    alloc = await c2.call("ip.allocate", network="myoverlay", endpoint_id="ep1")
    assert (alloc["ip"], alloc["vni"], alloc["mac"]) == ("10.0.0.2", 4097, "02:42:0a:00:00:02")
    with pytest.raises(ClusterError, match="belongs to node2"):
        await c3.call("ip.release", network="myoverlay", endpoint_id="ep1")
    assert (await c2.call("ip.release", network="myoverlay", endpoint_id="ep1"))["released"]


async def test_non_attachable_overlays_refuse_containers(swarm: Swarm) -> None:
    await swarm.leader_client.call("network.create", name="svc")
    w2 = await swarm.join("node2", "10.9.0.2")
    with pytest.raises(ClusterError, match="not manually attachable"):
        await swarm.client(w2.node_id, w2.credential).call(
            "ip.allocate", network="svc", endpoint_id="ep1"
        )


async def test_a_node_that_left_can_no_longer_call(swarm: Swarm) -> None:
    w2 = await swarm.join("node2", "10.9.0.2")
    client = swarm.client(w2.node_id, w2.credential)
    await client.call("leave")
    with pytest.raises(ClusterError, match="not a member of this swarm") as info:
        await client.call("state.snapshot")
    assert info.value.kind is ErrorKind.FORBIDDEN


async def test_node_rm_refuses_a_live_node_unless_forced(swarm: Swarm) -> None:
    w2 = await swarm.join("node2", "10.9.0.2")
    with pytest.raises(ClusterError, match="is not down and can't be removed"):
        await swarm.leader_client.call("node.rm", node="node2")
    swarm.status[w2.node_id] = "Down"
    listed = await swarm.leader_client.call("node.inspect", node="node2")
    assert listed["status"] == "Down"
    await swarm.leader_client.call("node.rm", node="node2")
    assert w2.node_id not in swarm.server.state.nodes


async def test_join_token_prints_either_token(swarm: Swarm) -> None:
    for role, token in [("worker", swarm.init.worker_token), ("manager", swarm.init.manager_token)]:
        reply = await swarm.leader_client.call("join_token", role=role)
        assert reply == {"role": role, "token": token, "manager_addr": swarm.addr}


# ----- allocation under concurrency, restart -----


async def test_concurrent_clients_never_get_the_same_address(swarm: Swarm) -> None:
    await swarm.leader_client.call("network.create", name="myoverlay", attachable=True)
    workers = [await swarm.join(f"node{i}", f"10.9.0.{i}") for i in range(2, 5)]
    got: list[str] = []

    async def allocate(result: JoinResult, n: int) -> None:
        client = swarm.client(result.node_id, result.credential)
        alloc = await client.call("ip.allocate", network="myoverlay", endpoint_id=f"e{n}")
        got.append(alloc["ip"])

    async with trio.open_nursery() as nursery:
        for i, worker in enumerate(workers):
            for n in range(8):
                nursery.start_soon(allocate, worker, i * 100 + n)
    assert len(got) == 24 and len(set(got)) == 24


async def test_a_restarted_manager_keeps_everything(swarm: Swarm) -> None:
    await swarm.leader_client.call(
        "network.create", name="myoverlay", attachable=True, labels={"k": "v"}
    )
    w2 = await swarm.join("node2", "10.9.0.2")
    c2 = swarm.client(w2.node_id, w2.credential)
    first = await c2.call("ip.allocate", network="myoverlay", endpoint_id="ep1")
    await swarm.leader_client.call("node.update", node="node2", availability="drain")
    await swarm.stop()
    await swarm.restart()

    # The worker's credential still works, its allocation is still its own, nothing is reused.
    again = await c2.call("ip.allocate", network="myoverlay", endpoint_id="ep1")
    assert again == first
    other = await c2.call("ip.allocate", network="myoverlay", endpoint_id="ep2")
    assert other["ip"] == "10.0.0.3"
    net = await swarm.leader_client.call("network.inspect", network="myoverlay")
    assert net["labels"] == {"k": "v"} and len(net["endpoints"]) == 2
    node2 = await swarm.leader_client.call("node.inspect", node="node2")
    assert node2["availability"] == "drain"
    assert (await swarm.join("node3", "10.9.0.3")).role is Role.WORKER


# ----- hostile bytes -----


async def test_garbage_is_counted_and_the_server_keeps_serving(swarm: Swarm) -> None:
    replies = [
        await raw_exchange(swarm.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        await raw_exchange(swarm.port, struct.pack("!I", 1 << 30)),
        await raw_exchange(swarm.port, struct.pack("!I", 12) + b"ONCM\x01\x03\x00" + bytes(5)),
    ]
    assert all(b"malformed frame" in r for r in replies)
    assert swarm.server.stats["rejected_malformed"] == 3
    assert len(await swarm.leader_client.call("node.ls")) == 1


async def test_unknown_senders_and_forgeries_are_refused_in_clear(swarm: Swarm) -> None:
    key = protocol.derive_node_key(bytes(32), "nobody")
    data, _ = protocol.seal_request(
        FrameKind.REQUEST,
        "nobody",
        key,
        "node.ls",
        {},
        to=f"{HOST}:{swarm.port}",
        now=time.time(),
        rand=lambda n: bytes(n),
    )
    assert b"not a member of this swarm" in await raw_exchange(swarm.port, data)
    forged_key = protocol.derive_node_key(bytes(32), swarm.init.node_id)
    data, _ = protocol.seal_request(
        FrameKind.REQUEST,
        swarm.init.node_id,
        forged_key,
        "node.ls",
        {},
        to=f"{HOST}:{swarm.port}",
        now=time.time(),
        rand=lambda n: bytes(n),
    )
    assert b"does not authenticate" in await raw_exchange(swarm.port, data)
    assert swarm.server.stats["rejected_auth_failed"] == 1
    assert len(await swarm.leader_client.call("node.ls")) == 1


async def test_a_replayed_request_is_refused(swarm: Swarm) -> None:
    key = protocol.derive_node_key(swarm.init.credential, swarm.init.node_id)
    data, rid = protocol.seal_request(
        FrameKind.REQUEST,
        swarm.init.node_id,
        key,
        "network.create",
        {"name": "once"},
        to=f"{HOST}:{swarm.port}",
        now=time.time(),
        rand=secrets.token_bytes,
    )
    decoder = protocol.FrameDecoder()
    decoder.receive_data(await raw_exchange(swarm.port, data))
    frame = decoder.next_frame()
    assert frame is not None
    created = protocol.open_response(frame, key, rid, now=time.time())
    assert created["name"] == "once"
    assert b"replayed frame" in await raw_exchange(swarm.port, data)
    assert swarm.server.stats["rejected_replay"] == 1
    assert [n.name for n in swarm.server.state.networks.values()].count("once") == 1


# ----- a follower manager -----


async def test_a_follower_copies_the_state_serves_reads_and_forwards_writes(
    swarm: Swarm, tmp_path: Path
) -> None:
    m2 = await swarm.join("node2", "10.9.0.2", Role.MANAGER)
    follower_port = free_port()
    upstream = ManagerClient([swarm.addr], m2.node_id, m2.credential, timeout=2.0)
    follower, follower_scope = await serve(
        swarm.nursery, ClusterStore(tmp_path / "follower.db"), follower_port, upstream=upstream
    )
    await follower.sync_once()
    via_follower = swarm.client(
        swarm.init.node_id, swarm.init.credential, [f"{HOST}:{follower_port}"]
    )
    assert [n["hostname"] for n in await via_follower.call("node.ls")] == ["node1", "node2"]

    # A write through the follower lands on the leader and is readable at once on the follower.
    await via_follower.call("network.create", name="viafollower", attachable=True)
    assert "viafollower" in [n.name for n in swarm.server.state.networks.values()]
    names = [n["name"] for n in await via_follower.call("network.ls")]
    assert names == ["ingress", "viafollower"]

    # A worker joins through the follower, and allocates through it.
    w3 = await ManagerClient.join(
        f"{HOST}:{follower_port}", swarm.init.worker_token, "node3", "10.9.0.3"
    )
    c3 = swarm.client(w3.node_id, w3.credential, [f"{HOST}:{follower_port}"])
    alloc = await c3.call("ip.allocate", network="viafollower", endpoint_id="e1")
    assert alloc["ip"] == "10.0.0.2"

    # Concurrent fetches (the sync loop and a forwarded write) apply each change once.
    await swarm.leader_client.call("node.update", node="node3", availability="drain")
    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(follower.sync_once)
    assert follower.state.index == swarm.server.state.index
    assert sorted(follower.state.records(), key=lambda c: (c.kind, c.key)) == sorted(
        swarm.server.state.records(), key=lambda c: (c.kind, c.key)
    )

    # The leader dies: reads still work on the follower, writes say why they cannot.
    await swarm.stop()
    assert len(await via_follower.call("node.ls")) == 3
    with pytest.raises(ClusterError, match=r"leader is unreachable.*no leader election"):
        await c3.call("ip.allocate", network="viafollower", endpoint_id="e2")
    follower_scope.cancel()
