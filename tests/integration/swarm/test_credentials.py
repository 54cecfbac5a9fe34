"""Node credentials on a real 3-host swarm (issue 18): `node ca` lists each node's credential
(fingerprint, role, issued, active or revoked), and `node ca revoke NODE` keeps the node listed
while every manager refuses its frames, counted as `unknown_node` and `revoked_frames`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.labs import Lab, make_lab, wait_until

# A worker asks the managers for its tasks every poll period (about a second); a few periods.
POLLS_WITHIN = 15.0
# A gossip key rotation takes three report periods plus two settle waits (about 15 s), then
# gossip declares the cut-off node dead after its suspicion timeout (a few seconds).
ROTATION_WITHIN = 60.0


@pytest.fixture
def swarm_to_revoke() -> Iterator[Lab]:
    """A swarm of the test's own: a revoked node3 cannot be given back to other tests."""
    yield from make_lab(3, swarm=True)


def credentials(lab: Lab) -> dict[str, dict[str, Any]]:
    rows = json.loads(lab.ok("node1", "node", "ca", "--format", "json"))
    return {r["hostname"]: r for r in rows}


def info(lab: Lab, host: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.ok(host, "info", "--format", "json"))
    return doc


def keys(lab: Lab, host: str) -> list[str]:
    fingerprints: list[str] = info(lab, host)["Gossip"]["KeyFingerprints"]
    return fingerprints


def revoked_count(lab: Lab) -> int:
    info = json.loads(lab.ok("node1", "info", "--format", "json"))
    assert info["Cluster"]["Rejections"]["unknown_node"] >= info["Cluster"]["Counters"].get(
        "revoked_frames", 0
    )
    return int(info["Cluster"]["Counters"].get("revoked_frames", 0))


def test_node_ca_lists_every_node_credential(swarm_to_revoke: Lab) -> None:
    lab = swarm_to_revoke
    creds = credentials(lab)
    assert sorted(creds) == ["node1", "node2", "node3"]
    assert creds["node1"]["role"] == "manager" and creds["node2"]["role"] == "worker"
    assert all(c["status"] == "active" and c["revoked"] is None for c in creds.values())
    assert all(re.fullmatch("[0-9a-f]{64}", c["fingerprint"]) for c in creds.values())
    assert len({c["fingerprint"] for c in creds.values()}) == 3
    assert all(isinstance(c["issued"], float) for c in creds.values())
    table = lab.ok("node1", "node", "ca")
    assert table.splitlines()[0].split() == [
        "ID",
        "HOSTNAME",
        "ROLE",
        "FINGERPRINT",
        "ISSUED",
        "STATUS",
    ]
    assert creds["node3"]["fingerprint"][:16] in table


def test_a_revoked_node_stays_listed_and_the_managers_refuse_it(swarm_to_revoke: Lab) -> None:
    lab = swarm_to_revoke
    lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", "credsnet")
    lab.ok("node3", "run", "-d", "--name", "before", "--network", "credsnet", "alpine", "top")
    fingerprint = credentials(lab)["node3"]["fingerprint"]
    assert wait_until(lambda: all(keys(lab, h) == keys(lab, "node1") for h in ("node2", "node3")))
    (old_key,) = keys(lab, "node1")
    assert revoked_count(lab) == 0

    assert lab.ok("node1", "node", "ca", "revoke", "node3").strip() == "node3"

    node3 = credentials(lab)["node3"]
    assert node3["status"] == "revoked" and node3["revoked"] >= node3["issued"]
    assert node3["fingerprint"] == fingerprint
    assert "node3" in lab.ok("node1", "node", "ls")
    assert "revoked" in lab.ok("node1", "node", "ca").splitlines()[-1]
    # The leader and managers cannot be revoked (nothing would be left to refuse them).
    out = lab.cli("node1", "node", "ca", "revoke", "node1")
    assert out.returncode != 0 and "leader" in out.stderr
    # A revoked node's own requests get a clear error, whatever they ask.
    for argv in (
        ("network", "create", "-d", "overlay", "--attachable", "other"),
        ("run", "-d", "--name", "after", "--network", "credsnet", "alpine", "top"),
        ("node", "ls"),
    ):
        out = lab.cli("node3", *argv)
        assert out.returncode != 0, argv
        assert "revoked" in out.stderr, (argv, out.stderr)
    # Its task polls are refused too, with nobody typing anything on node3.
    seen = revoked_count(lab)
    assert seen >= 3
    assert wait_until(lambda: revoked_count(lab) > seen + 1, POLLS_WITHIN)
    # The other worker is untouched, and node3's running container keeps its address (the
    # invariant after this test checks nobody else was given it).
    lab.ok("node2", "run", "-d", "--name", "n2", "--network", "credsnet", "alpine", "top")
    fmt = "{{.NetworkSettings.Networks.credsnet.IPAddress}}"
    assert lab.ok("node3", "inspect", "-f", fmt, "before").strip().startswith("10.0.")

    # Its gossip key is revoked too: node1 and node2 end with one new key, and node3, still
    # sealing with the old one, is cut off and goes Down (it stays listed).
    def rotated() -> bool:
        k1, k2 = keys(lab, "node1"), keys(lab, "node2")
        return k1 == k2 and len(k1) == 1 and k1 != [old_key]

    assert wait_until(rotated, ROTATION_WITHIN), (keys(lab, "node1"), keys(lab, "node2"))
    assert keys(lab, "node3") == [old_key]

    def node3_down() -> bool:
        rows = lab.ok("node1", "node", "ls").splitlines()
        return any(" node3 " in row and "Down" in row for row in rows)

    assert wait_until(node3_down, ROTATION_WITHIN), lab.ok("node1", "node", "ls")
