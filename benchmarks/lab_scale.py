"""Lab scale (issue 15): how long `lab up` and `lab down` of N hosts take, and what the idle lab
costs: each agent's and supervisor's RSS, PSS and USS (from /proc/PID/smaps_rollup) and the
agents' CPU while nothing happens.

    sudo .venv/bin/python benchmarks/lab_scale.py [--hosts 20] [--hosts 100 ...] [--idle 10] \
        [--spawn fork] [--spawn exec] [--swarm] [--cpu-window 5] [--profile-hosts N]

`--swarm` forms a swarm (node1 the manager) before the idle wait, so gossip runs; the CPU is
then given for the manager and the workers apart (the manager alone runs Raft).
`--profile-hosts N` gives the agents the gossip profile of an N-host lab (3: the small-lab
profile, to compare with the profile the lab's size picks, gossip/config.py LAB_TIERS).

Goals (issue 15): up of 100 hosts ≤ 20 s, down ≤ 5 s, an idle agent ≤ 25 MiB RSS, CPU of 100
idle agents ≤ 5 % of one core. RSS counts every page an agent maps, shared ones (the
interpreter, modules a fork server loaded once) included, so it over-states what N agents cost
together; PSS splits shared pages among their users (the sum over agents is what they cost),
USS is the pages no other process has.

Bounded: at most MAX_HOSTS hosts, `up` waits at most AGENT_READY_TIMEOUT per host, the idle
window is at most MAX_IDLE s; the lab is removed even when a step fails. Writes
benchmarks/results/lab_scale-<time>.json (and a .png when matplotlib is installed).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from pathlib import Path
from typing import Any

from overlaynet import lab as labmod
from overlaynet.gossip.config import LAB_HOSTS_ENV
from overlaynet.lab import lifecycle

RESULTS = Path(__file__).parent / "results"
# The idle window before memory is read: agents finish their start-up work (restore, first
# gossip rounds) within a few seconds; the brief asks for 10 s.
DEFAULT_IDLE = 10.0
MAX_IDLE = 60.0
# The CPU of idle agents is measured over this window, after the idle wait.
CPU_WINDOW = 5.0
MAX_CPU_WINDOW = 30.0
# Lab names of this benchmark: "id" and a random suffix, so runs never meet another's lab.
LAB_PREFIX = "id"
MIB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, int] | None:
    """RSS, PSS and USS of `pid` in bytes, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    kb: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            kb[parts[0][:-1]] = int(parts[1])
    uss = kb.get("Private_Clean", 0) + kb.get("Private_Dirty", 0)
    return {"rss": kb.get("Rss", 0) * 1024, "pss": kb.get("Pss", 0) * 1024, "uss": uss * 1024}


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def summary(rows: list[dict[str, int]]) -> dict[str, Any]:
    out: dict[str, Any] = {"count": len(rows)}
    for key in ("rss", "pss", "uss"):
        values = [r[key] for r in rows]
        if values:
            out[f"{key}_sum_mib"] = round(sum(values) / MIB, 1)
            out[f"{key}_median_mib"] = round(statistics.median(values) / MIB, 1)
            out[f"{key}_max_mib"] = round(max(values) / MIB, 1)
    return out


def processes(lab: str, hosts: list[str]) -> dict[str, list[int]]:
    agents = [p for h in hosts if (p := lifecycle.agent_pid(lab, h)) is not None]
    sups = [p for h in hosts if (p := lifecycle.supervisor_pid(lab, h)) is not None]
    found: dict[str, list[int]] = {"agents": agents, "supervisors": sups}
    # The fork server that stays as the supervisors' parent (none with --spawn exec).
    zygotes = {parent(p) for p in sups} - {None, 1, os.getpid()}
    found["zygotes"] = [z for z in zygotes if z is not None]
    return found


def parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def cpu_pct(before: dict[int, int | None], window: float) -> float:
    """% of one core the processes in `before` used since it was taken, over `window` s."""
    used = sum(
        t - b for p, b in before.items() if b is not None and (t := cpu_ticks(p)) is not None
    )
    return round(100 * used / CLK_TCK / window, 2)


