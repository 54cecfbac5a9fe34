"""docker's `info` and `node inspect --pretty` text from the agent's answers (cli/info_text.py)."""

from __future__ import annotations

import json
from typing import Any

from overlaynet.cli.gotemplate import render as render_format
from overlaynet.cli.info_text import _render, info_doc, info_text, node_pretty

AGENT: dict[str, Any] = {
    "Name": "node1",
    "Lab": "default",
    "Pid": 42,
    "StateDir": "/var/lib/overlaynet/node1",
    "Counters": {"x": 1},
    "Swarm": {
        "NodeID": "n1",
        "ClusterID": "c1",
        "Role": "manager",
        "Managers": ["192.168.0.11:2377"],
        "AdvertiseAddr": "192.168.0.11",
    },
}
ROWS = [{"state": "running"}, {"state": "exited"}, {"state": "created"}, {"state": "paused"}]
NODES = [{"role": "manager"}, {"role": "worker"}, {"role": "worker"}]


def test_info_counts_containers_by_state_and_keeps_the_agents_keys() -> None:
    doc = info_doc(AGENT, ROWS, 7, "0.1.0", NODES)
    assert (doc["Containers"], doc["ContainersRunning"]) == (4, 1)
    assert (doc["ContainersPaused"], doc["ContainersStopped"]) == (1, 2)
    assert doc["Images"] == 7 and doc["ServerVersion"] == "0.1.0"
    assert doc["Pid"] == 42 and doc["Counters"] == {"x": 1}
    sw = doc["Swarm"]
    assert sw["LocalNodeState"] == "active" and sw["ControlAvailable"] is True
    assert (sw["Managers"], sw["Nodes"], sw["NodeAddr"]) == (1, 3, "192.168.0.11")


def test_info_text_has_dockers_lines_for_a_manager() -> None:
    text = info_text(info_doc(AGENT, ROWS, 7, "0.1.0", NODES), "0.1.0", "node1")
    lines = text.splitlines()
    for line in (
        "Server:",
        " Containers: 4",
        "  Running: 1",
        "  Paused: 1",
        "  Stopped: 2",
        " Images: 7",
        " Server Version: 0.1.0",
        " Swarm: active",
        "  NodeID: n1",
        "  Is Manager: true",
        "  ClusterID: c1",
        "  Managers: 1",
        "  Nodes: 3",
        "  Node Address: 192.168.0.11",
        "   192.168.0.11:2377",
        " Name: node1",
    ):
        assert line in lines, line
    assert (
        lines.index(" Containers: 4") < lines.index("  Running: 1") < lines.index(" Swarm: active")
    )


def test_info_text_for_a_worker_and_outside_a_swarm() -> None:
    worker = {**AGENT, "Swarm": {**AGENT["Swarm"], "Role": "worker"}}
    lines = info_text(info_doc(worker, [], 0, "v", None), "v", "node2").splitlines()
    assert "  Is Manager: false" in lines and not any("Nodes:" in x for x in lines)
    alone = {**AGENT, "Swarm": None}
    lines = info_text(info_doc(alone, [], 0, "v", None), "v", "node1").splitlines()
    assert " Swarm: inactive" in lines and not any("NodeID" in x for x in lines)


def test_info_id_is_the_engines_in_and_out_of_a_swarm() -> None:
    # It was the swarm node's ID, so outside a swarm the line read ' ID: ' with nothing.
    engine = {**AGENT, "ID": "2b6c1f0e-6d3a-4a53-9a0e-5f1d2c3b4a59"}
    for swarm in (AGENT["Swarm"], None):
        agent = {**engine, "Swarm": swarm}
        lines = info_text(info_doc(agent, [], 0, "v", None), "v", "node1").splitlines()
        assert " ID: 2b6c1f0e-6d3a-4a53-9a0e-5f1d2c3b4a59" in lines
    old_agent = {**AGENT, "Swarm": None}
    lines = info_text(info_doc(old_agent, [], 0, "v", None), "v", "node1").splitlines()
    assert not any(x.startswith(" ID:") for x in lines)


