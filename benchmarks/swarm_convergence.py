"""Swarm convergence on a fresh 3-host lab (the tutorial warns "it may take a few seconds"):

1. run→ping: time from `container run` returning on node2 (the agent's answer) to the first
   successful by-name ping from a container on node1 (a loop inside that container keeps
   trying, stamping the time of its first success; the hosts share one clock). The agent
   publishes the endpoint before it answers, so a figure can be negative: the name was
   pingable before `run` returned.
2. crash→withdrawn: time from `kill -9` of node3's agent to its endpoint leaving node1's
   endpoint table (the gossip's crash-to-dead time plus the withdrawal).

    sudo .venv/bin/python benchmarks/swarm_convergence.py [--trials 20] [--crashes 5]

Bars (issue #7): run→ping median ≤ 0.5 s over 20 trials; crash→withdrawn within the gossip's
crash-to-dead time (median ≤ 5 s with the lab's timings). Writes benchmarks/results/*.json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_args

from overlaynet import api
from overlaynet import lab as labmod
from overlaynet.paths import HostPaths

RESULTS = Path(__file__).parent / "results"
# Every wait is bounded: a trial that has not converged by then counts as a failure.
TRIAL_TIMEOUT = 15.0
# Between attempts the probing loop sleeps this long: the resolution of the figures.
PROBE_GAP = 0.01


def cli(lab: str, host: str, *args: str) -> str:
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab, "-H", host, *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def probe_loop(lab: str, name: str) -> subprocess.Popen[str]:
    """Inside alpine1 on node1: try a by-name ping until one succeeds, print when."""
    script = (
        f"while :; do if ping -c 1 -W 1 {name} >/dev/null 2>&1; then date +%s.%N; exit 0; fi; "
        f"sleep {PROBE_GAP}; done"
    )
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab, "-H", "node1", "exec", "probe"]
    argv += ["timeout", str(TRIAL_TIMEOUT), "sh", "-c", script]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def run_to_ping(lab: str, trials: int) -> list[float | None]:
    cli(lab, "node1", "network", "create", "-d", "overlay", "--attachable", "bench-net")
    # The probe loop needs GNU date's %N: the host image (the busybox alpine lacks it).
    cli(lab, "node1", "run", "-d", "--name", "probe", "--network", "bench-net", "host")
    out: list[float | None] = []
    for i in range(trials):
        name = f"target{i}"
        prober = probe_loop(lab, name)
        time.sleep(0.3)  # the loop is running (and failing) before the container exists
        # The moment `run` returns is the agent's answer (the CLI only prints the id after it).
        node2 = api.Client(HostPaths("node2", lab).socket)
        node2.call(
            "container.create",
            image="alpine",
            cmd=["top"],
            name=name,
            network="bench-net",
            start=True,
        )
        returned = time.time()
        stamp, _ = prober.communicate(timeout=TRIAL_TIMEOUT + 10)
        out.append(float(stamp) - returned if stamp.strip() else None)
        cli(lab, "node2", "rm", "-f", name)
        print(f"  trial {i + 1:2d}: {_fmt(out[-1])}", flush=True)
    return out


def endpoint_names(lab: str, host: str, net: str) -> set[str]:
    rows = api.Client(HostPaths(host, lab).socket).call("gossip.endpoints", network=net)
    return {r["name"] for r in rows}


def crash_to_withdrawn(lab: str, crashes: int) -> list[float | None]:
    out: list[float | None] = []
    for i in range(crashes):
        name = f"victim{i}"
        cli(lab, "node3", "run", "-d", "--name", name, "--network", "bench-net", "alpine", "top")
        deadline = time.monotonic() + TRIAL_TIMEOUT
        while name not in endpoint_names(lab, "node1", "bench-net"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never reached node1's endpoint table")
            time.sleep(0.05)
        pid = labmod.agent_pid(lab, "node3")
        assert pid is not None
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        took: float | None = None
        while time.monotonic() - killed < TRIAL_TIMEOUT:
            if name not in endpoint_names(lab, "node1", "bench-net"):
                took = time.monotonic() - killed
                break
            time.sleep(0.05)
        out.append(took)
        print(f"  crash {i + 1}: {_fmt(took)}", flush=True)
        labmod.up(lab, 3)
        cli(lab, "node3", "rm", "-f", name)
    return out


def _fmt(v: float | None) -> str:
    return "did not converge" if v is None else f"{v * 1000:.0f} ms"


def summary(values: list[float | None]) -> dict[str, Any]:
    ok = sorted(v for v in values if v is not None)
    if not ok:
        return {"trials": len(values), "converged": 0}
    return {
        "trials": len(values),
        "converged": len(ok),
        "median_s": round(statistics.median(ok), 4),
        "p90_s": round(ok[min(len(ok) - 1, int(0.9 * len(ok)))], 4),
        "min_s": round(ok[0], 4),
        "max_s": round(ok[-1], 4),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--trials", type=bench_args.positive_int, default=20)
    p.add_argument("--crashes", type=bench_args.positive_int, default=5)
    ns = p.parse_args()
    lab = "b" + secrets.token_hex(4)
    try:
        labmod.up(lab, 3, swarm=True)
        print(f"run→ping, {ns.trials} trials:")
        ping = summary(run_to_ping(lab, ns.trials))
        print(f"crash→withdrawn, {ns.crashes} crashes:")
        crash = summary(crash_to_withdrawn(lab, ns.crashes))
    finally:
        labmod.down(lab)
    result = {"run_to_ping": ping, "crash_to_withdrawn": crash, "load": os.getloadavg()}
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"swarm_convergence-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
