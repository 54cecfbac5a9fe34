"""The agent's embedded DNS as users meet it: names on user bridges, none on the default one.

The containers run the `host` image: the checks use getent and dig, which busybox lacks."""

from __future__ import annotations

import os
import signal

from overlaynet import lab as labmod
from tests.integration.labs import Lab


def test_by_name_on_a_user_bridge_and_not_across_networks(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "dnsnet")
    lab2.ok("node1", "network", "create", "othernet")
    lab2.ok("node1", "run", "-d", "--name", "d1", "--network", "dnsnet", "host")
    lab2.ok(
        "node1",
        "run",
        "-d",
        "--name",
        "d2",
        "--network",
        "dnsnet",
        "--network-alias",
        "db",
        "host",
    )
    lab2.ok("node1", "run", "-d", "--name", "d3", "--network", "othernet", "host")
    out = lab2.cli("node1", "exec", "d1", "ping", "-c", "1", "-W", "2", "d2")
    assert out.returncode == 0, out.stdout + out.stderr
    d2_ip = lab2.ok(
        "node1", "inspect", "-f", "{{.NetworkSettings.Networks.dnsnet.IPAddress}}", "d2"
    ).strip()
    assert lab2.ok("node1", "exec", "d1", "getent", "hosts", "db").split()[0] == d2_ip
    assert lab2.ok("node1", "exec", "d1", "dig", "+short", "-x", d2_ip).strip() == "d2.dnsnet."
    out = lab2.cli("node1", "exec", "d3", "getent", "hosts", "d2")
    assert out.returncode != 0


def test_default_bridge_has_no_name_resolution(lab2: Lab) -> None:
    lab2.ok("node2", "run", "-d", "--name", "b1", "host")
    lab2.ok("node2", "run", "-d", "--name", "b2", "host")
    out = lab2.cli("node2", "exec", "b1", "getent", "hosts", "b2")
    assert out.returncode != 0
    # …while b2 itself is right there: the failure is the missing name service, not the path.
    b2_ip = lab2.ok("node2", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "b2").strip()
    assert lab2.cli("node2", "exec", "b1", "ping", "-c", "1", "-W", "2", b2_ip).returncode == 0
    assert "127.0.0.11" not in lab2.ok("node2", "exec", "b1", "cat", "/etc/resolv.conf")


def test_a_stopped_container_name_stops_resolving(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "stopnet")
    lab2.ok("node1", "run", "-d", "--name", "s1", "--network", "stopnet", "host")
    lab2.ok("node1", "run", "-d", "--name", "s2", "--network", "stopnet", "host")
    assert lab2.cli("node1", "exec", "s1", "getent", "hosts", "s2").returncode == 0
    lab2.ok("node1", "stop", "-t", "1", "s2")
    assert lab2.cli("node1", "exec", "s1", "getent", "hosts", "s2").returncode != 0
    lab2.ok("node1", "start", "s2")
    assert lab2.cli("node1", "exec", "s1", "getent", "hosts", "s2").returncode == 0


def test_names_resolve_again_after_the_agent_is_killed_and_restarted(fresh_lab: Lab) -> None:
    fresh_lab.ok("node1", "network", "create", "rnet")
    fresh_lab.ok("node1", "run", "-d", "--name", "r1", "--network", "rnet", "host")
    fresh_lab.ok("node1", "run", "-d", "--name", "r2", "--network", "rnet", "host")
    pid = labmod.status(fresh_lab.name)[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert fresh_lab.cli("node1", "exec", "r1", "getent", "hosts", "r2").returncode != 0
    labmod.up(fresh_lab.name, 1)
    out = fresh_lab.cli("node1", "exec", "r1", "ping", "-c", "1", "-W", "2", "r2")
    assert out.returncode == 0, out.stdout + out.stderr
