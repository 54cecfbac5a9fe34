"""Issue 12's leftovers through the CLI on a real lab: run --hostname, logs --tail/-f, events,
prune, info's text and node inspect --pretty, run -t and SIGTERM of a foreground run --rm."""

from __future__ import annotations

import json

from tests.integration.labs import Lab


def test_run_hostname_sets_uts_name_etc_hostname_and_hosts(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "hostnet")
    lab2.ok(
        "node1", "run", "-dit", "--name", "named", "-h", "web01", "--network", "hostnet", "alpine"
    )
    assert lab2.ok("node1", "exec", "named", "hostname").strip() == "web01"
    assert lab2.ok("node1", "exec", "named", "cat", "/etc/hostname").strip() == "web01"
    hosts = lab2.ok("node1", "exec", "named", "cat", "/etc/hosts")
    assert "\tweb01" in hosts
    env = lab2.ok("node1", "exec", "named", "env")
    assert "HOSTNAME=web01" in env.split()
    # Docker's embedded DNS answers container names, not hostnames.
    lab2.ok("node1", "run", "-dit", "--name", "asker", "--network", "hostnet", "alpine")
    assert lab2.cli("node1", "exec", "asker", "nslookup", "web01").returncode != 0
    lab2.ok("node1", "rm", "-f", "named", "asker")
    lab2.ok("node1", "network", "rm", "hostnet")


def test_run_hostname_refuses_a_bad_name_and_creates_nothing(lab2: Lab) -> None:
    out = lab2.cli("node1", "run", "-d", "--name", "badhost", "--hostname", "no_way", "alpine")
    assert out.returncode == 125
    assert "invalid hostname 'no_way'" in out.stderr
    assert "badhost" not in lab2.ok("node1", "ps", "--all")
    doc = json.loads(lab2.ok("node1", "network", "inspect", "bridge"))[0]
    assert all(c["Name"] != "badhost" for c in (doc.get("Containers") or {}).values())
