"""A node's availability (`node update --availability drain`), which `node ls` shows, in the
web view: the page said `node2 Ready · worker` for a drained node2. A manager's agent is asked
`node.ls` (a worker cannot list nodes) and each host record carries its AVAILABILITY. Sans-IO:
answers from a table, the view from reports."""

from __future__ import annotations

import dataclasses
from typing import Any

from overlaynet.errors import ApiError
from overlaynet.lab import LabHost
from overlaynet.web import agents
from overlaynet.web.model import build_view
from tests.unit.web.reports import NODE_IDS, report

HOST = LabHost("node1", "192.168.0.11")
NODE_ROWS = [
    {"id": "id1aaaaaaaaaa", "hostname": "node1", "availability": "active"},
    {"id": "id2bbbbbbbbbb", "hostname": "node2", "availability": "drain"},
]


def answers(control: bool, node_ls: Any = NODE_ROWS) -> dict[str, Any]:
    # The agent's own info document (not the CLI's docker text): Swarm.Role.
    role = "manager" if control else "worker"
    return {
        "info": {"Swarm": {"NodeID": "n1", "Role": role}},
        "network.ls": [],
        "container.ls": [],
        "node.ls": node_ls,
    }


def agent(table: dict[str, Any]) -> tuple[list[str], Any]:
    calls: list[str] = []

    async def ask(op: str, **args: Any) -> Any:
        calls.append(op)
        answer = table[op]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return calls, ask


async def test_a_manager_is_asked_for_the_nodes_and_a_worker_is_not() -> None:
    calls, ask = agent(answers(control=True))
    rep = await agents.ask_host(HOST, ask)
    assert "node.ls" in calls and list(rep.nodes) == NODE_ROWS
    calls, ask = agent(answers(control=False))
    rep = await agents.ask_host(HOST, ask)
    assert "node.ls" not in calls and list(rep.nodes) == []


async def test_a_manager_that_refuses_node_ls_still_answers() -> None:
    _, ask = agent(answers(control=True, node_ls=ApiError("not the leader")))
    rep = await agents.ask_host(HOST, ask)
    assert rep.answered and list(rep.nodes) == []


def with_node(rep: Any, host: str, nodes: list[dict[str, Any]] | None = None) -> Any:
    info = {**rep.info, "Swarm": {**(rep.info.get("Swarm") or {}), "NodeID": NODE_IDS[host]}}
    return dataclasses.replace(rep, info=info, nodes=nodes or [])


def test_each_host_carries_the_availability_a_manager_lists() -> None:
    reports = [
        with_node(report("node1"), "node1", NODE_ROWS),
        with_node(report("node2"), "node2"),
        with_node(report("node3"), "node3"),
    ]
    view = build_view("lab", reports, {})
    assert view["host/node1"]["availability"] == "active"
    assert view["host/node2"]["availability"] == "drain"
    assert view["host/node3"]["availability"] == ""  # not listed: unknown, not a guess
