"""An agent killed with -9 comes back with every network and container it had."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

from overlaynet import lab as labmod
from overlaynet.agent.store import Store
from overlaynet.host import netns
from overlaynet.lab import lifecycle
from overlaynet.model import OVERLAY_MTU, Driver, Network
from overlaynet.names import KernelNames
from overlaynet.paths import HostPaths
from tests.integration.labs import Lab, wait_until


def _in(ns: str, *cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=True
    ).stdout


def test_kill_9_and_restart_restores_networks_containers_and_removes_strays(fresh_lab: Lab) -> None:
    lab, host_ns = fresh_lab, fresh_lab.netns_of("node1")
    lab.ok("node1", "network", "create", "keep")
    lab.ok("node1", "run", "-dit", "--name", "k1", "--network", "keep", "alpine")
    lab.ok("node1", "run", "-dit", "--name", "k2", "--network", "keep", "alpine")
    lab.ok("node1", "run", "--name", "done", "alpine", "true")
    # What k1 writes in its own root (its upper layer) must outlive its relaunch.
    lab.ok("node1", "exec", "k1", "sh", "-c", "echo kept > /root/note")
    before = {c: json.loads(lab.ok("node1", "inspect", c))[0] for c in ("k1", "k2")}
    bridge = json.loads(lab.ok("node1", "network", "inspect", "keep"))[0]["Options"][
        "com.docker.network.bridge.name"
    ]

    # A crash: the agent dies with -9, k1's process dies too, the bridge is gone,
    # and debris of ours that the store does not know about is left behind.
    pid = labmod.status(lab.name)[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.kill(before["k1"]["State"]["Pid"], signal.SIGKILL)
    _in(host_ns, "ip", "link", "del", bridge)
    _in(host_ns, "ip", "link", "add", "on-stray0", "type", "bridge")
    stray_ns = f"onet-{lab.name}-node1-ffffffffffff"
    netns.create(stray_ns)
    time.sleep(0.2)

    labmod.up(lab.name, 1)

    links = _in(host_ns, "ip", "-o", "link")
    assert bridge in links and "on-stray0" not in links
    assert stray_ns not in netns.list_names()
    after = {c: json.loads(lab.ok("node1", "inspect", c))[0] for c in ("k1", "k2")}
    for c in ("k1", "k2"):
        assert after[c]["State"]["Running"], c
        assert (
            after[c]["NetworkSettings"]["Networks"]["keep"]["IPAddress"]
            == (before[c]["NetworkSettings"]["Networks"]["keep"]["IPAddress"])
        )
    assert after["k1"]["State"]["Pid"] != before["k1"]["State"]["Pid"]  # re-launched
    assert after["k2"]["State"]["Pid"] == before["k2"]["State"]["Pid"]  # survived the agent
    # A container that had ended by itself stays ended.
    assert json.loads(lab.ok("node1", "inspect", "done"))[0]["State"]["Status"] == "exited"
    k2_ip = after["k2"]["NetworkSettings"]["Networks"]["keep"]["IPAddress"]
    out = lab.cli("node1", "exec", "k1", "ping", "-c", "1", "-W", "2", k2_ip)
    assert out.returncode == 0, out.stdout
    assert lab.ok("node1", "exec", "k1", "cat", "/root/note") == "kept\n"


def test_an_agent_that_dies_on_its_own_is_restarted_with_its_state(fresh_lab: Lab) -> None:
    lab = fresh_lab
    lab.ok("node1", "run", "-d", "--name", "survivor", "alpine", "sleep", "600")
    before = json.loads(lab.ok("node1", "inspect", "survivor"))[0]
    pid = labmod.status(lab.name)[0].pid
    supervisor = lifecycle.supervisor_pid(lab.name, "node1")
    assert pid is not None and supervisor is not None
    os.kill(pid, signal.SIGABRT)  # a crash of its own, not the lab's deliberate kill -9

    def restarted() -> bool:
        new = labmod.status(lab.name)[0]
        return new.healthy and new.pid not in (None, pid)

    assert wait_until(restarted, 30)
    # Forked again by the same supervisor, which outlived the crash.
    new_pid = labmod.status(lab.name)[0].pid
    with open(f"/proc/{new_pid}/stat") as f:
        assert int(f.read().rsplit(")", 1)[1].split()[1]) == supervisor
    assert lifecycle.supervisor_pid(lab.name, "node1") == supervisor
    after = json.loads(lab.ok("node1", "inspect", "survivor"))[0]
    assert after["State"]["Running"] and after["State"]["Pid"] == before["State"]["Pid"]
    assert after["Id"] == before["Id"]


def test_a_swarm_overlay_left_without_a_container_by_a_kill_9_is_removed(fresh_lab: Lab) -> None:
    """Issue 18: a `run` on a swarm overlay killed after the network came to this host but
    before its container was saved left the overlay's bridge and TAP with no container."""
    lab, host_ns = fresh_lab, fresh_lab.netns_of("node1")
    pid = labmod.status(lab.name)[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    # What that `run` left in the store: the swarm network, brought here, and no container.
    net_id = "5a" * 32
    orphan = Network(
        id=net_id,
        name="orphan",
        driver=Driver.OVERLAY,
        created="2026-01-01T00:00:00.000000Z",
        scope="swarm",
        subnet="10.0.9.0/24",
        gateway="10.0.9.1",
        mtu=OVERLAY_MTU,
        attachable=True,
        vni=4099,
    )
    store = Store(HostPaths("node1", lab.name).state_dir / "state.db")
    store.put_network(orphan)
    store.close()
    # And the kernel side that `run` had built before it died.
    _in(host_ns, "ip", "link", "add", KernelNames.bridge(net_id), "type", "bridge")

    labmod.up(lab.name, 1)

    links = _in(host_ns, "ip", "-o", "link")
    assert KernelNames.bridge(net_id) not in links
    assert KernelNames.tap(net_id) not in links
    assert "orphan" not in lab.ok("node1", "network", "ls")
