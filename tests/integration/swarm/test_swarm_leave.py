"""`swarm leave` refuses while containers here are on swarm networks, as Docker does; `--force`
disconnects them first (issue 18: the managers freed their addresses while the containers kept
them, and the next container got the same IP and MAC)."""

from __future__ import annotations

import json
import subprocess

from tests.integration.labs import Lab


def test_leave_refuses_with_overlay_endpoints_and_force_removes_them(lab2: Lab) -> None:
    lab2.ok("node1", "swarm", "init", "--advertise-addr", "eth0")
    token = lab2.ok("node1", "swarm", "join-token", "-q", "worker").strip()
    lab2.ok("node2", "swarm", "join", "--token", token, "192.168.0.11:2377")
    try:
        lab2.ok("node1", "network", "create", "-d", "overlay", "--attachable", "lv")
        lab2.ok("node2", "run", "-d", "--name", "held", "--network", "lv", "alpine")

        out = lab2.cli("node2", "swarm", "leave")
        assert out.returncode == 1, out.stdout
        assert "held" in out.stderr and "--force" in out.stderr, out.stderr
        doc = json.loads(lab2.ok("node2", "inspect", "held"))[0]
        assert "lv" in doc["NetworkSettings"]["Networks"]  # refused: nothing changed

        assert lab2.ok("node2", "swarm", "leave", "--force") == "Node left the swarm.\n"
        doc = json.loads(lab2.ok("node2", "inspect", "held"))[0]
        assert "lv" not in doc["NetworkSettings"]["Networks"]
        assert "lv" not in lab2.ok("node2", "network", "ls")
        links = subprocess.run(
            ["ip", "netns", "exec", lab2.netns_of("node2"), "ip", "-o", "link"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "on-tap-" not in links  # the overlay left this host with its last endpoint
    finally:
        lab2.cli("node2", "rm", "-f", "held")
        lab2.cli("node2", "swarm", "leave", "--force")
        lab2.cli("node1", "swarm", "leave", "--force")
