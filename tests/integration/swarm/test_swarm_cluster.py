"""Swarm management through the CLI: tokens, roles, nodes, cluster-scoped overlays."""

from __future__ import annotations

import json
import os
import re
import signal

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until


def _ids(text: str) -> list[str]:
    return [line.split()[1] for line in text.splitlines()[1:]]


def test_node_ls_on_the_manager_shows_every_host(swarm3: Lab) -> None:
    out = swarm3.ok("node1", "node", "ls")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER", "STATUS"]
    rows = {line.split()[1] if "*" not in line else line.split()[2]: line for line in lines[1:]}
    assert set(rows) == {"node1", "node2", "node3"}
    assert " * " in rows["node1"] and "Leader" in rows["node1"]
    assert all("Active" in row for row in rows.values())
    assert "Leader" not in rows["node2"] + rows["node3"]


def test_a_worker_refuses_cluster_commands_and_names_a_manager(swarm3: Lab) -> None:
    out = swarm3.cli("node2", "node", "ls")
    assert out.returncode == 1
    assert "worker" in out.stderr and "192.168.0.11:2377" in out.stderr
    out = swarm3.cli("node2", "network", "create", "-d", "overlay", "fromworker")
    assert out.returncode == 1 and "worker" in out.stderr


def test_join_tokens_and_bad_joins(swarm3: Lab) -> None:
    worker = swarm3.ok("node1", "swarm", "join-token", "-q", "worker").strip()
    manager = swarm3.ok("node1", "swarm", "join-token", "-q", "manager").strip()
    assert re.fullmatch(r"SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}", worker)
    assert worker.split("-")[2] == manager.split("-")[2] and worker != manager
    shown = swarm3.ok("node1", "swarm", "join-token", "worker")
    assert f"overlaynet swarm join --token {worker} 192.168.0.11:2377" in shown
    out = swarm3.cli("node2", "swarm", "join", "--token", worker, "192.168.0.11:2377")
    assert out.returncode == 1 and "already part of a swarm" in out.stderr


def test_node_update_drain_and_inspect(swarm3: Lab) -> None:
    swarm3.ok("node1", "node", "update", "--availability", "drain", "node3")
    doc = json.loads(swarm3.ok("node1", "node", "inspect", "node3"))[0]
    assert doc["Spec"]["Availability"] == "drain" and doc["Description"]["Hostname"] == "node3"
    assert "Drain" in next(
        line for line in swarm3.ok("node1", "node", "ls").splitlines() if "node3" in line
    )
    swarm3.ok("node1", "node", "update", "--availability", "active", "node3")


def test_overlay_is_cluster_scoped_and_reaches_a_worker_only_with_a_container(swarm3: Lab) -> None:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "--attachable", "lazynet")
    ls1 = swarm3.ok("node1", "network", "ls")
    row = next(line for line in ls1.splitlines() if " lazynet " in line)
    assert row.split()[2:] == ["overlay", "swarm"]
    assert "ingress" in ls1
    assert "lazynet" not in swarm3.ok("node2", "network", "ls")
    swarm3.ok("node2", "run", "-d", "--name", "lz2", "--network", "lazynet", "alpine")
    swarm3.ok("node3", "run", "-d", "--name", "lz3", "--network", "lazynet", "alpine")
    assert "lazynet" in swarm3.ok("node2", "network", "ls")
    fmt = "{{.NetworkSettings.Networks.lazynet.IPAddress}}"
    ip2 = swarm3.ok("node2", "inspect", "-f", fmt, "lz2").strip()
    ip3 = swarm3.ok("node3", "inspect", "-f", fmt, "lz3").strip()
    assert ip2 != ip3 and ip2.startswith("10.0.") and ip3.startswith("10.0.")
    doc = json.loads(swarm3.ok("node2", "network", "inspect", "lazynet"))[0]
    assert doc["Scope"] == "swarm" and doc["Overlay"]["VNI"] >= 4096
    # The network cannot go while containers use it; it leaves node2 with its last container.
    out = swarm3.cli("node1", "network", "rm", "lazynet")
    assert out.returncode == 1
    swarm3.ok("node2", "rm", "-f", "lz2")
    assert "lazynet" not in swarm3.ok("node2", "network", "ls")
    links = swarm3.ok("node2", "host", "show")
    assert "on-tap-" not in links
    swarm3.ok("node3", "rm", "-f", "lz3")
    swarm3.ok("node1", "network", "rm", "lazynet")
    assert "lazynet" not in swarm3.ok("node1", "network", "ls")


def test_non_attachable_overlay_is_refused_for_containers(swarm3: Lab) -> None:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "svconly")
    out = swarm3.cli("node2", "run", "-d", "--network", "svconly", "alpine")
    assert out.returncode == 125 and "not manually attachable" in out.stderr
    assert "svconly" not in swarm3.ok("node2", "network", "ls")


def test_manager_restart_keeps_the_cluster(swarm3: Lab) -> None:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "--attachable", "keepnet")
    before = swarm3.ok("node1", "node", "ls")
    pid = labmod.status(swarm3.name)[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    labmod.up(swarm3.name, 3)
    after = swarm3.ok("node1", "node", "ls")
    assert sorted(_ids(before)) == sorted(_ids(after))
    assert "keepnet" in swarm3.ok("node1", "network", "ls")
    swarm3.ok("node2", "run", "-d", "--name", "kp", "--network", "keepnet", "alpine")
    swarm3.ok("node2", "rm", "-f", "kp")


def test_promote_makes_a_worker_a_reachable_manager_and_demote_undoes_it(swarm3: Lab) -> None:
    swarm3.ok("node1", "node", "promote", "node3")

    def own_row() -> str:
        out = swarm3.cli("node3", "node", "ls").stdout
        return next((line for line in out.splitlines() if " node3 " in line), "")

    # The follower serves once it sees its promotion, and shows it once its copy catches up.
    assert wait_until(lambda: "Reachable" in own_row())
    assert " * " in own_row()
    # A follower answers reads from its copy and forwards writes to the leader.
    swarm3.ok("node3", "network", "create", "-d", "overlay", "--attachable", "fromfollower")
    assert "fromfollower" in swarm3.ok("node1", "network", "ls")
    swarm3.ok("node1", "network", "rm", "fromfollower")
    swarm3.ok("node1", "node", "demote", "node3")
    # Once it reads its demotion it stops serving: cluster commands then say it is a worker.
    assert wait_until(lambda: "worker" in swarm3.cli("node3", "node", "ls").stderr)
