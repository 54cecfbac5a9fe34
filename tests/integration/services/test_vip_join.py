"""A node new to a network never balances a VIP over its own new task alone (issue 13).

It joins the network's gossip with its first endpoint there and learns the other nodes' tasks
from the push-pull that follows; a VIP installed before that sent every connection from this
node to its own task (`network lb` showed 1 backend right after a scale to 3). Now the VIP waits,
boundedly, until the node knows the tasks the managers say serve it.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest

from tests.integration.labs import Lab, wait_until
from tests.integration.services.test_services_swarm import current, ps_rows

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")

NODES = ("node1", "node2", "node3")
# How long each new node's `network lb` is watched after the scale: the join, the tasks
# starting, and the VIP's install, with room to spare.
WATCH = 15.0


def vip_tasks(lab: Lab, host: str, network: str, vip: str) -> set[str] | None:
    """The task names `network lb` shows behind the VIP on `host` (None: no such VIP there)."""
    out = lab.cli(host, "network", "lb", network, "--format", "json")
    if out.returncode != 0:
        return None
    doc = json.loads(out.stdout)
    entries = [v for v in doc.get("VIPs") or () if v["VIP"] == f"{vip}:*/tcp"]
    return {b["Task"] for b in entries[0]["Backends"]} if entries else None


def test_a_node_new_to_the_network_never_balances_over_its_own_task_alone(
    swarm3: Lab,
) -> None:
    lab = swarm3
    lab.ok("node1", "network", "create", "-d", "overlay", "joinnet")
    lab.ok(
        "node1", "service", "create", "--name", "joiner", "--network", "joinnet",
        "overlaynet/web",
    )  # fmt: skip
    (row,) = current(ps_rows(lab, "joiner"))
    first = f"{row['NAME']}.{row['ID']}"
    (vip,) = re.findall(r'"Addr": "([\d.]+)/\d+"', lab.ok("node1", "service", "inspect", "joiner"))
    assert wait_until(lambda: vip_tasks(lab, row["NODE"], "joinnet", vip) == {first}, 30)
    new_nodes = [n for n in NODES if n != row["NODE"]]
    assert all(vip_tasks(lab, n, "joinnet", vip) is None for n in new_nodes)

    seen: dict[str, list[set[str]]] = {n: [] for n in new_nodes}

    def watch(host: str) -> None:
        deadline = time.monotonic() + WATCH
        while time.monotonic() < deadline and len(seen[host]) < 200:
            tasks = vip_tasks(lab, host, "joinnet", vip)
            if tasks:
                seen[host].append(tasks)
                if len(tasks) == 3:
                    return

    threads = [threading.Thread(target=watch, args=(n,)) for n in new_nodes]
    for t in threads:
        t.start()
    lab.ok("node1", "service", "scale", "--detach", "joiner=3")
    for t in threads:
        t.join()
    for host in new_nodes:
        assert seen[host], f"{host} never balanced the VIP"
        # The first set the new node balanced over already had the task that was serving
        # for seconds before the scale: never its own new task alone.
        assert first in seen[host][0], (host, seen[host])
        assert len(seen[host][-1]) == 3, (host, seen[host])