NODE = {
    "id": "abc",
    "hostname": "node1",
    "addr": "192.168.0.11",
    "role": "manager",
    "availability": "active",
    "manager_status": "Leader",
    "manager_addr": "192.168.0.11:2377",
    "created": 1_795_980_600.5,
    "status": "Ready",
    "self": True,
    "labels": {"zone": "a"},
}


def test_node_pretty_is_dockers_layout() -> None:
    lines = node_pretty(NODE, "0.1.0").splitlines()
    assert lines[0] == "ID:                     abc *"
    assert "Hostname:               node1" in lines
    assert "Joined at:              2026-11-29 19:30:00.5 +0000 utc" in lines
    status = lines.index("Status:")
    assert lines[status + 1 : status + 4] == [
        " State:                 Ready",
        " Availability:          Active",
        " Address:               192.168.0.11",
    ]
    manager = lines.index("Manager Status:")
    assert lines[manager + 1 : manager + 4] == [
        " Address:               192.168.0.11:2377",
        " Raft Status:           Reachable",
        " Leader:                Yes",
    ]
    assert " - zone=a" in lines and lines[-1] == "Engine Version:         0.1.0"


def test_node_pretty_of_a_worker_has_no_manager_status() -> None:
    worker = {**NODE, "manager_status": "", "self": False, "labels": {}}
    text = node_pretty(worker, "v")
    assert "Manager Status:" not in text and "Labels:" not in text
    assert text.splitlines()[0] == "ID:                     abc"


def test_info_templates_read_the_swarm_counts_in_any_state() -> None:
    # The README's `info -f '{{.Swarm.LocalNodeState}} {{.Swarm.Nodes}}'`: docker prints
    # "inactive 0" outside a swarm (and 0 on a worker); it was a template error.
    template = "{{.Swarm.LocalNodeState}} {{.Swarm.Nodes}}"
    alone = info_doc({**AGENT, "Swarm": None}, [], 0, "v", None)
    assert render_format(template, alone) == "inactive 0"
    worker = info_doc({**AGENT, "Swarm": {**AGENT["Swarm"], "Role": "worker"}}, [], 0, "v", None)
    assert render_format(template, worker) == "active 0"
    assert render_format(template, info_doc(AGENT, [], 0, "v", NODES)) == "active 3"


def test_a_manager_without_quorum_reads_zero_nodes_as_docker() -> None:
    # node.ls failed (no quorum): Nodes was left out, so `info -f '{{.Swarm.Nodes}}'` said
    # "can't evaluate field Nodes"; docker leaves both counts at 0 and prints them.
    doc = info_doc(AGENT, [], 0, "v", None)
    assert render_format("{{.Swarm.Nodes}} {{.Swarm.Managers}}", doc) == "0 0"
    lines = info_text(doc, "v", "node1").splitlines()
    assert "  Managers: 0" in lines and "  Nodes: 0" in lines


def test_a_workers_counts_are_zero_and_remote_managers_print_as_a_list() -> None:
    # A worker's Managers was the number of managers it knew while its Nodes was 0; docker
    # fills both on an active manager only. Outside a swarm {{.Swarm.RemoteManagers}} printed
    # <nil> where docker prints [] (a nil []Peer); the JSON document keeps null.
    worker = info_doc({**AGENT, "Swarm": {**AGENT["Swarm"], "Role": "worker"}}, [], 0, "v", None)
    assert (worker["Swarm"]["Managers"], worker["Swarm"]["Nodes"]) == (0, 0)
    alone = info_doc({**AGENT, "Swarm": None}, [], 0, "v", None)
    assert _render("{{.Swarm.RemoteManagers}}", alone) == "[]"
    assert json.loads(_render("json", alone))["Swarm"]["RemoteManagers"] is None
    assert _render("{{len .Swarm.RemoteManagers}}", worker) == "1"
