"""The live web view under a bigger lab (issue 17's load bar): a swarm lab of N hosts (20 by
default, at most 50), `--per-host` containers each (4 by default: 50 hosts, 200 containers) on
one overlay, `overlaynet lab ui` serving it and a headless chromium page left open on it.

Measured, over a bounded window each:
- idle: the server's CPU (% of one core, from /proc/PID/stat) and the agents' total CPU while
  nothing changes (the watchers' long-polls and the 10 s safety round are all that runs);
- churn: the same while one container is stopped and started again every few seconds
  (`--churn` cycles), so the event stream carries patches;
- the page's JS heap and DOM node count (Chrome DevTools' Performance.getMetrics, after a
  forced garbage collection), sampled every `--sample` seconds across the whole run: a page
  that grows without bound shows here.

    sudo .venv/bin/python benchmarks/web_load.py [--hosts 20] [--per-host 4] [--idle 120] \
        [--churn 10]

Issue 17's figure: `--hosts 50 --per-host 4 --idle 300 --churn 100` (the page open >= 10 min).

Bars (issue 17): the server under 20 % of one core while idle; the page's heap flat (its last
sample within a few MiB of its first) while left open. Writes benchmarks/results/web_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import bench_args

from overlaynet import lab as labmod

RESULTS = Path(__file__).parent / "results"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# The machine has 2 cores shared with others: 50 agents is the most this script builds.
MAX_HOSTS = 50
# Every window is bounded (seconds), whatever the flags say.
MAX_WINDOW = 600.0
# Containers per host at most (issue 17 asks 200 on 50 hosts: 4 each).
MAX_PER_HOST = 8
# `run`s in flight at once: the agents start them in parallel, the 2 shared cores set the pace.
PARALLEL_STARTS = 4
# Rounds of swarm joins (each goes on from the first host not yet joined) and the pause between:
# a manager that timed out a join is given a moment before the next.
JOIN_ATTEMPTS = 20
JOIN_PAUSE = 2.0
# A churn cycle: stop, then start, one container, then this long for the page to follow.
CHURN_GAP = 3.0
# The page must show every host within this long of loading (a bound, not a figure).
PAGE_BOUND = 120.0
TICKS = os.sysconf("SC_CLK_TCK")


def cli(lab: str, host: str, *args: str) -> str:
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab, "-H", host, *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{host}: {' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_percent(pids: list[int], seconds: float, during: Any = None) -> float:
    """% of one core the processes used over `seconds` (running `during()` in between)."""
    start = sum(cpu_seconds(p) for p in pids)
    t0 = time.monotonic()
    if during is not None:
        during()
    remaining = seconds - (time.monotonic() - t0)
    if remaining > 0:
        time.sleep(remaining)
    used = sum(cpu_seconds(p) for p in pids) - start
    return round(100.0 * used / (time.monotonic() - t0), 2)


def page_metrics(driver: Any) -> dict[str, float]:
    """What the page holds after a garbage collection: growth here is retained, not pending."""
    driver.execute_cdp_cmd("HeapProfiler.collectGarbage", {})
    metrics = driver.execute_cdp_cmd("Performance.getMetrics", {})["metrics"]
    by_name = {m["name"]: m["value"] for m in metrics}
    return {
        "js_heap_mib": round(by_name["JSHeapUsedSize"] / 2**20, 2),
        "dom_nodes": by_name["Nodes"],
    }


def form_swarm(lab: str, hosts: list[labmod.LabHost]) -> int:
    """lab.form_swarm, again while a join times out; how many timed out.

    Past ~33 workers node1's manager, on this loaded 2-core machine, at times answers a join
    later than the agent's 5 s bound (measured: joins take 0.1 s at 10 workers, 0.4 s at 30,
    then some time out); form_swarm skips hosts already joined, so it goes on where it failed."""
    for attempt in range(JOIN_ATTEMPTS):
        try:
            labmod.form_swarm(lab, hosts)
            return attempt
        except Exception as e:  # the agent's Unavailable, whatever its module
            print(f"swarm join: {e}; again", file=sys.stderr, flush=True)
            time.sleep(JOIN_PAUSE)
    raise RuntimeError(f"the swarm did not form in {JOIN_ATTEMPTS} rounds")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--hosts", type=bench_args.int_between(2, MAX_HOSTS), default=20)
    p.add_argument(
        "--per-host",
        type=bench_args.int_between(1, MAX_PER_HOST),
        default=4,
        help="containers per host",
    )
    p.add_argument(
        "--idle", type=bench_args.positive_float, default=120.0, help="idle window, seconds"
    )
    p.add_argument("--churn", type=bench_args.positive_int, default=10, help="stop/start cycles")
    p.add_argument(
        "--sample", type=bench_args.positive_float, default=10.0, help="page metrics every (s)"
    )
    ns = p.parse_args()
    hosts = max(2, min(ns.hosts, MAX_HOSTS))
    per_host = max(1, min(ns.per_host, MAX_PER_HOST))
    idle = min(ns.idle, MAX_WINDOW)
    churn = max(0, min(ns.churn, int(MAX_WINDOW / CHURN_GAP)))

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    lab = "wl" + secrets.token_hex(3)
    result: dict[str, Any] = {
        "hosts": hosts,
        "containers": hosts * per_host,
        "idle_window_s": idle,
        "churn_cycles": churn,
    }
    ui: subprocess.Popen[str] | None = None
    driver: Any = None
    try:
        t0 = time.monotonic()
        built = labmod.up(lab, hosts)
        result["lab_up_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        result["swarm_join_timeouts"] = form_swarm(lab, built)
        result["swarm_formed_s"] = round(time.monotonic() - t0, 1)
        names = [h.name for h in built]
        cli(lab, names[0], "network", "create", "-d", "overlay", "--attachable", "loadnet")
        t0 = time.monotonic()
        runs = [(h, f"c{i}-{j}") for i, h in enumerate(names) for j in range(per_host)]
        run_args = ["--network", "loadnet", "alpine", "top"]
        with ThreadPoolExecutor(PARALLEL_STARTS) as pool:
            list(
                pool.map(lambda hc: cli(lab, hc[0], "run", "-d", "--name", hc[1], *run_args), runs)
            )
        result["containers_started_s"] = round(time.monotonic() - t0, 1)
        churner = runs[-1]
        argv = [sys.executable, "-m", "overlaynet", "lab", "ui", "--lab", lab, "--port", "0"]
        ui = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert ui.stdout is not None
        match = re.search(r"http://127\.0\.0\.1:\d+/", ui.stdout.readline())
        if not match:
            raise RuntimeError("lab ui printed no URL")
        options = Options()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        driver.execute_cdp_cmd("Performance.enable", {})
        t0 = time.monotonic()
        driver.get(match.group(0))
        # The summary line, not the tables: past 8 hosts a host's tables are drawn only when
        # its section is opened.
        summary = "return document.getElementById('summary').textContent"

        def all_ready(d: Any) -> bool:
            m = re.match(r"(\d+)/\d+ hosts Ready · (\d+)/", d.execute_script(summary))
            return m is not None and (int(m[1]), int(m[2])) >= (hosts, hosts * per_host)

        WebDriverWait(driver, PAGE_BOUND, poll_frequency=0.2).until(all_ready)
        result["page_all_ready_s"] = round(time.monotonic() - t0, 2)
        agents = [pid for h in names if (pid := labmod.agent_pid(lab, h)) is not None]
        samples: list[dict[str, float]] = [{"t": 0.0, **page_metrics(driver)}]
        result["page_samples"] = samples  # the same list: an interrupted run keeps its samples
        started = time.monotonic()

        last = [time.monotonic()]

        def sample_until(end: float) -> None:
            # A sample forces a GC of the whole page (seconds on a 30-host page on this loaded
            # machine): taken every --sample seconds, not on every churn cycle.
            while time.monotonic() < end:
                time.sleep(min(ns.sample, max(0.0, end - time.monotonic())))
                if time.monotonic() - last[0] >= ns.sample:
                    last[0] = time.monotonic()
                    now = round(last[0] - started, 1)
                    samples.append({"t": now, **page_metrics(driver)})

        agents_before = sum(cpu_seconds(p) for p in agents)
        t_idle = time.monotonic()
        result["server_cpu_idle_pct"] = cpu_percent(
            [ui.pid], idle, lambda: sample_until(time.monotonic() + idle)
        )
        used = sum(cpu_seconds(p) for p in agents) - agents_before
        result["agents_cpu_idle_pct_total"] = round(100 * used / (time.monotonic() - t_idle), 2)

        def churn_cycles() -> None:
            for _ in range(churn):
                cli(lab, churner[0], "stop", "-t", "0", churner[1])
                cli(lab, churner[0], "start", churner[1])
                sample_until(time.monotonic() + CHURN_GAP)

        if churn:
            result["server_cpu_churn_pct"] = cpu_percent([ui.pid], 0.0, churn_cycles)
        with urllib.request.urlopen(match.group(0) + "api/stats", timeout=10) as answer:
            stats = json.loads(answer.read())
        result["server_stats"] = {
            k: stats.get(k)
            for k in ("watch_calls", "watch_changes", "asks_fed", "safety_rounds", "calls")
        }
        result["page_open_s"] = round(time.monotonic() - started, 1)
        heaps = [s["js_heap_mib"] for s in samples]
        result["page_heap_first_last_max_mib"] = [heaps[0], heaps[-1], max(heaps)]
        result["page_dom_nodes_first_last"] = [samples[0]["dom_nodes"], samples[-1]["dom_nodes"]]
    finally:
        # Whatever ran is written, also when interrupted (Ctrl-C, `timeout -s INT`).
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "web_load.json").write_text(json.dumps(result, indent=2) + "\n")
        if driver is not None:
            driver.quit()
        if ui is not None:
            ui.send_signal(signal.SIGINT)
            try:
                ui.wait(timeout=10)
            except subprocess.TimeoutExpired:
                ui.kill()
                ui.wait()
        labmod.down(lab)
    print(json.dumps({k: v for k, v in result.items() if k != "page_samples"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
