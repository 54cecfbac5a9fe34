"""Services on a 3-host swarm lab: convergence, the VIP's spread, and the routing mesh's cost.

1. `service create --replicas 10 --detach` of overlaynet/web, timed until all 10 tasks run and
   a client task reaches all 10 through the VIP (issue 13's goal: <= 2 s).
2. Spread: `--requests` connections through the VIP, counted per task (max/min).
3. Requests/s through the routing mesh (a published port on a node's underlay address, from a
   namespace that is not a node) vs straight to one task's overlay address from a client task:
   each `--requests` sequential HTTP/1.0 requests (issue 13's goal: ratio >= 0.8). The web
   image answers through a CGI shell script per request, which dominates either path's time:
   the ratio says the mesh adds little, not what the kernel path costs.
Bounded: one lab, a fixed number of requests, each with a 5 s timeout. Needs root. Results go
to benchmarks/results/services-<time>.json.

    .venv/bin/python benchmarks/services.py [--requests 300] [--converge-only]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import bench_args

from overlaynet import lab as labmod
from overlaynet.paths import HostPaths

# The lab helpers the integration tests use (the repository root, not an installed package).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.integration.labs import Lab

# A client task runs this in its namespace: N requests, one connection each, then when (wall
# clock) and by whom each was served and the total seconds (the overlaynet/web image names its
# task in `Name:`): a task's first answer is timed to the request, not to the batch's end.
CLIENT = """
import socket, sys, time
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.monotonic()
for _ in range(n):
    s = socket.create_connection((addr, port), timeout=5)
    s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    name = [l for l in data.decode().splitlines() if l.startswith("Name: ")]
    print(time.time(), name[0][6:] if name else "?", flush=True)
