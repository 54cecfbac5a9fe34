"""Issue 15's benchmark matrix in one command: overlay MTU 1450 and a jumbo underlay (9000, overlay
8950) x RFC-wire and offload mode x 1 and 4 TCP streams, with the same-host bridge and Linux
kernel VXLAN at each MTU in the same run; ping idle and under a 1-stream load, iperf3 -u loss at
80 % of the rate the path sustains, and the CPU each TCP cell kept busy (e2e_throughput's
CPU_FIGURES). Prints one table (every cell's ratio to kernel VXLAN at the same MTU, the CPU busy
share of 1 and 4 streams), writes JSON and a PNG to benchmarks/results/. Needs root; namespaces
`onet-mx…`.

    .venv/bin/python benchmarks/matrix.py             # about 5 minutes
    .venv/bin/python benchmarks/matrix.py --quick     # one round of 2 s cells, about 1.5 minutes

Offload mode is `vtep_main --offload` between two overlaynet VTEPs; where this checkout's
vtep_main has no such option, or its VTEPs do not start or carry traffic, its cells are "n/a"
(the reason is printed and stored), and the rest of the matrix still runs.

The measuring is e2e_throughput's (imported: same testbed, same iperf3/ping/UDP procedure);
every path is measured `--rounds` times round-robin over both MTUs and each figure is the median.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_args
import e2e_throughput as e2e

from overlaynet.lab.testbed import DEFAULT_UNDERLAY_MTU, Testbed

#: Underlay MTUs measured: an Ethernet segment's and a jumbo one (overlay 1450 and 8950).
UNDERLAYS = {"1450": DEFAULT_UNDERLAY_MTU, "8950": 9000}
RFC, OFFLOAD = "RFC", "offload"
#: vtep_main arguments of each overlaynet mode.
MODES = {RFC: [], OFFLOAD: ["--offload"]}
BRIDGE, KERNEL = "same-host bridge", "kernel VXLAN"
PATHS = (BRIDGE, KERNEL, RFC, OFFLOAD)
#: Defaults bounded so the whole matrix takes about 5 minutes on the 2-core machines: 8 paths,
#: each about 18 s a round (1 and 4 streams, idle pings, two UDP transfers), 2 rounds (each
#: figure the mean of the two). --quick (one round of 2 s cells) took 65 s for 6 paths.
DEFAULT_SECONDS = 3
DEFAULT_PINGS = 200
DEFAULT_ROUNDS = 2
QUICK_SECONDS = 2
QUICK_PINGS = 100
#: Host number of the offload pair (build() numbers its variants from 41 in steps of 10).
OFFLOAD_HOST = 61
NA = "n/a"
FIGURES = (*e2e.FIGURES, *e2e.UDP_FIGURES, *e2e.CPU_FIGURES)
#: The CPU column: all CPUs' busy share during the 1- and 4-stream transfers, % of one CPU.
CPU_COLUMN = "CPU % 1/4 str."


def offload_supported() -> bool:
    """Whether this checkout's vtep_main has `--offload`."""
    out = subprocess.run(
        [sys.executable, "-m", "overlaynet.dataplane.vtep_main", "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    return "--offload" in out.stdout


def build(tb: Testbed, offload: bool) -> tuple[list[e2e.Scenario], str | None]:
    """Bridge, kernel VXLAN and RFC-mode pairs on `tb`, plus the offload pair when `offload`;
    returns the scenarios and, if offload mode could not be set up, why."""
    scenarios = e2e.build(tb, {RFC: MODES[RFC]}, {}, interop=False)
    if not offload:
        return scenarios, "vtep_main has no --offload"
    try:
        scenarios.append(e2e.overlay_pair(tb, OFFLOAD, MODES[OFFLOAD], OFFLOAD_HOST))
    except RuntimeError as error:
        return scenarios, f"offload VTEPs did not start: {error}"
    return scenarios, None


def ratio(value: float, kernel: float) -> float:
    return value / kernel if kernel and not math.isnan(value) else math.nan


def table(results: dict[str, dict[str, dict[str, Any]]], na: dict[str, str]) -> str:
    """One line per MTU and path; every figure with its ratio to kernel VXLAN at that MTU."""
    cols = (
        ("tcp_1_gbps", "1 stream Gb/s"),
        ("tcp_4_gbps", "4 streams Gb/s"),
        ("ping_p50_ms", "ping p50 ms"),
        ("ping_p99_ms", "ping p99 ms"),
        ("loaded_ping_p50_ms", "loaded p50 ms"),
        ("loaded_ping_p99_ms", "loaded p99 ms"),
        ("udp_max_gbps", "UDP Gb/s"),
    )
    head = "".join(f"{label:>18s}" for _, label in cols)
    lines = [f"{'MTU':5s} {'path':17s}{head}{'UDP loss @80%':>15s}{CPU_COLUMN:>16s}"]
    for mtu, paths in results.items():
        kernel = paths[KERNEL]
        for path in PATHS:
            if path not in paths:
                cells = "".join(f"{NA:>18s}" for _ in cols) + f"{NA:>15s}{NA:>16s}"
                lines.append(f"{mtu:5s} {path:17s}{cells}")
                continue
            r = paths[path]
            cells = "".join(f"{r[f]:>8.3f} ({ratio(r[f], kernel[f]):6.2f}x)" for f, _ in cols)
            cpu = f"{r['tcp_1_cpu_busy_pct']:.0f}/{r['tcp_4_cpu_busy_pct']:.0f}"
            lines.append(f"{mtu:5s} {path:17s}{cells}{r['udp_80_loss_pct']:>14.2f}%{cpu:>16s}")
    lines += [f"{path}: {NA}: {why}" for path, why in na.items()]
    return "\n".join(lines)


def _bars(paths: dict[str, dict[str, Any]], key: str, *, rel: bool) -> list[float]:
    """`key` per path in PATHS order (over kernel VXLAN's with `rel`); 0 for an n/a path."""
    base = paths[KERNEL][key] if rel else 1.0
    return [paths[p][key] / base if p in paths else 0.0 for p in PATHS]


def chart(results: dict[str, dict[str, dict[str, Any]]], path: Path) -> None:
    """Per MTU: TCP ratios to kernel VXLAN (1 and 4 streams) and ping p50/p99 idle and loaded
    per path; an n/a path has no bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(12, 4 * len(results)), squeeze=False)
    x = range(len(PATHS))
    for (left, right), (mtu, paths) in zip(axes, results.items(), strict=True):
        for offset, key, label in ((-0.2, "tcp_1_gbps", "1 stream"), (0.2, "tcp_4_gbps", "4")):
            left.bar([i + offset for i in x], _bars(paths, key, rel=True), 0.4, label=label)
        left.set_ylabel(f"MTU {mtu}: TCP / kernel VXLAN")
        keys = ("ping_p50_ms", "ping_p99_ms", "loaded_ping_p50_ms", "loaded_ping_p99_ms")
        for k, key in enumerate(keys):
            right.bar([i - 0.3 + 0.2 * k for i in x], _bars(paths, key, rel=False), 0.2,
                      label=key.removesuffix("_ms").replace("_", " "))  # fmt: skip
        right.set_ylabel(f"MTU {mtu}: ping RTT ms")
        for ax in (left, right):
            ax.set_xticks(list(x), [p if p in paths else f"{p} ({NA})" for p in PATHS])
            ax.legend()
    fig.suptitle("issue 15 matrix: overlaynet modes vs kernel VXLAN, one run")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def git(*args: str) -> str:
    """`git ARGS` in this checkout, stripped stdout ("" if git fails)."""
    out = subprocess.run(["git", "-C", str(Path(__file__).parent), *args], capture_output=True,
                         text=True, timeout=30, check=False)  # fmt: skip
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=bench_args.positive_int, default=DEFAULT_SECONDS)
    parser.add_argument("--pings", type=bench_args.positive_int, default=DEFAULT_PINGS)
    parser.add_argument("--rounds", type=bench_args.positive_int, default=DEFAULT_ROUNDS)
    parser.add_argument("--quick", action="store_true", help="2 s cells, 100 pings, one round")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.pings, args.rounds = QUICK_SECONDS, QUICK_PINGS, 1
    started = time.monotonic()
    offload = offload_supported()
    load_before = os.getloadavg()
    na: dict[str, str] = {}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {mtu: {} for mtu in UNDERLAYS}
    with contextlib.ExitStack() as stack:
        beds: dict[str, tuple[Testbed, list[e2e.Scenario]]] = {}
        for mtu, underlay in UNDERLAYS.items():
            tb = stack.enter_context(Testbed(f"onet-mx{mtu[0]}-", underlay_mtu=underlay))
            scenarios, why = build(tb, offload)
            if why:
                na[f"{OFFLOAD} at {mtu}"] = why
            beds[mtu] = tb, scenarios
            for s in scenarios:  # warm ARP/FDB
                tb.exec(s.client.ns, "ping", "-c", "3", "-i", "0.2", s.server.ip, check=False)
        for round_ in range(args.rounds):
            for mtu, (tb, scenarios) in beds.items():
                for s in scenarios:
                    if s.name == OFFLOAD and f"{OFFLOAD} at {mtu}" in na:
                        continue
                    try:
                        r = e2e.measure(tb, s, {1, 4}, args.seconds, args.pings, udp=True)
                    except (RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as e:
                        if s.name != OFFLOAD:
                            raise
                        # A mode under construction must not sink the rest of the matrix.
                        na[f"{OFFLOAD} at {mtu}"] = f"measuring failed: {e}"
                        samples[mtu].pop(s.name, None)
                        continue
                    samples[mtu].setdefault(s.name, []).append(r)
                    print(f"round {round_ + 1} MTU {mtu} {s.name}: {e2e.brief(r)}", file=sys.stderr)
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for mtu, (tb, scenarios) in beds.items():
            results[mtu] = {}
            for s in scenarios:
                runs = samples[mtu].get(s.name)
                if not runs:
                    continue
                figures = {f: statistics.median(r[f] for r in runs) for f in FIGURES}
                figures["ping_loss"] = max(r["ping_loss"] for r in runs)
                figures["loaded_ping_loss"] = max(r["loaded_ping_loss"] for r in runs)
                # Where each round's UDP transfer at 80 % lost datagrams (`e2e.udp_loss_sites`).
                figures["udp_80_drops"] = [r["udp_80_drops"] for r in runs]
                kernel = samples[mtu][KERNEL]
                figures["ratio_to_kernel"] = {
                    f: ratio(figures[f], statistics.median(r[f] for r in kernel)) for f in FIGURES
                }
                if s.vteps:
                    figures["vtep_drops"] = e2e.vtep_drops(tb, s)
                results[mtu][s.name] = figures
    load_after = os.getloadavg()
    print(table(results, na))
    losses = {f"{mtu} {p}": (r["ping_loss"], r["loaded_ping_loss"])
              for mtu, paths in results.items() for p, r in paths.items()}  # fmt: skip
    print(f"ping loss idle/loaded: {losses}")
    elapsed = time.monotonic() - started
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {elapsed:.0f} s")
    e2e.RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, png_path = e2e.RESULTS / f"matrix-{stamp}.json", e2e.RESULTS / f"matrix-{stamp}.png"
    meta = {
        "commit": git("rev-parse", "HEAD"),
        # Offload mode is being built: whether the measured data plane had uncommitted changes.
        "dataplane_uncommitted": bool(git("status", "--porcelain", "overlaynet/dataplane")),
        "seconds": args.seconds,
        "pings": args.pings,
        "rounds": args.rounds,
        "underlay_mtu": UNDERLAYS,
        "modes": MODES,
        "not_measured": na,
        "udp": {"datagram": e2e.UDP_DATAGRAM, "share": e2e.UDP_SHARE},
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "elapsed_s": elapsed,
    }
    json_path.write_text(json.dumps({"meta": meta, "results": results, "samples": samples},
                                    indent=1))  # fmt: skip
    chart(results, png_path)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
