"""A worker's kept-open connections to its managers across a Raft leader change (issue 15): the
worker's connection to the killed leader is dead, its next write (an address for a container on
a swarm network) goes to a surviving manager and reaches the new leader."""

from __future__ import annotations

import functools
from collections.abc import Iterator

import pytest

from overlaynet import api
from overlaynet.paths import HostPaths
from tests.integration.labs import Lab, make_lab, wait_until

from .test_raft_failover import FAILOVER, REJOIN, kill_agent, leader_seen_by, manager_statuses

MANAGERS = ("node1", "node2", "node3")
WORKER = "node4"


def worker_managers(lab: Lab) -> list[str]:
    info = api.Client(HostPaths(WORKER, lab.name).socket).call("info")
    return list(info.get("Swarm", {}).get("Managers", []))


def worker_knows_managers(lab: Lab, count: int) -> bool:
    return len(worker_managers(lab)) == count


@pytest.fixture
def managers3_and_a_worker() -> Iterator[Lab]:
    for lab in make_lab(4, swarm=True):
        lab.ok("node1", "node", "promote", "node2", "node3")
        three = functools.partial(managers_see_one_leader, lab)
        assert wait_until(three, REJOIN), {h: manager_statuses(lab, h) for h in MANAGERS}
        # The worker learns the managers from its periodic snapshot.
        knows_three = functools.partial(worker_knows_managers, lab, 3)
        assert wait_until(knows_three, REJOIN), worker_managers(lab)
        yield lab


def managers_see_one_leader(lab: Lab) -> bool:
    """Every manager lists one Leader and two Reachable managers (and the worker, no status)."""
    for host in MANAGERS:
        statuses = manager_statuses(lab, host)
        if sorted(s for s in statuses.values() if s) != ["Leader", "Reachable", "Reachable"]:
            return False
    return True


def test_a_worker_s_writes_reach_the_new_leader_after_the_old_one_is_killed(
    managers3_and_a_worker: Lab,
) -> None:
    lab = managers3_and_a_worker
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "wconn")
    # A write from the worker (its container's address) on its open connections.
    lab.ok(WORKER, "run", "-d", "--name", "before", "--network", "wconn", "alpine", "top")
    old = leader_seen_by(lab, "node1")
    assert old is not None
    kill_agent(lab, old)
    others = [h for h in MANAGERS if h != old]
    assert wait_until(
        lambda: all(leader_seen_by(lab, h) not in (None, old) for h in others), FAILOVER
    ), {h: manager_statuses(lab, h) for h in others}
    # The worker's connection to the old leader is dead; the write goes to a survivor, which
    # forwards it to the new leader, under the same request id whatever it meets on the way.
    lab.ok(WORKER, "run", "-d", "--name", "after", "--network", "wconn", "alpine", "top")
    running = lab.ok(WORKER, "ps")
    assert "before" in running and "after" in running
