"""`swarm init --force-new-cluster` (issue 14): a manager that lost its quorum for good keeps the
swarm's state, leads a Raft cluster of one, and takes new managers again."""

from __future__ import annotations

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until
from tests.integration.swarm.test_raft_failover import (
    FAILOVER,
    REJOIN,
    kill_agent,
    managers3,
    node_row,
    raft_members,
)

__all__ = ["managers3"]  # the fixture, shared with test_raft_failover.py

NODE1_RAFT = "192.168.0.11:2378"
NODE2_RAFT = "192.168.0.12:2378"


def writes(lab: Lab, host: str, net: str) -> bool:
    return lab.cli(host, "network", "create", "-d", "overlay", "--attachable", net).returncode == 0


def test_force_new_cluster_recovers_a_lost_quorum_with_the_state_kept(managers3: Lab) -> None:
    lab = managers3
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "keptnet")
    lab.ok(
        "node1", "service", "create", "--name", "keptsvc", "--replicas", "1", "--detach",
        "alpine", "sleep", "1000",
    )  # fmt: skip
    for host in ("node2", "node3"):
        kill_agent(lab, host)
    lost = lab.cli("node1", "network", "create", "-d", "overlay", "duringloss")
    assert lost.returncode != 0 and "no quorum: 1 of 3" in lost.stderr

    out = lab.ok("node1", "swarm", "init", "--force-new-cluster")
    assert "Swarm initialized" in out
    # A cluster of one: writes commit again, and every earlier record is still there.
    assert wait_until(lambda: writes(lab, "node1", "afterforce"), FAILOVER)
    nets = lab.ok("node1", "network", "ls")
    assert "keptnet" in nets and "afterforce" in nets and "duringloss" not in nets
    assert "keptsvc" in lab.ok("node1", "service", "ls")
    assert raft_members(lab, "node1") == [NODE1_RAFT]
    # The dead managers are listed, Down, no longer managers, and can be removed.
    assert wait_until(
        lambda: all("Down" in node_row(lab, "node1", h) for h in ("node2", "node3")), REJOIN
    ), lab.ok("node1", "node", "ls")
    assert "Leader" not in node_row(lab, "node1", "node2")
    assert "Reachable" not in node_row(lab, "node1", "node2")
    lab.ok("node1", "node", "rm", "--force", "node2")
    assert " node2 " not in lab.ok("node1", "node", "ls")

    # node2 comes back with its old journal (the old Raft password): it is not let in, and
    # leaves; joined again with the manager token it becomes a member of the new cluster.
    labmod.start_agent(lab.name, "node2")
    labmod.wait_for_agent(lab.name, "node2")
    lab.ok("node2", "swarm", "leave", "--force")
    token = lab.ok("node1", "swarm", "join-token", "-q", "manager").strip()
    lab.ok("node2", "swarm", "join", "--token", token, "192.168.0.11:2377")
    assert wait_until(lambda: raft_members(lab, "node1") == [NODE1_RAFT, NODE2_RAFT], REJOIN)
    assert wait_until(lambda: "afterforce" in lab.cli("node2", "network", "ls").stdout, REJOIN)
    assert wait_until(lambda: writes(lab, "node2", "withnode2"), FAILOVER)
    assert "withnode2" in lab.ok("node1", "network", "ls")
    assert "keptsvc" in lab.ok("node2", "service", "ls")
