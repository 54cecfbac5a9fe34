"""Service operations over real TCP on 127.0.0.1: what the CLI asks (service.create/ls/ps/
inspect/scale/rm), what workers ask and say (task.assigned, task.report), strict argument types,
idempotent writes, a follower forwarding a service.create, and tasks leaving a Down node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from overlaynet.cluster import protocol
from overlaynet.cluster.client import JoinResult, ManagerClient
from overlaynet.cluster.state import Change, ClusterError, ErrorKind, Role
from overlaynet.cluster.store import ClusterStore
from overlaynet.cluster.tasks import TaskState

from .loopback import HOST, Swarm, eventually, free_port, serve

APPSERVER: dict[str, Any] = {
    "name": "appserver",
    "image": "dockersamples/atsea-appserver:1.0",
    "networks": ["atsea"],
    "publish": ["8080:8080"],
    "replicas": 2,
}
DATABASE: dict[str, Any] = {
    "name": "database",
    "image": "dockersamples/atsea-db:mssql",
    "networks": ["atsea"],
    "endpoint_mode": "dnsrr",
    "publish": ["mode=host,target=1433"],
}


async def two_nodes(swarm: Swarm) -> tuple[JoinResult, ManagerClient]:
    await swarm.leader_client.call("network.create", name="atsea")
    worker = await swarm.join("node2", "10.9.0.2")
    return worker, swarm.client(worker.node_id, worker.credential)


def _snapshot(swarm: Swarm) -> tuple[list[Change], int]:
    state = swarm.server.state
    return sorted(state.records(), key=lambda c: (c.kind, c.key)), state.index


async def test_the_tutorial_s_services_as_the_cli_sees_them(swarm: Swarm) -> None:
    await two_nodes(swarm)
    leader = swarm.leader_client
    db = await leader.call("service.create", **DATABASE)
    app = await leader.call("service.create", **APPSERVER)
    atsea = await leader.call("network.inspect", network="atsea")
    ingress = await leader.call("network.inspect", network="ingress")

    # service inspect: Docker's layout.
    assert app["Spec"]["Name"] == "appserver" and app["Version"] == {"Index": 1}
    assert app["Spec"]["TaskTemplate"]["ContainerSpec"] == {
        "Image": "dockersamples/atsea-appserver:1.0",
        "Args": [],
        "Env": [],
    }
    assert app["Spec"]["TaskTemplate"]["Networks"] == [{"Target": atsea["id"]}]
    assert app["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}
    ports = [
        {"Protocol": "tcp", "TargetPort": 8080, "PublishedPort": 8080, "PublishMode": "ingress"}
    ]
    assert app["Spec"]["EndpointSpec"] == {"Mode": "vip", "Ports": ports}
    assert app["Endpoint"]["VirtualIPs"] == [
        {"NetworkID": ingress["id"], "Addr": "10.255.0.2/16"},
        # The database's task (created and given an address first) has 10.0.0.2.
        {"NetworkID": atsea["id"], "Addr": "10.0.0.3/24"},
    ]
    assert app["CreatedAt"].endswith("Z")
    assert db["Endpoint"]["VirtualIPs"] == [] and db["Endpoint"]["Ports"] == []
    assert await leader.call("service.inspect", service="appserver") == app

    # service ls: the pass ran with the write, so tasks exist; none runs yet.
    rows = await leader.call("service.ls")
    assert [(r["name"], r["mode"], r["replicas"], r["ports"]) for r in rows] == [
        ("appserver", "replicated", "0/2", "*:8080->8080/tcp"),
        ("database", "replicated", "0/1", ""),
    ]
    assert rows[0]["id"] == app["ID"] and rows[0]["image"] == APPSERVER["image"]

    # service ps: one task per slot, on a node, wanted running, host port shown for the db.
    ps = await leader.call("service.ps", service="database")
    assert [(t["name"], t["desired_state"], t["current_state"], t["ports"]) for t in ps] == [
        ("database.1", "Running", "Assigned", "*:1433->1433/tcp")
    ]
    assert ps[0]["node"] in ("node1", "node2") and not ps[0]["history"]
    app_ps = await leader.call("service.ps", service=app["ID"][:8])
    assert sorted(t["name"] for t in app_ps) == ["appserver.1", "appserver.2"]


async def test_a_worker_runs_what_it_is_assigned_and_reports_it(swarm: Swarm) -> None:
    worker, client = await two_nodes(swarm)
    await swarm.leader_client.call("service.create", **{**APPSERVER, "replicas": 4})
    assigned = await client.call("task.assigned")
    tasks = assigned["tasks"]
    assert assigned["node_id"] == worker.node_id and len(tasks) == 2  # spread over 2 nodes
    task = tasks[0]
    assert task["image"] == APPSERVER["image"] and task["desired_state"] == "running"
    assert task["name"] == f"appserver.{task['slot']}"
    assert [n["network_name"] for n in task["networks"]] == ["ingress", "atsea"]
    assert [n["vip"] for n in task["networks"]] == ["10.255.0.2", "10.0.0.2"]
    net = task["networks"][1]
    assert net["address"] == f"{net['ip']}/24" and net["mac"].startswith("02:42:0a:00:00:")
    assert task["ports"] == [
        {"protocol": "tcp", "target": 8080, "published": 8080, "mode": "ingress"}
    ]
    assert [(lb["network_name"], lb["address"][-3:]) for lb in assigned["lb"]] == [
        ("atsea", "/24"),
        ("ingress", "/16"),
    ]
    (svc,) = assigned["services"]
    assert svc["name"] == "appserver" and svc["vips"] == task["vips"]
    # A worker that restarts asks again and gets the same list: nothing twice.
    assert (await client.call("task.assigned"))["tasks"] == tasks

    for t in tasks:
        reply = await client.call(
            "task.report", task_id=t["id"], state="running", container_id="c1"
        )
        assert reply == {"accepted": True, "task_id": t["id"], "state": "running"}
    rows = await swarm.leader_client.call("service.ls")
    assert rows[0]["replicas"] == "2/4"

    # A duplicate (a retried report under a new request id) is stale: counted and dropped.
    again = await client.call("task.report", task_id=tasks[0]["id"], state="running")
    assert again["accepted"] is False and "only moves forward" in again["reason"]
    assert swarm.server.stats["task_reports_stale"] == 1
    # Another node's task: forbidden, nothing changes.
    leaders = [t for t in swarm.server.state.tasks.values() if t.node_id == swarm.init.node_id]
    before = _snapshot(swarm)
    with pytest.raises(ClusterError, match="a node reports only its own tasks") as info:
        await client.call("task.report", task_id=leaders[0].id, state="failed")
    assert info.value.kind is ErrorKind.FORBIDDEN and _snapshot(swarm) == before

    # The worker's task fails: the report's pass replaces it at once (restart delay on it).
    failed = await client.call(
        "task.report", task_id=tasks[0]["id"], state="failed", error="exit 1", exit_code=1
    )
    assert failed["accepted"]
    ps = await swarm.leader_client.call("service.ps", service="appserver")
    same_slot = [t for t in ps if t["slot"] == tasks[0]["slot"]]
    assert [(t["current_state"], t["history"]) for t in same_slot] == [
        ("Assigned", False),
        ("Failed", True),
    ]
    assert same_slot[1]["error"] == "exit 1" and same_slot[1]["exit_code"] == 1
    # Workers may use only their two task operations, and no manager operation.
    with pytest.raises(ClusterError, match=r"node2 is a worker node and service\.ls needs"):
        await client.call("service.ls")


async def test_scale_and_rm_are_idempotent_by_request_id(swarm: Swarm) -> None:
    worker, client = await two_nodes(swarm)
    leader = swarm.leader_client
    await leader.call("service.create", **APPSERVER)
    rid = protocol.new_rid(lambda n: b"\x01" * n)
    first = await leader.call_with_rid(
        "service.scale", {"service": "appserver", "replicas": 5}, rid
    )
    assert first == {"id": first["id"], "name": "appserver", "replicas": 5}
    version = swarm.server.state.find_service("appserver").version
    # A retry under the same id changes nothing (the version would count a second update).
    again = await leader.call_with_rid(
        "service.scale", {"service": "appserver", "replicas": 5}, rid
    )
    assert again == first and swarm.server.state.find_service("appserver").version == version
    assert swarm.server.stats["duplicate_requests"] == 1
    assert len([t for t in swarm.server.state.tasks.values() if t.live]) == 5

    removed = await leader.call("service.rm", service="appserver")
    assert removed == {"id": first["id"], "name": "appserver"}
    assert await leader.call("service.ls") == []
    # Assigned tasks wait for their workers to stop them; until then the addresses and the
    # VIPs stay taken, and so does the network.
    state = swarm.server.state
    assert {t.desired for t in state.tasks.values()} == {TaskState.SHUTDOWN}
    with pytest.raises(ClusterError, match="have not stopped yet"):
        await leader.call("network.rm", network="atsea")
    clients = {swarm.init.node_id: leader, worker.node_id: client}
    for task in list(state.tasks.values()):
        assert task.node_id is not None
        await clients[task.node_id].call("task.report", task_id=task.id, state="shutdown")
    assert state.tasks == {} and state.allocations == {}
    await leader.call("network.rm", network="atsea")
    with pytest.raises(ClusterError, match="service appserver not found") as info:
        await leader.call("service.inspect", service="appserver")
    assert info.value.kind is ErrorKind.NOT_FOUND


WRONG: list[tuple[str, dict[str, Any]]] = [
    ("service.create", {"name": "s", "image": "x", "replicas": "2"}),
    ("service.create", {"name": "s", "image": "x", "replicas": True}),
    ("service.create", {"name": "s", "image": "x", "replicas": 2.0}),
    ("service.create", {"name": "s", "image": "x", "networks": "atsea"}),
    ("service.create", {"name": "s", "image": "x", "publish": [8080]}),
    ("service.create", {"name": "s", "image": "x", "publish": ["8080:80:1"]}),
    ("service.create", {"name": "s", "image": "x", "env": ["NOEQUALS"]}),
    ("service.create", {"name": "s", "image": "x", "command": "sleep 1"}),
    ("service.create", {"name": "s", "image": "x", "constraints": ["node.zone==a"]}),
    ("service.create", {"name": "s", "image": "x", "mode": "everywhere"}),
    ("service.create", {"name": "s", "image": "x", "endpoint_mode": "dns"}),
    ("service.create", {"name": "s", "image": "x", "restart_condition": "sometimes"}),
    ("service.create", {"name": "s", "image": "x", "restart_delay": "5s"}),
    ("service.create", {"name": "s", "image": "x", "restart_delay": False}),
    ("service.create", {"name": "s", "image": "x", "restart_max_attempts": 1.5}),
    ("service.create", {"name": "s", "image": "x", "replica": 2}),
    ("service.create", {"name": "s", "image": "x", "mode": "global", "replicas": 2}),
    ("service.create", {"name": "bad name", "image": "x"}),
    ("service.create", {"name": "s"}),
    ("service.scale", {"service": "web", "replicas": "3"}),
    ("service.scale", {"service": "web"}),
    ("service.scale", {"service": "web", "replicas": -1}),
    ("service.ps", {"service": ["web"]}),
    ("service.inspect", {"service": 1}),
    ("service.rm", {}),
    ("node.update", {"node": "node2", "label_add": ["zone=a"]}),
    ("node.update", {"node": "node2", "label_rm": "zone"}),
    ("node.update", {"node": "node2", "label_add": {"bad key": "a"}}),
    ("task.report", {"task_id": "t", "state": 3}),
    ("task.report", {"task_id": "t", "state": "running", "exit_code": "1"}),
]


@pytest.mark.parametrize(("op", "args"), WRONG, ids=[f"{o}-{a}" for o, a in WRONG])
async def test_a_wrong_argument_is_invalid_and_changes_nothing(
    swarm: Swarm, op: str, args: dict[str, Any]
) -> None:
    await two_nodes(swarm)
    await swarm.leader_client.call("service.create", name="web", image="nginx")
    before = _snapshot(swarm)
    with pytest.raises(ClusterError) as info:
        await swarm.leader_client.call(op, **args)
    assert info.value.kind is ErrorKind.INVALID, info.value.message
    assert _snapshot(swarm) == before


async def test_node_labels_steer_constrained_services(swarm: Swarm) -> None:
    await two_nodes(swarm)
    leader = swarm.leader_client
    await leader.call(
        "service.create", name="edge", image="x", constraints=["node.labels.zone==edge"]
    )
    (pending,) = await leader.call("service.ps", service="edge")
    assert pending["current_state"] == "Pending"
    assert pending["error"] == "no suitable node (scheduling constraints not satisfied on 2 nodes)"
    node = await leader.call("node.update", node="node2", label_add={"zone": "edge"})
    assert node["labels"] == {"zone": "edge"}
    (placed,) = await leader.call("service.ps", service="edge")
    assert (placed["node"], placed["current_state"], placed["error"]) == ("node2", "Assigned", "")
    node = await leader.call("node.update", node="node2", label_rm=["zone"])
    assert node["labels"] == {}


async def test_tasks_leave_a_node_that_goes_down(swarm: Swarm) -> None:
    worker, client = await two_nodes(swarm)
    await swarm.leader_client.call("service.create", **{**APPSERVER, "replicas": 2})
    (mine,) = (await client.call("task.assigned"))["tasks"]
    # Gossip says node2 is Down: the leader's next pass (kicked, as the agent does on a
    # membership change) moves the task to node1.
    swarm.status[worker.node_id] = "Down"
    swarm.server.kick()

    def moved() -> bool:
        live = [t for t in swarm.server.state.tasks.values() if t.live]
        return len(live) == 2 and all(t.node_id == swarm.init.node_id for t in live)

    await eventually(moved)
    # The old task is to be shut down; it keeps its address until node2 says it stopped.
    (still,) = (await client.call("task.assigned"))["tasks"]
    assert still["id"] == mine["id"] and still["desired_state"] == "shutdown"
    await client.call("task.report", task_id=mine["id"], state="shutdown")
    assert (await client.call("task.assigned"))["tasks"] == []


async def test_a_follower_forwards_service_create_and_answers_ps(
    swarm: Swarm, tmp_path: Path
) -> None:
    await swarm.leader_client.call("network.create", name="atsea")
    m2 = await swarm.join("node2", "10.9.0.2", Role.MANAGER)
    follower_port = free_port()
    upstream = ManagerClient([swarm.addr], m2.node_id, m2.credential, timeout=2.0)
    follower, follower_scope = await serve(
        swarm.nursery, ClusterStore(tmp_path / "follower.db"), follower_port, upstream=upstream
    )
    await follower.sync_once()
    via_follower = swarm.client(m2.node_id, m2.credential, [f"{HOST}:{follower_port}"])
    created = await via_follower.call("service.create", **APPSERVER)
    # It ran on the leader, once, with the leader's pass; the follower reads its own write.
    assert swarm.server.state.find_service("appserver").id == created["ID"]
    assert [r["replicas"] for r in await via_follower.call("service.ls")] == ["0/2"]
    ps = await via_follower.call("service.ps", service="appserver")
    assert len(ps) == 2 and all(t["current_state"] == "Assigned" for t in ps)
    # Followers never run passes of their own: their copy is the leader's, record for record.
    assert sorted(follower.state.records(), key=lambda c: (c.kind, c.key)) == sorted(
        swarm.server.state.records(), key=lambda c: (c.kind, c.key)
    )
    follower_scope.cancel()


async def test_a_restarted_leader_keeps_services_tasks_and_their_addresses(swarm: Swarm) -> None:
    _, client = await two_nodes(swarm)
    await swarm.leader_client.call("service.create", **APPSERVER)
    before = await client.call("task.assigned")
    rows = await swarm.leader_client.call("service.ps", service="appserver")
    await swarm.stop()
    await swarm.restart()
    # Same tasks, same addresses: the worker's list does not change under it.
    after = await client.call("task.assigned")
    assert after["tasks"] == before["tasks"] and after["services"] == before["services"]
    assert await swarm.leader_client.call("service.ps", service="appserver") == rows
