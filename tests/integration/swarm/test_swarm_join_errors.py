"""Joining goes wrong in clear ways: wrong token, malformed token, wrong address."""

from __future__ import annotations

import json

from tests.integration.labs import Lab


def test_bad_joins_get_clear_errors(lab2: Lab) -> None:
    init = lab2.ok("node1", "swarm", "init", "--advertise-addr", "eth0")
    assert "Swarm initialized: current node (" in init
    token = lab2.ok("node1", "swarm", "join-token", "-q", "worker").strip()
    wrong = token[:-25] + "0" * 25
    for args, says in (
        (("--token", "SWMTKN-1-nonsense", "192.168.0.11:2377"), "token"),
        (("--token", wrong, "192.168.0.11:2377"), "token"),
        (("--token", token, "192.168.0.99:2377"), "192.168.0.99"),
        (("--token", token, "192.168.0.11:1"), "192.168.0.11"),
    ):
        out = lab2.cli("node2", "swarm", "join", *args, timeout=60)
        assert out.returncode == 1, out.stdout
        assert says in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    out = lab2.cli("node1", "swarm", "init")
    assert out.returncode == 1 and "already part of a swarm" in out.stderr
    lab2.ok("node2", "swarm", "join", "--token", token, "192.168.0.11:2377")
    assert lab2.ok("node2", "swarm", "leave") == "Node left the swarm.\n"
    out = lab2.cli("node1", "swarm", "leave")
    assert out.returncode == 1 and "--force" in out.stderr
    lab2.ok("node1", "swarm", "leave", "--force")


def test_init_spells_out_the_join_for_each_lab_host_and_rotation_retires_a_token(
    lab2: Lab,
) -> None:
    init = lab2.ok("node1", "swarm", "init", "--advertise-addr", "eth0")
    pasted = [line.strip() for line in init.splitlines() if "-H node2 swarm join" in line]
    assert len(pasted) == 1, init
    old = lab2.ok("node1", "swarm", "join-token", "-q", "worker").strip()
    assert f"--token {old} 192.168.0.11:2377" in pasted[0]

    rotated = lab2.ok("node1", "swarm", "join-token", "--rotate", "worker")
    assert rotated.startswith("Successfully rotated worker join token.")
    new = lab2.ok("node1", "swarm", "join-token", "-q", "worker").strip()
    assert new != old
    out = lab2.cli("node2", "swarm", "join", "--token", old, "192.168.0.11:2377")
    assert out.returncode == 1 and "token" in out.stderr, out.stderr
    lab2.ok("node2", "swarm", "join", "--token", new, "192.168.0.11:2377")

    # The refusal is visible in the manager's counters; the embedded DNS has its own.
    info = json.loads(lab2.ok("node1", "info", "--format", "json"))
    assert info["Cluster"]["Rejections"]["bad_token"] >= 1, info["Cluster"]
    assert isinstance(info["Dns"], dict)
    lab2.ok("node2", "swarm", "leave")
    lab2.ok("node1", "swarm", "leave", "--force")
