"""Rolling update of a 10-replica web service under load (issue 14's benchmark).

On a 3-host swarm lab: overlaynet/web with a health check, 10 replicas, published on 8088
through the routing mesh. Two bounded request loops run at once, one HTTP/1.0 request per
connection each: from a client task through the service's VIP, and from a namespace on the
lab's underlay that is not a node to node1:8088 (the routing mesh). Meanwhile `service update
--env-add VERSION=2` replaces every task (Docker's defaults: parallelism 1, stop-first; the
monitor is --monitor, 1 s here by default rather than Docker's 5 s so the run stays short).
Reported: the update's duration and, per path, requests and failed requests (goal: 0).

Bounded: each loop stops at the stop file, LOAD_MAX requests or LOAD_SECONDS, each request
with a 5 s timeout; the lab and the client namespace are removed at the end. Needs root.
Results go to benchmarks/results/rolling_update-<time>.json.

    .venv/bin/python benchmarks/rolling_update.py [--replicas 10] [--monitor 1s]
"""

from __future__ import annotations

import argparse
import json
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_args

from overlaynet import lab as labmod

# The lab helpers the integration tests use (the repository root, not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.labs import Lab, wait_until
from tests.integration.services.test_rolling_update import _LOAD, LOAD_MAX, LOAD_SECONDS
from tests.integration.services.test_services_swarm import (
    current,
    pid_of,
    ps_rows,
    task_containers,
)

GOAL_FAILED = 0
# The mesh client: on the lab underlay (192.168.0.0/24), not a node's address.
NODE1 = "192.168.0.11"
MESH_PORT = 8088
HEALTH = ["--health-cmd", "wget -q -O /dev/null http://127.0.0.1/", "--health-interval", "500ms"]
# Scheduling, images starting and health checks of 10 tasks on a shared 2-core machine.
CONVERGE = 120.0


def load(enter: list[str], addr: str, port: int, stop: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*enter, "python3", "-c", _LOAD, addr, str(port), stop, str(LOAD_MAX), str(LOAD_SECONDS)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def served(enter: list[str], addr: str, port: int, n: int) -> set[str]:
    out = subprocess.run(
        [*enter, "python3", "-c", _LOAD, addr, str(port), "/nonexistent", str(n), "60"],
        capture_output=True, text=True, timeout=400, check=False,
    ).stdout  # fmt: skip
    return {line.split()[1] for line in out.splitlines() if line.startswith("ok")}


def summary(output: str) -> dict[str, Any]:
    lines = [line.split() for line in output.splitlines() if line.strip()]
    failed = [r[1] for r in lines if r[0] == "fail"]
    return {"requests": len(lines), "failed": len(failed), "failures": failed[:10]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--replicas", type=bench_args.positive_int, default=10)
    p.add_argument("--monitor", default="1s", help="--update-monitor (Docker's default: 5s)")
    args = p.parse_args()
    name = "b" + secrets.token_hex(4)
    client = None
    result: dict[str, Any] = {"replicas": args.replicas, "update_monitor": args.monitor}
    try:
        labmod.up(name, 3, swarm=True)
        lab = Lab(name)
        lab.ok("node1", "network", "create", "-d", "overlay", "rollnet")
        lab.ok(
            "node1", "service", "create", "--name", "rollclient", "--network", "rollnet",
            "--constraint", "node.hostname==node1", "alpine", "sleep", "100000",
        )  # fmt: skip
        lab.ok(
            "node1", "service", "create", "--name", "rollweb", "--replicas", str(args.replicas),
            "--network", "rollnet", "--publish", f"{MESH_PORT}:80", *HEALTH,
            "--update-monitor", args.monitor, "overlaynet/web",
        )  # fmt: skip
        host = current(ps_rows(lab, "rollclient"))[0]["NODE"]
        pid = pid_of(lab, host, task_containers(lab, host, "rollclient")[0])
        doc = lab.ok("node1", "service", "inspect", "rollweb")
        # Its VIP on rollnet (the other is the routing mesh's, on ingress: 10.255.0.0/16).
        addrs = re.findall(r'"Addr": "([\d.]+)/\d+"', doc)
        (vip,) = [a for a in addrs if not a.startswith("10.255.")]
        vip_enter = ["nsenter", "-t", str(pid), "-n"]
        client = labmod.add_client(name)
        mesh_enter = ["ip", "netns", "exec", client]
        # Every task reachable both ways before the update starts.
        many = 6 * args.replicas
        ready = wait_until(
            lambda: (
                len(served(vip_enter, vip, 80, many)) == args.replicas
                and len(served(mesh_enter, NODE1, MESH_PORT, many)) == args.replicas
            ),
            CONVERGE,
        )
        if not ready:
            raise SystemExit("the service never answered from every task both ways")
        with tempfile.TemporaryDirectory() as tmp:
            stop = str(Path(tmp) / "stop")
            loads = {
                "vip": load(vip_enter, vip, 80, stop),
                "mesh": load(mesh_enter, NODE1, MESH_PORT, stop),
            }
            try:
                time.sleep(1.0)  # requests flowing before the update starts
                started = time.monotonic()
                out = lab.ok("node1", "service", "update", "--env-add", "VERSION=2", "rollweb")
                result["update_seconds"] = round(time.monotonic() - started, 2)
                result["update_completed"] = "update completed" in out
                time.sleep(1.0)  # and after it ended
            finally:
                Path(stop).touch()
                outputs = {k: proc.communicate(timeout=60)[0] for k, proc in loads.items()}
        for way, output in outputs.items():
            result[way] = summary(output)
        result["goal_failed"] = GOAL_FAILED
        result["goal_met"] = all(result[k]["failed"] <= GOAL_FAILED for k in loads)
    finally:
        if client is not None:
            subprocess.run(["ip", "netns", "del", client], capture_output=True)
        labmod.down(name)
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"rolling_update-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
