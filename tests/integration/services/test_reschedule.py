"""Tasks move when their node goes away (issue 13): `node update --availability drain` moves a
node's tasks elsewhere, and a worker whose agent is killed -9 has its tasks rescheduled on the
other nodes within gossip's dead time plus a scheduling pass; DNS and the VIP then never name
the dead tasks, and the agent, restarted, picks up without duplicates.

A real 3-host swarm lab; every step is the CLI as a user types it, DNS is asked with dig and the
VIP with HTTP requests from inside a client task's namespace.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from overlaynet import lab as labmod
from tests.integration.labs import Lab, wait_until
from tests.integration.services.test_services_swarm import (
    current,
    dig,
    pid_of,
    ps_rows,
    served_by,
    task_containers,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

NODES = ("node1", "node2", "node3")
# Drain is one scheduling pass plus the workers' long-poll: well inside this.
DRAIN_WAIT = 30.0
# A killed agent: SWIM's crash-to-dead (about 4-6 s in a 3-node lab, gossip/config.py) plus
# one orchestration pass and the replacement tasks starting; generous for a shared machine.
DEAD_WAIT = 60.0


def running_on(lab: Lab, service: str) -> dict[str, str]:
    """Task id -> node of the tasks wanted and shown Running."""
    return {
        r["ID"]: r["NODE"]
        for r in current(ps_rows(lab, service))
        if r["DESIRED STATE"] == "Running" and r["CURRENT STATE"].startswith("Running")
    }


def overlay_ip(lab: Lab, host: str, container: str, network: str) -> str:
    """The container's address on `network`, from `inspect` on its host."""
    fmt = "{{json .NetworkSettings.Networks}}"
    nets = json.loads(lab.ok(host, "inspect", "--format", fmt, container))
    return str(nets[network]["IPAddress"])


@pytest.fixture(scope="module")
def swarm(swarm3: Lab) -> Lab:
    swarm3.ok("node1", "network", "create", "-d", "overlay", "movenet")
    return swarm3


def test_drain_moves_the_nodes_tasks_elsewhere(swarm: Lab) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "drained", "--replicas", "3",
        "--network", "movenet", "alpine", "sleep", "100000",
    )  # fmt: skip
    before = running_on(swarm, "drained")
    assert sorted(before.values()) == list(NODES)
    (on_node2,) = [t for t, n in before.items() if n == "node2"]
    swarm.ok("node1", "node", "update", "--availability", "drain", "node2")
    try:

        def moved() -> bool:
            now = running_on(swarm, "drained")
            return len(now) == 3 and "node2" not in now.values()

        assert wait_until(moved, DRAIN_WAIT), ps_rows(swarm, "drained")
        # `service ps`: the node2 task wanted and shown Shutdown there, its slot Running elsewhere.
        (old,) = [r for r in ps_rows(swarm, "drained") if r["ID"] == on_node2]
        assert old["NODE"] == "node2"
        assert old["DESIRED STATE"] == "Shutdown"
        assert wait_until(
            lambda: next(r for r in ps_rows(swarm, "drained") if r["ID"] == on_node2)[
                "CURRENT STATE"
            ].startswith("Shutdown"),
            DRAIN_WAIT,
        ), ps_rows(swarm, "drained")
        # Its container is gone from node2; the others kept theirs (drain moved only node2's).
        assert wait_until(lambda: task_containers(swarm, "node2", "drained") == [], DRAIN_WAIT)
        assert set(before) - {on_node2} <= set(running_on(swarm, "drained"))
    finally:
        swarm.ok("node1", "node", "update", "--availability", "active", "node2")


def test_killed_agents_tasks_move_and_leave_dns_and_vip_then_it_rejoins_cleanly(
    swarm: Lab,
) -> None:
    swarm.ok(
        "node1", "service", "create", "--name", "mover", "--replicas", "3",
        "--network", "movenet", "overlaynet/web",
    )  # fmt: skip
    # The client runs on node1 (a manager that stays up) so it can watch DNS and the VIP.
    swarm.ok(
        "node1", "service", "create", "--name", "watcher", "--network", "movenet",
        "--constraint", "node.hostname==node1", "alpine", "sleep", "100000",
    )  # fmt: skip
    (vip,) = re.findall(r'"Addr": "([\d.]+)/\d+"', swarm.ok("node1", "service", "inspect", "mover"))
    pid = pid_of(swarm, "node1", task_containers(swarm, "node1", "watcher")[0])
    before = running_on(swarm, "mover")
    assert sorted(before.values()) == list(NODES)
    (dead_task,) = [t for t, n in before.items() if n == "node3"]
    assert wait_until(lambda: len(dig(pid, "tasks.mover")[1]) == 3, DRAIN_WAIT)
    (dead_name,) = task_containers(swarm, "node3", "mover")
    dead_ip = overlay_ip(swarm, "node3", dead_name, "movenet")
    assert dead_ip in dig(pid, "tasks.mover")[1]

    labmod.stop_agent(swarm.name, "node3", signal.SIGKILL)
    killed = time.monotonic()
    try:

        def rescheduled() -> bool:
            now = running_on(swarm, "mover")
            return len(now) == 3 and "node3" not in now.values()

        assert wait_until(rescheduled, DEAD_WAIT), ps_rows(swarm, "mover")
        print(f"kill -9 of node3's agent -> its task running elsewhere: "
              f"{time.monotonic() - killed:.1f} s")  # fmt: skip
        # Converged: neither tasks.<svc> nor the VIP name the dead task any more.
        assert wait_until(
            lambda: (
                (a := dig(pid, "tasks.mover"))[0] == "NOERROR"
                and len(a[1]) == 3
                and dead_ip not in a[1]
            ),
            DRAIN_WAIT,
        ), dig(pid, "tasks.mover")
        assert dig(pid, "mover") == ("NOERROR", [vip])
        served = served_by(pid, vip, 80, 60)
        assert sum(served.values()) == 60, served  # no request went to the dead backend
        assert dead_name not in served and len(served) == 3, served
        lb = json.loads(swarm.ok("node1", "network", "lb", "movenet", "--format", "json"))
        (entry,) = [v for v in lb["VIPs"] if v["VIP"] == f"{vip}:*/tcp"]
        assert dead_name not in {b["Task"] for b in entry["Backends"]}
        assert len(entry["Backends"]) == 3
        after_move = running_on(swarm, "mover")
    finally:
        labmod.up(swarm.name, len(NODES))  # brings node3's agent back

    def polls() -> int:
        out = swarm.cli("node3", "info", "--format", "json")
        if out.returncode != 0:
            return 0
        return int(json.loads(out.stdout)["Tasks"].get("assigned_polls", 0))

    # Back: node3 reads its assignments a few times and runs none of the old tasks (they were
    # rescheduled), so exactly three tasks run, the same as before it came back.
    assert wait_until(lambda: polls() >= 3, DEAD_WAIT)
    assert wait_until(lambda: task_containers(swarm, "node3", "mover") == [], DRAIN_WAIT)
    assert running_on(swarm, "mover") == after_move
    total = sum(len(task_containers(swarm, h, "mover")) for h in NODES)
    assert total == 3
    (old,) = [r for r in ps_rows(swarm, "mover") if r["ID"] == dead_task]
    assert old["DESIRED STATE"] == "Shutdown"
