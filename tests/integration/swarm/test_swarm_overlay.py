"""The overlay part of the tutorial: containers on different hosts reach each other by name,
and a host that dies has its endpoints withdrawn everywhere. The containers run the busybox
`alpine` image, as in the tutorial: names are looked up with its ping and nslookup."""

from __future__ import annotations

import json
import os
import signal

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until


def _gossip_names(lab: Lab, host: str, net: str) -> set[str]:
    out = lab.ok(host, "gossip", "endpoints", net)
    return {line.split()[1] for line in out.splitlines()[1:]}


def _member_state(lab: Lab, host: str, addr: str) -> str:
    out = lab.ok(host, "gossip", "members")
    return next((line.split()[2] for line in out.splitlines()[1:] if line.split()[1] == addr), "")


def test_containers_on_two_hosts_ping_by_name_over_the_overlay(swarm3: Lab) -> None:
    swarm3.ok("node1", "network", "create", "--driver=overlay", "--attachable", "test-net")
    swarm3.ok("node1", "run", "-dit", "--name", "alpine1", "--network", "test-net", "alpine", "sh")
    assert " test-net " not in swarm3.ok("node2", "network", "ls")
    swarm3.ok("node2", "run", "-dit", "--name", "alpine2", "--network", "test-net", "alpine", "sh")
    assert " test-net " in swarm3.ok("node2", "network", "ls")
    assert wait_until(lambda: {"alpine1", "alpine2"} <= _gossip_names(swarm3, "node1", "test-net"))
    out = swarm3.cli("node1", "exec", "alpine1", "ping", "-c", "2", "-W", "2", "alpine2")
    assert out.returncode == 0, out.stdout + out.stderr
    ip2 = swarm3.ok(
        "node2", "inspect", "-f", "{{.NetworkSettings.Networks.test-net.IPAddress}}", "alpine2"
    ).strip()
    assert f"PING alpine2 ({ip2})" in out.stdout and f"64 bytes from {ip2}" in out.stdout
    out = swarm3.cli("node2", "exec", "alpine2", "ping", "-c", "2", "-W", "2", "alpine1")
    assert out.returncode == 0, out.stdout + out.stderr
    # The VTEP learnt alpine2 from gossip: FDB entry toward node2, ARP answered locally.
    dp = json.loads(swarm3.ok("node1", "network", "inspect", "test-net"))[0]["Overlay"]
    assert ip2 in dp["DataPlane"]["arp"]
    assert any(r["remote_ip"] == "192.168.0.12" for r in dp["DataPlane"]["fdb"])
    assert dp["Peers"] == ["192.168.0.12"]
    # node3 has no container on test-net: it is no peer and holds no state for it.
    assert " test-net " not in swarm3.ok("node3", "network", "ls")
    swarm3.ok("node2", "rm", "-f", "alpine2")
    assert wait_until(lambda: "alpine2" not in _gossip_names(swarm3, "node1", "test-net"))
    out = swarm3.cli("node1", "exec", "alpine1", "nslookup", "alpine2")
    assert out.returncode != 0
    swarm3.ok("node1", "rm", "-f", "alpine1")
    swarm3.ok("node1", "network", "rm", "test-net")


def test_a_killed_worker_is_declared_down_and_its_endpoints_withdrawn(swarm3: Lab) -> None:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "--attachable", "crashnet")
    swarm3.ok("node1", "run", "-dit", "--name", "c1", "--network", "crashnet", "alpine")
    swarm3.ok("node3", "run", "-dit", "--name", "c3", "--network", "crashnet", "alpine")
    assert wait_until(lambda: "c3" in _gossip_names(swarm3, "node1", "crashnet"))
    pid = labmod.status(swarm3.name)[2].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_until(lambda: "c3" not in _gossip_names(swarm3, "node1", "crashnet"))
    row = next(line for line in swarm3.ok("node1", "node", "ls").splitlines() if " node3 " in line)
    assert " Down " in row
    assert swarm3.cli("node1", "exec", "c1", "nslookup", "c3").returncode != 0
    # Back again: its agent restores the container and republishes it.
    labmod.up(swarm3.name, 3)
    assert wait_until(lambda: "c3" in _gossip_names(swarm3, "node1", "crashnet"))
    out = swarm3.cli("node1", "exec", "c1", "ping", "-c", "1", "-W", "2", "c3")
    assert out.returncode == 0, out.stdout + out.stderr
    swarm3.ok("node3", "rm", "-f", "c3")
    swarm3.ok("node1", "rm", "-f", "c1")


def test_containers_keep_working_with_no_manager(swarm3: Lab) -> None:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "--attachable", "nomgr")
    swarm3.ok("node2", "run", "-dit", "--name", "n2", "--network", "nomgr", "alpine")
    swarm3.ok("node3", "run", "-dit", "--name", "n3", "--network", "nomgr", "alpine")
    assert wait_until(lambda: "n3" in _gossip_names(swarm3, "node2", "nomgr"))
    pid = labmod.status(swarm3.name)[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # the only manager is gone
    try:
        # Wait until gossip on node2 has declared the manager dead: the overlay then runs on
        # what node2 and node3 know of each other.
        assert wait_until(lambda: "dead" in _member_state(swarm3, "node2", "192.168.0.11"))
        out = swarm3.cli("node2", "exec", "n2", "ping", "-c", "2", "-W", "2", "n3")
        assert out.returncode == 0, out.stdout + out.stderr
        # What needs the managers says so; nothing else breaks.
        out = swarm3.cli("node2", "run", "-d", "--network", "nomgr", "alpine")
        assert out.returncode == 125 and "192.168.0.11" in out.stderr, out.stderr
    finally:
        labmod.up(swarm3.name, 3)
    swarm3.ok("node2", "rm", "-f", "n2")
    swarm3.ok("node3", "rm", "-f", "n3")


def test_a_worker_inspects_the_ingress_network_its_network_ls_lists(swarm3: Lab) -> None:
    """`network ls` on a worker lists ingress (as Docker's does); inspecting it there used to be
    "not found" until a published task had brought it to the host (seen in `lab graph`)."""
    assert " ingress " in swarm3.ok("node3", "network", "ls")
    doc = json.loads(swarm3.ok("node3", "network", "inspect", "ingress"))[0]
    assert doc["Name"] == "ingress"
    assert doc["Ingress"] is True
    assert doc["IPAM"]["Config"][0]["Subnet"] == "10.255.0.0/16"
    assert "data_keys" not in json.dumps(doc)
    # A user overlay no container on node3 uses stays the managers' business, as before.
    swarm3.ok("node1", "network", "create", "-d", "overlay", "only-managers")
    assert "not found" in swarm3.cli("node3", "network", "inspect", "only-managers").stderr
    assert json.loads(swarm3.ok("node1", "network", "inspect", "ingress"))[0]["Ingress"] is True
    assert (
        json.loads(swarm3.ok("node1", "network", "inspect", "only-managers"))[0]["Ingress"] is False
    )