def run_one(
    n: int, idle: float, spawn: str, swarm: bool = False, window: float = CPU_WINDOW
) -> dict[str, Any]:
    lab = LAB_PREFIX + secrets.token_hex(3)
    result: dict[str, Any] = {"hosts": n, "spawn": spawn, "lab": lab, "swarm": swarm}
    result["gossip_profile_hosts"] = os.environ.get(LAB_HOSTS_ENV, str(n))
    os.environ[lifecycle.SPAWN_ENV] = spawn
    try:
        t0 = time.monotonic()
        lab_hosts = labmod.up(lab, n, swarm_later=swarm)
        hosts = [h.name for h in lab_hosts]
        result["up_s"] = round(time.monotonic() - t0, 2)
        print(f"{n} hosts ({spawn}): up {result['up_s']} s", flush=True)
        if swarm:
            t0 = time.monotonic()
            labmod.form_swarm(lab, lab_hosts)
            result["swarm_s"] = round(time.monotonic() - t0, 2)
            print(f"{n} hosts: swarm formed in {result['swarm_s']} s", flush=True)
        time.sleep(idle)
        procs = processes(lab, hosts)
        for kind, pids in procs.items():
            rows = [m for p in pids if (m := memory(p)) is not None]
            result[kind] = summary(rows)
        manager = lifecycle.agent_pid(lab, hosts[0])
        before = {p: cpu_ticks(p) for p in procs["agents"]}
        sups_before = {p: cpu_ticks(p) for p in procs["supervisors"] + procs["zygotes"]}
        load_before = os.getloadavg()[0]
        time.sleep(window)
        result["agents_idle_cpu_pct_of_one_core"] = round(cpu_pct(before, window), 1)
        if manager in before:
            result["node1_cpu_pct"] = cpu_pct({manager: before[manager]}, window)
            rest = {p: b for p, b in before.items() if p != manager}
            result["other_agents_cpu_pct"] = cpu_pct(rest, window)
        result["supervisors_and_zygote_cpu_pct"] = cpu_pct(sups_before, window)
        result["cpu_window_s"] = window
        result["load_1min_before"] = round(load_before, 2)
        load = os.getloadavg()[0]
        result["load_1min"] = round(load, 2)
        print(json.dumps({k: v for k, v in result.items() if k != "lab"}), flush=True)
    finally:
        t0 = time.monotonic()
        labmod.down(lab)
        result["down_s"] = round(time.monotonic() - t0, 2)
        print(f"{n} hosts ({spawn}): down {result['down_s']} s", flush=True)
    return result


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [r for r in results if "up_s" in r and "agents" in r]
    if not done:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for spawn in sorted({r["spawn"] for r in done}):
        rows = [r for r in done if r["spawn"] == spawn]
        xs = [r["hosts"] for r in rows]
        ax1.plot(xs, [r["up_s"] for r in rows], "o-", label=f"lab up ({spawn})")
        ax1.plot(xs, [r["down_s"] for r in rows], "o--", label=f"lab down ({spawn})")
        for key in ("rss", "pss", "uss"):
            values = [r["agents"].get(f"{key}_median_mib", 0) for r in rows]
            ax2.plot(xs, values, "o-", label=f"{key} ({spawn})")
    ax1.set_xlabel("hosts")
    ax1.set_ylabel("seconds")
    ax1.legend()
    ax2.set_xlabel("hosts")
    ax2.set_ylabel("MiB per idle agent (median)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, action="append", help="lab size (repeatable; 20)")
    p.add_argument(
        "--spawn",
        choices=["fork", "exec"],
        action="append",
        help="fork: agents forked by the zygote (default); exec: an interpreter each "
        "(before the fork server); repeatable, to compare in one run",
    )
    p.add_argument("--idle", type=float, default=DEFAULT_IDLE, help="seconds idle before memory")
    p.add_argument("--swarm", action="store_true", help="form a swarm first (gossip runs)")
    p.add_argument(
        "--cpu-window", type=float, default=CPU_WINDOW, help="seconds the idle CPU is read over"
    )
    p.add_argument(
        "--profile-hosts",
        type=int,
        help="the agents' gossip profile is that of a lab of this many hosts (3: small-lab)",
    )
    a = p.parse_args()
    if a.profile_hosts is not None:
        if a.profile_hosts < 1:
            p.error("--profile-hosts must be positive")
        os.environ[LAB_HOSTS_ENV] = str(a.profile_hosts)
    window = min(max(a.cpu_window, 1.0), MAX_CPU_WINDOW)
    sizes = a.hosts or [20]
    if any(not 1 <= n <= lifecycle.MAX_HOSTS for n in sizes):
        p.error(f"--hosts must be between 1 and {lifecycle.MAX_HOSTS}")
    idle = min(max(a.idle, 0.0), MAX_IDLE)
    results = [
        run_one(n, idle, spawn, a.swarm, window) for spawn in a.spawn or ["fork"] for n in sizes
    ]
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = RESULTS / f"lab_scale-{stamp}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    if plot(results, out.with_suffix(".png")):
        print(f"wrote {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
