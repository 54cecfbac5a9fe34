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


def test_logs_follow_returns_when_the_container_ends_and_tail_shows_the_last_lines(
    lab2: Lab,
) -> None:
    lab2.ok(
        "node1",
        "run",
        "-d",
        "--name",
        "talker",
        "alpine",
        "sh",
        "-c",
        "echo a; echo b; sleep 1; echo c",
    )
    # Started while the container still runs: returns by itself once it has ended.
    out = lab2.cli("node1", "logs", "-f", "talker")
    assert (out.returncode, out.stdout) == (0, "a\nb\nc\n"), out.stderr
    assert lab2.ok("node1", "inspect", "-f", "{{.State.Status}}", "talker").strip() == "exited"
    assert lab2.ok("node1", "logs", "--tail", "1", "talker") == "c\n"
    assert lab2.ok("node1", "logs", "-n", "2", "talker") == "b\nc\n"
    assert lab2.ok("node1", "logs", "--tail", "all", "talker") == "a\nb\nc\n"
    assert lab2.ok("node1", "logs", "--tail", "0", "-f", "talker") == ""
    bad = lab2.cli("node1", "logs", "--tail", "x", "talker")
    assert bad.returncode == 125 and "--tail" in bad.stderr
    lab2.ok("node1", "rm", "talker")
