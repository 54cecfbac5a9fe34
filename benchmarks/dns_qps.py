"""Queries per second of one container's embedded DNS, measured with dnsperf on local names.

Builds one namespace (`onet-tdns-bench-<pid>`, lo only), serves 127.0.0.11:53 in it from this
process (pinned to CPU 0) and runs dnsperf inside it (pinned to CPU 1 when there is one): first
flat out, then at a fixed rate, and reports qps, the share answered and latency percentiles.
Bounded: two runs of `--seconds` each. Needs root.

    .venv/bin/python benchmarks/dns_qps.py [--seconds 4] [--rate 10000] [--json]
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import trio

from overlaynet.dns.records import DnsTable, NameRecord, Network, RecordKind
from overlaynet.dns.server import DnsServer

#: The issue's bar: a Python DNS server is reported around 10k qps, CoreDNS ~60k on one core.
BAR_QPS = 10_000
BAR_ANSWERED = 99.9
#: dnsperf's default outstanding queries (-q); enough to keep one core busy.
OUTSTANDING = 100
CONTAINERS = 50
_VERBOSE_LINE = re.compile(rb"^> (\S+) \S+ \S+ ([0-9.]+)$", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    """One dnsperf run, summarised."""

    mode: str
    seconds: float
    sent: int
    completed: int
    answered_pct: float
    qps: float
    avg_ms: float
    rcodes: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float


def build_table() -> DnsTable:
    """A user network with 50 containers, short ids, an alias on 3 containers."""
    table = DnsTable()
    table.set_network(Network("bench-net", "bench-net"))
    for i in range(CONTAINERS):
        address = ipaddress.IPv4Address(f"172.18.0.{i + 2}")
        table.add_record(NameRecord("bench-net", f"app{i}", address))
        table.add_record(NameRecord("bench-net", f"{i:012x}", address, RecordKind.SHORT_ID))
        if i < 3:
            table.add_record(NameRecord("bench-net", "web", address, RecordKind.ALIAS))
    table.attach("client", "bench-net")
    return table


def write_queries(path: Path) -> None:
    """Local names only: names, ids and the alias over A, AAAA (NODATA) and PTR."""
    lines = [f"app{i} A" for i in range(CONTAINERS)]
    lines += [f"{i:012x} A" for i in range(0, CONTAINERS, 5)]
    lines += ["web A"] * 5
    lines += [f"app{i} AAAA" for i in range(0, CONTAINERS, 5)]
    lines += [f"{i + 2}.0.18.172.in-addr.arpa PTR" for i in range(0, CONTAINERS, 5)]
    path.write_text("\n".join(lines) + "\n")


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(fraction * len(sorted_values)))
    return sorted_values[index]


def summarise(mode: str, seconds: float, output: bytes) -> Run:
    text = output.decode(errors="replace")

    def stat(label: str) -> float:
        found = re.search(rf"{label}:\s+([0-9.]+)", text)
        return float(found.group(1)) if found else 0.0

    rcodes: Counter[str] = Counter()
    latencies: list[float] = []
    for match in _VERBOSE_LINE.finditer(output):
        rcodes[match.group(1).decode()] += 1
        latencies.append(float(match.group(2)) * 1000)
    latencies.sort()
    sent = int(stat("Queries sent"))
    completed = int(stat("Queries completed"))
    return Run(
        mode=mode,
        seconds=seconds,
        sent=sent,
        completed=completed,
        answered_pct=100.0 * completed / sent if sent else 0.0,
        qps=stat("Queries per second"),
        avg_ms=stat(r"Average Latency \(s\)") * 1000,
        rcodes=dict(rcodes),
        p50_ms=percentile(latencies, 0.50),
        p90_ms=percentile(latencies, 0.90),
        p99_ms=percentile(latencies, 0.99),
        p999_ms=percentile(latencies, 0.999),
        max_ms=latencies[-1] if latencies else float("nan"),
    )


async def dnsperf(netns: str, queries: Path, seconds: float, rate: int | None, cpu: str) -> bytes:
    argv = ["nsenter", f"--net=/run/netns/{netns}"]
    if cpu:
        argv += ["taskset", "-c", cpu]
    argv += ["dnsperf", "-v", "-s", "127.0.0.11", "-d", str(queries), "-q", str(OUTSTANDING)]
    argv += ["-l", str(seconds), "-t", "2"]
    if rate is not None:
        argv += ["-Q", str(rate)]
    # Output to a file, not a pipe: reading a pipe here would take CPU from the server.
    with tempfile.TemporaryFile() as out:
        with trio.fail_after(seconds + 30):
            await trio.run_process(argv, stdout=out, stderr=subprocess.DEVNULL)
        out.seek(0)
        return out.read()


async def bench(netns: str, seconds: float, rate: int, dnsperf_cpu: str) -> list[Run]:
    server = DnsServer(build_table())
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        queries = Path(tmp) / "queries.txt"
        write_queries(queries)
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            await server.add_container("client", netns)
            flat_out = await dnsperf(netns, queries, seconds, None, dnsperf_cpu)
            runs.append(summarise("max", seconds, flat_out))
            paced = await dnsperf(netns, queries, seconds, rate, dnsperf_cpu)
            runs.append(summarise(f"{rate}/s", seconds, paced))
            nursery.cancel_scope.cancel()
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each dnsperf run")
    parser.add_argument("--rate", type=int, default=10_000, help="qps of the paced run")
    parser.add_argument("--json", action="store_true", help="print the runs as JSON")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("dns_qps: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    seconds = min(max(args.seconds, 1.0), 30.0)
    cpus = sorted(os.sched_getaffinity(0))
    dnsperf_cpu = ""
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
        dnsperf_cpu = str(cpus[1])
    netns = f"onet-tdns-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        runs = trio.run(bench, netns, seconds, args.rate, dnsperf_cpu)
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
    if args.json:
        print(json.dumps([asdict(r) for r in runs], indent=2))
    else:
        placement = (
            f"server on CPU {cpus[0]}, dnsperf on CPU {dnsperf_cpu}"
            if dnsperf_cpu
            else "server and dnsperf share one CPU"
        )
        print(f"embedded DNS, one container, local names, {OUTSTANDING} outstanding; {placement}")
        print(
            f"{'run':>9} {'qps':>9} {'answered':>9} {'avg ms':>7} {'p50':>7} {'p90':>7} {'p99':>7} "
            f"{'p99.9':>7} {'max':>7}  rcodes"
        )
        for r in runs:
            print(
                f"{r.mode:>9} {r.qps:>9.0f} {r.answered_pct:>8.2f}% {r.avg_ms:>7.3f} "
                f"{r.p50_ms:>7.3f} {r.p90_ms:>7.3f} {r.p99_ms:>7.3f} {r.p999_ms:>7.3f} "
                f"{r.max_ms:>7.3f}  {r.rcodes}"
            )
    best = runs[0]
    ok = best.qps >= BAR_QPS and best.answered_pct >= BAR_ANSWERED
    verdict = "meets" if ok else "MISSES"
    print(f"bar: >= {BAR_QPS} qps with >= {BAR_ANSWERED}% answered: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