print("SECONDS", time.monotonic() - t0)
"""
# The convergence's client: one process asking the VIP over and over from the moment the
# service exists (no interpreter started per batch, no pause between batches: those made the
# figure up to 0.5 s later than the VIP's last backend), printing when each task first answered;
# it ends once `n` tasks have answered or after `limit` seconds. A connection that is not
# answered within CONNECT_S (a VIP with no backend yet) is given up and tried again.
WATCH = """
import socket, sys, time
addr, port, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
seen = set()
end = time.monotonic() + limit
while len(seen) < n and time.monotonic() < end:
    try:
        s = socket.create_connection((addr, port), timeout=0.3)
        s.settimeout(2)
        s.sendall(b"GET / HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        s.close()
    except OSError:
        time.sleep(0.01)
        continue
    name = [l for l in data.decode().splitlines() if l.startswith("Name: ")]
    if name and name[0] not in seen:
        seen.add(name[0])
        print(time.time(), name[0][6:], flush=True)
"""
WATCH_LIMIT_S = 60.0
GOAL_CONVERGE_S = 2.0
GOAL_RATIO = 0.8
REPLICAS = 10


def run_client(nsenter: list[str], addr: str, port: int, n: int) -> tuple[Counter[str], float]:
    served, seconds = run_client_timed(nsenter, addr, port, n)
    return Counter(name for _, name in served), seconds


def run_client_timed(
    nsenter: list[str], addr: str, port: int, n: int
) -> tuple[list[tuple[float, str]], float]:
    """(when and by whom each request was answered, the total seconds)."""
    out = subprocess.run(
        [*nsenter, "python3", "-c", CLIENT, addr, str(port), str(n)],
        capture_output=True,
        text=True,
        timeout=5 * n + 30,
        check=False,
    ).stdout.split("\n")
    seconds = float(next((line.split()[1] for line in out if line.startswith("SECONDS")), "nan"))
    served = [
        (float(at), name)
        for at, _, name in (line.partition(" ") for line in out)
        if at and at != "SECONDS"
    ]
    return served, seconds


def pid_of(lab: Lab, host: str, container: str) -> int:
    return int(lab.ok(host, "inspect", "--format", "{{.State.Pid}}", container).strip())


def task_on(lab: Lab, service: str) -> tuple[str, str]:
    for host in ("node1", "node2", "node3"):
        names = [
            n
            for n in lab.ok(host, "ps", "--format", "{{.Names}}").split()
            if n.startswith(service + ".")
        ]
        if names:
            return host, names[0]
    raise RuntimeError(f"no task of {service}")


# The agent's log lines that mark a convergence's steps (agent/tasks.py, agent/lb.py).
TIMELINE_MSGS = (
    "assignment",
    "task accepted",
    "task created",
    "task started",
    "task running",
    "vips held",
    "vip backends",
)


def timeline(lab_name: str, t0: float) -> dict[str, dict[str, list[float]]]:
    """Per host, per step: the seconds after t0 (wall clock) its log lines were written."""
    out: dict[str, dict[str, list[float]]] = {}
    for host in ("node1", "node2", "node3"):
        steps: dict[str, list[float]] = {}
        log_path = HostPaths(host, lab_name).log_file
        for line in log_path.read_text(errors="replace").splitlines():
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if not isinstance(doc, dict) or doc.get("ts", 0) < t0:
                continue
            msg = doc.get("msg")
            if msg not in TIMELINE_MSGS:
                continue
            if msg == "task running" and not str(doc.get("task", "")).startswith("web."):
                continue
            if msg == "vip backends" and doc.get("proto") != "tcp":
                continue
            if msg == "vip backends":
                msg = f"vip backends {doc.get('vip')}:{doc.get('port')} -> {doc.get('backends')}"
            steps.setdefault(str(msg), []).append(round(doc["ts"] - t0, 3))
        out[host] = steps
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=bench_args.positive_int, default=300)
    p.add_argument(
        "--converge-only", action="store_true", help="measure the convergence only (part 1)"
    )
    p.add_argument(
        "--timeline",
        action="store_true",
        help="print each host's steps of the convergence (from the agents' logs)",
    )
    p.add_argument(
        "--lab-prefix",
        default="b",
        help="the lab's name prefix (engineers sharing a machine keep their labs apart)",
    )
    ns = p.parse_args()
    name = ns.lab_prefix + secrets.token_hex(4)
    result: dict[str, object] = {"requests": ns.requests}
    try:
        labmod.up(name, 3, swarm=True)
        lab = Lab(name)
        lab.ok("node1", "network", "create", "-d", "overlay", "bench")
        lab.ok(
            "node1",
            "service",
            "create",
            "--name",
            "cl",
            "--network",
            "bench",
            "alpine",
            "sleep",
            "100000",
        )
        host, cl = task_on(lab, "cl")
        nsenter = ["nsenter", "-t", str(pid_of(lab, host, cl)), "-n"]

        t0 = time.monotonic()
        t0_wall = time.time()
        lab.ok(
            "node1", "service", "create", "--name", "web", "--replicas", str(REPLICAS),
            "--network", "bench", "--publish", "8080:80", "--detach", "overlaynet/web",
        )  # fmt: skip
        result["create_returned_s"] = round(time.monotonic() - t0, 2)
        vip = re.findall(r'"Addr": "([\d.]+)/\d+"', lab.ok("node1", "service", "inspect", "web"))
        bench_vip = vip[-1] if len(vip) > 1 else vip[0]
        first_seen: dict[str, float] = {}
        watch = subprocess.run(
            [*nsenter, "python3", "-c", WATCH, bench_vip, "80", str(REPLICAS), str(WATCH_LIMIT_S)],
            capture_output=True,
            text=True,
            timeout=WATCH_LIMIT_S + 30,
            check=False,
        ).stdout.split("\n")
        for at, _, task in (line.partition(" ") for line in watch):
            if at:
                first_seen.setdefault(task, round(float(at) - t0_wall, 2))
        ok = len(first_seen) >= REPLICAS
        # Converged when the last task first answered (the client's clock is the host's).
        converge = max(first_seen.values(), default=time.monotonic() - t0)
        result["converge_s"] = round(converge, 2) if ok else None
        result["converge_batch_s"] = round(time.monotonic() - t0, 2)
        result["converge_goal_s"] = GOAL_CONVERGE_S
        result["client_on"] = host
        result["first_seen_s"] = sorted(first_seen.values())
        if ns.timeline:
            result["timeline"] = timeline(name, t0_wall)
        result["load_average"] = list(os.getloadavg())

        if not ns.converge_only:
            counts, _ = run_client(nsenter, bench_vip, 80, ns.requests)
            result["spread"] = dict(counts)
            result["spread_max_min"] = round(max(counts.values()) / min(counts.values()), 2)

            # Straight to one task (its overlay address, as tasks.web answers), from the client.
            dig = [*nsenter, "dig", "+short", "tasks.web", "@127.0.0.11"]
            task_ip = subprocess.run(
                dig, capture_output=True, text=True, check=True
            ).stdout.split()[0]
            _, direct_s = run_client(nsenter, task_ip, 80, ns.requests)
            # Through the routing mesh: a namespace on the underlay, node1's published port.
            client_ns = labmod.add_client(name)  # removed by lab down
            _, mesh_s = run_client(
                ["ip", "netns", "exec", client_ns], "192.168.0.11", 8080, ns.requests
            )
            result["direct_rps"] = round(ns.requests / direct_s, 1)
            result["mesh_rps"] = round(ns.requests / mesh_s, 1)
            result["mesh_direct_ratio"] = round(direct_s / mesh_s, 2)
            result["ratio_goal"] = GOAL_RATIO
    finally:
        labmod.down(name)
    out_dir = Path(__file__).parent / "results"
    out_dir.mkdir(exist_ok=True)
    path = out_dir / f"services-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print(f"written to {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
