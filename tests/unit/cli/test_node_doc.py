"""`node inspect` in docker's shape, from the manager's node view (cli/node_doc.py)."""

from __future__ import annotations

from overlaynet.cli.gotemplate import render
from overlaynet.cli.node_doc import docker_node

LEADER = {
    "id": "abc",
    "hostname": "node1",
    "addr": "192.168.0.11",
    "role": "manager",
    "availability": "active",
    "manager_status": "Leader",
    "manager_addr": "192.168.0.11:2377",
    "created": 0.5,
    "updated": 1.0,
    "labels": {"zone": "a"},
    "status": "Ready",
    "self": True,
    "raft": {"term": 3, "members": ["192.168.0.11:2378"]},
}
WORKER_DOWN = {**LEADER, "id": "w", "role": "worker", "manager_status": "", "status": "Down"}


def test_a_leader_in_dockers_keys_with_its_raft_beside() -> None:
    doc = docker_node(LEADER)
    assert doc["ID"] == "abc" and doc["CreatedAt"] == "1970-01-01T00:00:00.500000Z"
    assert doc["Spec"] == {"Labels": {"zone": "a"}, "Role": "manager", "Availability": "active"}
    assert doc["Description"]["Hostname"] == "node1"
    assert doc["Status"] == {"State": "ready", "Addr": "192.168.0.11"}
    assert doc["ManagerStatus"] == {
        "Leader": True,
        "Reachability": "reachable",
        "Addr": "192.168.0.11:2377",
    }
    assert doc["raft"]["term"] == 3


def test_a_down_worker_has_no_manager_status() -> None:
    doc = docker_node(WORKER_DOWN)
    assert doc["Status"]["State"] == "down" and "ManagerStatus" not in doc


def test_dockers_templates_read_it() -> None:
    assert render("{{.Status.Addr}} {{.Spec.Role}}", docker_node(LEADER)) == "192.168.0.11 manager"
    assert render("{{.ManagerStatus.Leader}}", docker_node(LEADER)) == "true"
