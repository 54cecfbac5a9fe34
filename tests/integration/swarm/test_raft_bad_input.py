"""Bad input on the Raft path (issue 14): a manager token rotated away is refused by the leader
and by a follower alike, and a node removed with `node rm` is refused by every manager, each
with one clear line. Three Raft managers and a worker in a real lab."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from overlaynet.paths import lab_dir
from tests.integration.labs import Lab, make_lab, wait_until
from tests.integration.swarm.test_raft_failover import REJOIN, leader_seen_by, raft_members

MANAGERS = {"node1": "192.168.0.11", "node2": "192.168.0.12", "node3": "192.168.0.13"}
RAFT3 = [f"{ip}:2378" for ip in MANAGERS.values()]

# Run in the worker's own namespace: one cluster request, with the worker's own credential
# (its swarm.json), to each manager given, each on its own; prints what each one answered.
ASK_EACH_MANAGER = """
import json, sys, trio
from overlaynet.cluster.client import JoinResult, ManagerClient
joined = JoinResult.from_doc(json.load(open(sys.argv[1]))["join"])
async def main() -> None:
    said = {}
    for addr in sys.argv[2:]:
        try:
            await ManagerClient([addr], joined.node_id, joined.credential).call("state.snapshot")
            said[addr] = "ok"
        except Exception as e:
            said[addr] = f"{type(e).__name__}: {e}"
    print(json.dumps(said))
trio.run(main)
"""


@pytest.fixture
def raft3_and_worker() -> Iterator[Lab]:
    """node1-3 Raft managers, node4 a worker."""
    for lab in make_lab(4, swarm=True):
        lab.ok("node1", "node", "promote", "node2", "node3")
        assert wait_until(functools.partial(raft_formed, lab), REJOIN)
        yield lab


def raft_formed(lab: Lab) -> bool:
    """Every manager sees the three members, and node3 sees a leader."""
    members = all(raft_members(lab, h) == RAFT3 for h in MANAGERS)
    return members and leader_seen_by(lab, "node3") is not None


def leader_and_follower(lab: Lab) -> tuple[str, str]:
    leader = leader_seen_by(lab, "node3")
    assert leader is not None
    follower = next(h for h in MANAGERS if h != leader)
    return leader, follower


def test_a_rotated_manager_token_is_refused_by_the_leader_and_a_follower(
    raft3_and_worker: Lab,
) -> None:
    lab = raft3_and_worker
    leader, follower = leader_and_follower(lab)
    old = lab.ok("node1", "swarm", "join-token", "-q", "manager").strip()
    # Rotated through a follower (forwarded to the leader, committed through Raft).
    # On a loaded shared machine a commit can miss its 1.5 s bound (the quorum line): again.
    rotate = ("swarm", "join-token", "--rotate", "manager")
    assert wait_until(lambda: lab.cli(follower, *rotate).returncode == 0, REJOIN)
    new = lab.ok(leader, "swarm", "join-token", "-q", "manager").strip()
    assert new != old
    assert wait_until(
        lambda: lab.ok(follower, "swarm", "join-token", "-q", "manager").strip() == new, REJOIN
    )
    lab.ok("node4", "swarm", "leave")
    for manager in (leader, follower):
        out = lab.cli("node4", "swarm", "join", "--token", old, f"{MANAGERS[manager]}:2377")
        assert out.returncode == 1, (manager, out.stdout)
        assert "token" in out.stderr, (manager, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert " node4 " not in lab.ok(leader, "node", "ls")
    # The new token works, through the follower: node4 becomes the fourth Raft member.
    lab.ok("node4", "swarm", "join", "--token", new, f"{MANAGERS[follower]}:2377")
    assert wait_until(lambda: len(raft_members(lab, leader)) == 4, REJOIN)


def ask_each_manager(lab: Lab, host: str) -> dict[str, str]:
    swarm_json = lab_dir(lab.name) / host / "swarm.json"
    addrs = [f"{ip}:2377" for ip in MANAGERS.values()]
    argv = ["ip", "netns", "exec", lab.netns_of(host), sys.executable, "-c", ASK_EACH_MANAGER]
    out = subprocess.run(
        [*argv, str(swarm_json), *addrs], capture_output=True, text=True, timeout=60, check=True
    )
    said: dict[str, str] = json.loads(out.stdout)
    return {host: said[f"{ip}:2377"] for host, ip in MANAGERS.items()}


def test_a_removed_node_is_refused_by_every_manager(raft3_and_worker: Lab) -> None:
    lab = raft3_and_worker
    leader, follower = leader_and_follower(lab)
    # Before: its credential opens every manager's door, the leader's and the followers'.
    assert ask_each_manager(lab, "node4") == dict.fromkeys(MANAGERS, "ok")
    lab.ok(follower, "node", "rm", "--force", "node4")
    assert " node4 " not in lab.ok(leader, "node", "ls")

    def refused_everywhere() -> bool:
        said = ask_each_manager(lab, "node4")
        return all("is not a member of this swarm" in s for s in said.values())

    assert wait_until(refused_everywhere, REJOIN), ask_each_manager(lab, "node4")
    # What its user sees: one clear line, and the managers count the refusals.
    out = lab.cli("node4", "node", "ls")
    assert out.returncode != 0 and "is not a member of this swarm" in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    for manager in (leader, follower):
        info = json.loads(lab.ok(manager, "info", "--format", "json"))
        assert info["Cluster"]["Rejections"]["unknown_node"] >= 1, (manager, info["Cluster"])
