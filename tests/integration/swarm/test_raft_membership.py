"""Raft membership follows the swarm's managers (issue 14): `swarm join --token <manager token>`
adds a member, `node demote` removes it, and `node inspect` shows Raft's term, commit index,
leader and members."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, make_lab, wait_until

CONVERGE = 30.0


@pytest.fixture
def lab3() -> Iterator[Lab]:
    yield from make_lab(3)


def raft_of(lab: Lab, host: str, node: str) -> dict[str, Any]:
    out = lab.cli(host, "node", "inspect", node)
    if out.returncode != 0:
        return {}
    doc: dict[str, Any] = json.loads(out.stdout)[0].get("raft", {})
    return doc


def members_are(lab: Lab, host: str, members: list[str]) -> bool:
    return raft_of(lab, host, host).get("members") == members


def lists_network(lab: Lab, host: str, name: str) -> bool:
    return name in lab.ok(host, "network", "ls")


def test_managers_joining_by_token_become_raft_members_and_demote_removes_one(lab3: Lab) -> None:
    lab = lab3
    lab.ok("node1", "swarm", "init", "--advertise-addr", "eth0")
    token = lab.ok("node1", "swarm", "join-token", "-q", "manager").strip()
    for host in ("node2", "node3"):
        assert "as a manager" in lab.ok(
            host, "swarm", "join", "--token", token, "192.168.0.11:2377"
        )
    everyone = ["192.168.0.11:2378", "192.168.0.12:2378", "192.168.0.13:2378"]
    for host in ("node1", "node2", "node3"):
        assert wait_until(partial(members_are, lab, host, everyone), CONVERGE)
    raft = raft_of(lab, "node3", "node3")
    assert raft["leader"] == "192.168.0.11:2378" and raft["term"] >= 1
    assert raft["commit_index"] >= 1
    # A write made on one manager is on every manager's copy (the Raft log, not a copy loop).
    lab.ok("node3", "network", "create", "-d", "overlay", "--attachable", "everywhere")
    for host in ("node1", "node2"):
        assert wait_until(partial(lists_network, lab, host, "everywhere"), CONVERGE)

    lab.ok("node1", "node", "demote", "node3")
    assert wait_until(partial(members_are, lab, "node1", everyone[:2]), CONVERGE)
    assert wait_until(lambda: "worker" in lab.cli("node3", "node", "ls").stderr, CONVERGE)
    rows = lab.ok("node1", "node", "ls")
    node3 = next(line for line in rows.splitlines() if " node3 " in line)
    assert "Reachable" not in node3 and "Leader" not in node3


def counters(lab: Lab, host: str) -> dict[str, int]:
    doc: dict[str, Any] = json.loads(lab.ok(host, "info", "-f", "json"))
    found: dict[str, int] = (doc.get("Cluster") or {}).get("Counters", {})
    return found


def test_a_promoted_manager_that_is_not_up_yet_does_not_cost_the_quorum(lab3: Lab) -> None:
    lab = lab3
    lab.ok("node1", "swarm", "init", "--advertise-addr", "eth0")
    token = lab.ok("node1", "swarm", "join-token", "-q", "worker").strip()
    lab.ok("node2", "swarm", "join", "--token", token, "192.168.0.11:2377")
    labmod.stop_agent(lab.name, "node2", signal.SIGKILL)
    lab.ok("node1", "node", "promote", "node2")
    # The leader has looked at the new member and left it out while it cannot vote...
    assert wait_until(lambda: counters(lab, "node1").get("raft_member_add_waiting", 0) > 0)
    assert raft_of(lab, "node1", "node1")["members"] == ["192.168.0.11:2378"]
    # ...so writes still commit with node1 alone (1 of 1, not 1 of 2).
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "stillwrites")
    # Once node2's agent runs and sees its promotion, it becomes a member.
    labmod.up(lab.name, 3)
    both = ["192.168.0.11:2378", "192.168.0.12:2378"]
    assert wait_until(partial(members_are, lab, "node1", both), CONVERGE)
    assert wait_until(partial(lists_network, lab, "node2", "stillwrites"), CONVERGE)
