"""`node rm` revokes the removed node's gossip key (issue 18) on a real 3-host swarm: the
managers rotate the key in stages, no live member is suspected meanwhile, and the removed
host's old key no longer opens anyone's gossip."""

from __future__ import annotations

import json
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until

# Gossip declares a killed host Down after its suspicion timeout (a few seconds in the lab
# profile); a rotation takes three report periods plus two SETTLE waits (about 15 s).
DOWN_WITHIN = 60.0
ROTATION_WITHIN = 60.0


@pytest.fixture
def swarm_to_break() -> Iterator[Lab]:
    """A 3-host swarm of this test's own: it removes a node for good."""
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 3, swarm=True)
        yield Lab(name)
    finally:
        labmod.down(name)


def info(lab: Lab, host: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.ok(host, "info", "--format", "json"))
    return doc


def keys(lab: Lab, host: str) -> list[str]:
    fingerprints: list[str] = info(lab, host)["Gossip"]["KeyFingerprints"]
    return fingerprints


def members(lab: Lab, host: str) -> dict[str, tuple[str, int]]:
    """Gossip members as `host` sees them, by hostname: (state, incarnation)."""
    names = {row["addr"]: row for row in info(lab, host)["Gossip"]["Members"]}
    hosts = {"192.168.0.11": "node1", "192.168.0.12": "node2", "192.168.0.13": "node3"}
    return {hosts[a]: (str(m["state"]), int(m["incarnation"])) for a, m in names.items()}


def node3_down(lab: Lab) -> bool:
    rows = lab.ok("node1", "node", "ls").splitlines()
    return any("node3" in row and "Down" in row for row in rows)


def test_node_rm_rotates_the_gossip_key_and_the_removed_host_is_cut_off(
    swarm_to_break: Lab,
) -> None:
    lab = swarm_to_break
    hosts = ("node1", "node2", "node3")
    assert wait_until(lambda: all(keys(lab, h) == keys(lab, "node1") for h in hosts))
    (old,) = keys(lab, "node1")
    assert wait_until(
        lambda: (
            all(s == "alive" for s, _ in members(lab, "node1").values())
            and len(members(lab, "node1")) == 3
        )
    )
    before = {h: members(lab, h) for h in ("node1", "node2")}

    labmod.stop_agent(lab.name, "node3", signal.SIGKILL)
    assert wait_until(lambda: node3_down(lab), DOWN_WITHIN), lab.ok("node1", "node", "ls")
    lab.ok("node1", "node", "rm", "--force", "node3")

    # The rotation completes: both remaining hosts seal and open with one new key only.
    def rotated() -> bool:
        k1, k2 = keys(lab, "node1"), keys(lab, "node2")
        return k1 == k2 and len(k1) == 1 and k1 != [old]

    assert wait_until(rotated, ROTATION_WITHIN), (keys(lab, "node1"), keys(lab, "node2"))
    # Nobody was suspected meanwhile: a suspected member refutes with a higher incarnation.
    for host in ("node1", "node2"):
        seen = members(lab, host)
        for peer in ("node1", "node2"):
            assert seen[peer] == ("alive", before[host][peer][1]), (host, seen)
        counters = info(lab, host)["Gossip"]["Counters"]
        assert counters["dropped_unauthenticated"] == 0, counters

    # node3 comes back with its old key: its gossip is refused, it is not re-admitted.
    labmod.start_agent(lab.name, "node3")
    labmod.wait_for_agent(lab.name, "node3")
    assert keys(lab, "node3") == [old]
    assert wait_until(
        lambda: info(lab, "node1")["Gossip"]["Counters"]["dropped_unauthenticated"] > 0
    )
    for host in ("node1", "node2"):
        state = members(lab, host).get("node3", ("gone", 0))[0]
        assert state not in ("alive", "suspect"), (host, state)
    assert "node3" not in lab.ok("node1", "node", "ls")
