"""End-to-end data plane benchmark, one fresh testbed, one run: container-to-container iperf3 TCP
(1 and 4 streams) and ping RTT (p50, p99; idle, and during the 1-stream transfer: "loaded") over
a same-host bridge, Linux kernel VXLAN, the
overlaynet VTEP between two agents, and overlaynet with a kernel VTEP as its peer, both
directions (issue 19), and an encrypted overlay between two agents (issue 18, `vtep_main --key`,
its MTU lowered by the sealing overhead; its ratio to the plain overlay is printed); prints a
table with each figure's ratio to kernel VXLAN and what each TCP transfer cost in CPU (issue 15:
busy share of all CPUs, its softirq part, the path's own processes, Gb/s per busy CPU;
benchmarks/cpuuse.py), writes JSON and a PNG chart to benchmarks/results/. `--cpu-latency US`
holds /dev/cpu_dma_latency for the run (0: idle CPUs poll instead of halting). Needs root;
namespaces are `onet-bdp-…`, removed afterwards.

    .venv/bin/python benchmarks/e2e_throughput.py [--seconds 3] [--pings 200] [--rounds 3]
    .venv/bin/python benchmarks/e2e_throughput.py --underlay-mtu 9000   # jumbo: overlay 8950
    .venv/bin/python benchmarks/e2e_throughput.py --cpu-latency 0       # idle CPUs never halt
    git worktree add --detach /tmp/base <commit>     # before/after in one run:
    .venv/bin/python benchmarks/e2e_throughput.py --variant old= --code old=/tmp/base

The kernel-VTEP rows are a static-peer overlay, as the README's interop recipe builds it: the
overlaynet side knows the kernel host, not the containers behind it (no FDB entries), the kernel
side has the usual all-zeros entry toward the overlaynet host and tx checksum offload off.

Each figure is the median of `--rounds` measurements taken round-robin over the data paths, so
a burst of load from elsewhere on the machine hits every path alike; ratios to kernel VXLAN are
what to compare (benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import secrets
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bench_args
import cpuuse

from overlaynet.dataplane.seal import SEAL_OVERHEAD
from overlaynet.lab.testbed import DEFAULT_UNDERLAY_MTU, Container, Host, Testbed, run

RESULTS = Path(__file__).parent / "results"
#: iperf3 seconds per measurement and pings per RTT sample: bounded so a run takes about a minute.
DEFAULT_SECONDS = 3
DEFAULT_PINGS = 200
#: Rounds over all paths; each figure is the median (odd, so it is one measured value).
DEFAULT_ROUNDS = 3
#: 10 ms between pings: a steady stream, far from flooding; drops must be zero.
PING_INTERVAL = "0.01"
FIGURES = (
    "tcp_1_gbps",
    "tcp_4_gbps",
    "ping_p50_ms",
    "ping_p99_ms",
    "loaded_ping_p50_ms",
    "loaded_ping_p99_ms",
)
LABELS = ("1 stream Gb/s", "4 streams Gb/s", "ping p50 ms", "ping p99 ms", "loaded p50 ms",
          "loaded p99 ms")  # fmt: skip
#: Seconds into the 1-stream transfer before the loaded pings start (slow start is over).
LOADED_PING_DELAY = 0.5
#: The encrypted overlay's row (issue 18: goal >= 0.5 of the plain overlay in the same run;
#: Docker's IPsec overlay reached 262 KB/s against 113 MB/s plain, moby#33133).
ENCRYPTED = "overlaynet encrypted"
KERNEL_PEER = "kernel VTEP"
#: UDP rows (issue 15): iperf3 -u with 1400-octet datagrams (the largest at MTU 1450), paced
#: at this share of the rate the same path sustained just before; the goal is loss < 1 %.
UDP_DATAGRAM = 1400
UDP_SHARE = 0.8
#: iperf3's socket buffers for the UDP rows: with the default (~200 KiB) the receiving iperf3
#: itself dropped 11-18 % at 80 % of the bridge's and the kernel VXLAN's rate on a busy machine.
UDP_BUFFER = "4M"
UDP_FIGURES = ("udp_max_gbps", "udp_max_loss_pct", "udp_80_gbps", "udp_80_loss_pct")
#: What each TCP transfer cost in CPU (issue 15: does a path's 1 stream leave CPU idle for its
#: 4 streams to use?), in % of one CPU (200 % on 2 cores): everything busy, its softirq part, the
#: path's own processes (VTEPs, iperf3 client and server), every other process and the kernel
#: threads (load from elsewhere shows there), and Gbit/s per fully busy CPU.
CPU_KEYS = ("cpu_busy_pct", "softirq_pct", "path_pct", "others_pct", "kernel_threads_pct",
            "gbps_per_busy_cpu")  # fmt: skip
CPU_FIGURES = tuple(f"tcp_{n}_{what}" for n in (1, 4) for what in CPU_KEYS)
CPU_LABELS = ("busy %", "softirq %", "path %", "other %", "kthread %", "Gb/s/CPU")
#: Where tuned's latency-performance profile and --cpu-latency write the most wake-up latency
#: (µs) the CPUs' idle states may have; held while the file stays open (PM QoS, kernel
#: Documentation/power/pm_qos_interface.rst), the old limit comes back when it is closed.
CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")
#: How long the iperf3 server gets to end after its client did (it serves one test, -1).
SERVER_EXIT_TIMEOUT = 5.0


@dataclass
class Scenario:
    name: str
    client: Container
    server: Container
    mtu: int = 1450
    vteps: list[tuple[Host, subprocess.Popen[bytes]]] = field(default_factory=list)
    #: A kernel VTEP host whose receive processing `measure` steers to the sending side's CPU
    #: for this path (`Testbed.steer_receive`), or back to where it arrives (mask 0).
    steer: tuple[Host, int] | None = None


def build(
    tb: Testbed,
    overlaynet_variants: dict[str, list[str]],
    code: dict[str, Path],
    *,
    interop: bool = True,
) -> list[Scenario]:
    """Hosts on one underlay: a bridge pair, a kernel VXLAN pair, one pair per VTEP variant
    and, with `interop`, per variant one overlaynet host with a kernel VTEP host as its peer
    (two scenarios: each direction)."""
    scenarios = []
    b1 = tb.add_host("b1", 21)
    cb1, cb2 = tb.add_container(b1, "cb1", 21), tb.add_container(b1, "cb2", 22)
    scenarios.append(Scenario("same-host bridge", cb1, cb2, tb.mtu))
    k1, k2 = tb.add_host("k1", 31), tb.add_host("k2", 32)
    ck1, ck2 = tb.add_container(k1, "ck1", 31), tb.add_container(k2, "ck2", 32)
    tb.kernel_vxlan(k1, [k2], interop=False)
    tb.kernel_vxlan(k2, [k1], interop=False)
    scenarios.append(Scenario("kernel VXLAN", ck1, ck2, tb.mtu))
    for i, (name, extra) in enumerate(overlaynet_variants.items()):
        n = 41 + 10 * i
        scenarios.append(overlay_pair(tb, name, extra, n, code.get(name)))
        sealed = "--key" in extra
        if not interop or sealed:  # never sealed toward a kernel VTEP: it cannot open them
            continue
        o, k = tb.add_host(f"o{n + 2}", n + 2), tb.add_host(f"k{n + 3}", n + 3)
        co, ck = tb.add_container(o, f"co{n + 2}", n + 2), tb.add_container(k, f"ck{n + 3}", n + 3)
        tb.kernel_vxlan(k, [o], interop=True)
        po = tb.start_vtep(o, [k], extra=tuple(extra), endpoints=False, code=code.get(name))
        # kernel → overlaynet: the kernel host's ACK processing (and the sends it clocks) on
        # its own sending CPU, not in the receiving VTEP's sendmsg on the other one, where it
        # reordered the host's segments (spurious retransmits: profiles/k2o-retransmits.md).
        # overlaynet → kernel keeps the default: steered, the kernel host's backlog overflows.
        scenarios.append(Scenario(f"{name} → {KERNEL_PEER}", co, ck, tb.mtu, [(o, po)], (k, 0)))
        scenarios.append(Scenario(f"{KERNEL_PEER} → {name}", ck, co, tb.mtu, [(o, po)],
                                  (k, 1 << PIN_SEND)))  # fmt: skip
    return scenarios


def overlay_pair(
    tb: Testbed, name: str, extra: list[str], n: int, code: Path | None = None
) -> Scenario:
    """Hosts o<n> and o<n+1> with a container each (10.0.0.<n>, .<n+1>) and `vtep_main EXTRA`
    between them; with --key the overlay's MTU is lowered by the sealing overhead."""
    h1, h2 = tb.add_host(f"o{n}", n), tb.add_host(f"o{n + 1}", n + 1)
    c1, c2 = tb.add_container(h1, f"co{n}", n), tb.add_container(h2, f"co{n + 1}", n + 1)
    sealed = "--key" in extra
    if sealed:
        # The managers give an encrypted overlay this MTU: sealed datagrams still fit 1500.
        mtu = str(tb.mtu - SEAL_OVERHEAD)
        for host, c, cname in ((h1, c1, f"co{n}"), (h2, c2, f"co{n + 1}")):
            tb.ip(host.ns, "link", "set", f"v{cname}"[:15], "mtu", mtu)
            tb.ip(c.ns, "link", "set", "eth0", "mtu", mtu)
        extra = [*extra, "--mtu", mtu]
    p1 = tb.start_vtep(h1, [h2], extra=tuple(extra), code=code)
    p2 = tb.start_vtep(h2, [h1], extra=tuple(extra), code=code)
    return Scenario(name, c1, c2, tb.mtu - SEAL_OVERHEAD if sealed else tb.mtu,
                    [(h1, p1), (h2, p2)])  # fmt: skip


def _received(out: str | bytes, what: str) -> dict[str, Any]:
    """The receiver's totals of an iperf3 -J run, or {} (said on stderr) when iperf3 gave
    up: under load it may answer {"error": ...} with no totals; that cell is NaN, the run goes
    on."""
    doc = json.loads(out) if out.strip() else {}
    received = doc.get("end", {}).get("sum_received")
    if not received:
        print(f"iperf3 gave no result for {what}: {doc.get('error', 'no output')}", file=sys.stderr)
        return {}
    return dict(received)


def iperf(
    tb: Testbed,
    s: Scenario,
    streams: int,
    seconds: int,
    *,
    pings: int = 0,
    affinity: tuple[str, ...] = (),
) -> tuple[float, list[float], dict[str, Any]]:
    """Gbit/s received, client → server; with `pings`, also the RTTs of that many pings sent
    alongside once the transfer runs (ping under load: a lone frame must not wait behind the
    bulk, issue 15); and the CPU the transfer used (`cpuuse.usage`: from the client's start to
    both iperf3s' end). `affinity`: ("C,S",), iperf3's -A for client CPU C and server CPU S."""
    server = tb.popen("ip", "netns", "exec", s.server.ns, "iperf3", "-s", "-1", "-B", s.server.ip)
    try:
        deadline = time.monotonic() + 10
        while ":5201" not in tb.exec(s.server.ns, "ss", "-ltn"):
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)
        pids = {f"vtep {host.name}": process.pid for host, process in s.vteps}
        pids["iperf3 server"] = server.pid
        # The report goes to a file, not a pipe: the client is left unreaped (a zombie keeps
        # its CPU times in /proc/<pid>/stat) while a -P 4 -J report could fill a pipe.
        with tempfile.TemporaryFile() as report:
            before = cpu_snapshot(pids)
            client = subprocess.Popen(
                ["ip", "netns", "exec", s.client.ns, "iperf3", "-c", s.server.ip, "-t",
                 str(seconds), "-P", str(streams), "-J",
                 *(a for v in affinity for a in ("-A", v))],
                stdout=report, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            rtts: list[float] = []
            try:
                if pings:
                    time.sleep(LOADED_PING_DELAY)
                    rtts = ping_rtts(tb, s, pings)
                if not wait_exited(client, seconds + 30):
                    raise subprocess.TimeoutExpired(client.args, seconds + 30)
                wait_exited(server, SERVER_EXIT_TIMEOUT)
                after = cpu_snapshot({**pids, "iperf3 client": client.pid})
            finally:
                Testbed.stop(client)
            report.seek(0)
            out = report.read()
        received = _received(out, f"{s.name}, {streams} stream(s)")
        gbps = float(received["bits_per_second"]) / 1e9 if received else math.nan
        return gbps, rtts, cpuuse.usage(before, after, gbps)
    finally:
        Testbed.stop(server)


def wait_exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    """Whether `process` ended within `timeout` s; it is left unreaped (WNOWAIT), so its
    /proc/<pid>/stat still holds the CPU time of all its threads until `Testbed.stop`."""
    deadline = time.monotonic() + timeout
    while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def cpu_snapshot(pids: dict[str, int]) -> cpuuse.Snapshot:
    """/proc/stat's CPU lines, the utime + stime of each named pid (threads included) and of
    every other process and kernel thread (this driver left out: it mostly waits)."""
    cpus = cpuuse.parse_proc_stat(Path("/proc/stat").read_text())
    spent = {name: cpuuse.parse_pid_stat(Path(f"/proc/{pid}/stat").read_text())
             for name, pid in pids.items()}  # fmt: skip
    mine = {*pids.values(), os.getpid()}
    others: dict[int, int] = {}
    kernel: dict[int, int] = {}
    comms: dict[int, str] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:  # ended between the listing and the read
            continue
        pid = int(entry.name)
        if cpuuse.is_kernel_thread(text):
            kernel[pid] = cpuuse.parse_pid_stat(text)
        else:
            others[pid] = cpuuse.parse_pid_stat(text)
            comms[pid] = cpuuse.parse_comm(text)
    return cpuuse.Snapshot(cpus, spent, others, kernel, comms)


def cpu_figures(n: int, used: dict[str, Any] | None) -> dict[str, Any]:
    """The CPU_FIGURES of an `n`-stream transfer (NaN when not measured) and, as `tcp_N_cpu`,
    everything `cpuuse.usage` said (each CPU's split, each process)."""
    if used is None:
        return {f"tcp_{n}_{k}": math.nan for k in CPU_KEYS}
    return {**{f"tcp_{n}_{k}": used[k] for k in CPU_KEYS}, f"tcp_{n}_cpu": used}


def udp_iperf(
    tb: Testbed, s: Scenario, seconds: int, bitrate: str, *, length: int
) -> dict[str, float]:
    """One `iperf3 -u -l LEN` transfer at `bitrate` ("0": as fast as the client can send):
    Gbit/s received and the receiver's loss in %. LEN is the largest datagram the path's MTU
    takes (1400 at MTU 1450; a sealed overlay's MTU is lower)."""
    server = tb.popen("ip", "netns", "exec", s.server.ns, "iperf3", "-s", "-1", "-B", s.server.ip)
    try:
        deadline = time.monotonic() + 10
        while ":5201" not in tb.exec(s.server.ns, "ss", "-ltn"):
            if time.monotonic() > deadline:
                raise RuntimeError("iperf3 server did not start")
            time.sleep(0.05)
        out = tb.exec(s.client.ns, "iperf3", "-c", s.server.ip, "-u", "-l", str(length),
                      "-w", UDP_BUFFER, "-b", bitrate, "-t", str(seconds), "-J",
                      timeout=seconds + 30)  # fmt: skip
        received = _received(out, f"{s.name}, UDP at {bitrate}")
        if not received:
            return {"gbps": math.nan, "loss_pct": math.nan}
        return {"gbps": float(received["bits_per_second"]) / 1e9,
                "loss_pct": float(received["lost_percent"])}  # fmt: skip
    finally:
        Testbed.stop(server)


def udp_figures(tb: Testbed, s: Scenario, seconds: int) -> dict[str, Any]:
    """UDP through the path (issue 15): first the rate it sustains (unlimited sending, what
    arrives), then a transfer at UDP_SHARE of that rate and its loss (goal < 1 %), with where
    that transfer's datagrams were lost (`udp_loss_sites`: `udp_80_drops`)."""
    length = min(UDP_DATAGRAM, s.mtu - 28)
    top = udp_iperf(tb, s, seconds, "0", length=length)
    before = udp_loss_sites(tb, s)
    paced = udp_iperf(tb, s, seconds, f"{int(top['gbps'] * UDP_SHARE * 1e9)}", length=length)
    after = udp_loss_sites(tb, s)
    drops = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    return {"udp_max_gbps": top["gbps"], "udp_max_loss_pct": top["loss_pct"],
            "udp_80_gbps": paced["gbps"], "udp_80_loss_pct": paced["loss_pct"],
            "udp_80_drops": drops}  # fmt: skip


def udp_loss_sites(tb: Testbed, s: Scenario) -> dict[str, int]:
    """The counters that say where a UDP transfer's datagrams were lost, read before and after
    it: the receiving iperf3's socket buffer (its namespace's UDP RcvbufErrors) and, on each
    VTEP host, the VTEP's own sockets and the TAP's transmit queue (`kernel_drops`). The
    run-long `vtep_drops` mix in every TCP transfer, so they cannot say this."""
    sites = {"server:udp_RcvbufErrors": _udp_snmp(tb, s.server.ns)["RcvbufErrors"]}
    for host, _process in s.vteps:
        sites.update({f"{host.name}:{k}": v for k, v in kernel_drops(tb, host).items()})
    return sites


def _udp_snmp(tb: Testbed, ns: str) -> dict[str, int]:
    """The Udp: counters of /proc/net/snmp in namespace `ns`."""
    snmp = tb.exec(ns, "cat", "/proc/net/snmp").splitlines()
    udp = [line.split()[1:] for line in snmp if line.startswith("Udp:")]
    return dict(zip(udp[0], map(int, udp[1]), strict=True))


def ping_rtts(tb: Testbed, s: Scenario, count: int) -> list[float]:
    """RTTs in ms of a steady ping (lost ones are missing)."""
    out = tb.exec(s.client.ns, "ping", "-c", str(count), "-i", PING_INTERVAL, "-W", "1",
                  s.server.ip, check=False, timeout=count * 0.05 + 30)  # fmt: skip
    return sorted(float(m) for m in re.findall(r"time=([\d.]+) ms", out))


def ping(tb: Testbed, s: Scenario, count: int) -> dict[str, float]:
    """RTT percentiles and loss of a steady ping on an idle path."""
    return rtt_figures(ping_rtts(tb, s, count), count, "ping")


def rtt_figures(rtts: list[float], count: int, prefix: str) -> dict[str, float]:
    """p50, p99 and loss of `count` pings that got `rtts` back."""
    if not rtts:
        raise RuntimeError(f"{prefix}: no ping got a reply")
    quantiles = statistics.quantiles(rtts, n=100, method="inclusive") if len(rtts) > 1 else rtts
    return {
        f"{prefix}_p50_ms": statistics.median(rtts),
        f"{prefix}_p99_ms": quantiles[min(98, len(quantiles) - 1)],
        f"{prefix}_loss": 1 - len(rtts) / count,
    }


#: CPUs of the sending side (iperf3 client, the VTEP of its host) and of the receiving side
#: with `--pin`: every path then places its busy threads the same way on a 2-core machine
#: (issue 19: agent<->agent itself swung 2.0-4.1 Gb/s between rounds of one quiet run).
PIN_SEND, PIN_RECEIVE = 0, 1


def pin(s: Scenario) -> None:
    """Pin `s`'s VTEP processes (all threads): the client host's to PIN_SEND, the others to
    PIN_RECEIVE; iperf3 gets its CPUs from `-A` (see `iperf`)."""
    for host, process in s.vteps:
        cpu = PIN_SEND if s.client in host.containers else PIN_RECEIVE
        run("taskset", "-a", "-p", "-c", str(cpu), str(process.pid))


def measure(
    tb: Testbed,
    s: Scenario,
    streams: set[int],
    seconds: int,
    pings: int,
    *,
    udp: bool,
    pinned: bool = False,
) -> dict[str, Any]:
    """One round of one path: TCP with 1 stream (and pings alongside: "loaded") and 4 streams
    (those in `streams`; the others NaN), idle ping, and with `udp` the iperf3 -u figures."""
    loaded = min(pings, int((seconds - LOADED_PING_DELAY) / 0.01) - 20)
    r: dict[str, Any] = {}
    if s.steer is not None:
        tb.steer_receive(*s.steer)
    if pinned:
        pin(s)
    affinity = (f"{PIN_SEND},{PIN_RECEIVE}",) if pinned else ()
    if 1 in streams:
        r["tcp_1_gbps"], rtts, used = iperf(tb, s, 1, seconds, pings=loaded, affinity=affinity)
        r.update(rtt_figures(rtts, loaded, "loaded_ping"))
        r.update(cpu_figures(1, used))
    else:
        r.update(tcp_1_gbps=math.nan, loaded_ping_p50_ms=math.nan, loaded_ping_p99_ms=math.nan,
                 loaded_ping_loss=math.nan)  # fmt: skip
        r.update(cpu_figures(1, None))
    if 4 in streams:
        r["tcp_4_gbps"], _, used = iperf(tb, s, 4, seconds, affinity=affinity)
        r.update(cpu_figures(4, used))
    else:
        r["tcp_4_gbps"] = math.nan
        r.update(cpu_figures(4, None))
    r.update(ping(tb, s, pings))
    if udp:
        r.update(udp_figures(tb, s, seconds))
    return r


def vtep_drops(tb: Testbed, s: Scenario) -> dict[str, int]:
    """Drop counters of the scenario's VTEPs (from their --stats file, via SIGUSR1)."""
    drops: dict[str, int] = {}
    for host, process in s.vteps:
        stats = tb.vtep_stats(host, process, 10)
        counters = [stats["counters"]] + [n["counters"] for n in stats["networks"].values()]
        for group in counters:
            for key, value in group.items():
                if "drop" in key or "error" in key:
                    drops[f"{host.name}:{key}"] = value
        drops.update({f"{host.name}:{k}": v for k, v in kernel_drops(tb, host).items() if v})
    return drops


def kernel_drops(tb: Testbed, host: Host) -> dict[str, int]:
    """Drops the VTEP cannot see: its UDP receive buffer and the TAP's transmit queue."""
    counters = _udp_snmp(tb, host.ns)
    link = json.loads(tb.exec(host.ns, "ip", "-s", "-j", "link", "show", "on-tap-tdp"))[0]
    return {
        "udp_RcvbufErrors": counters["RcvbufErrors"],
        "tap_tx_dropped": int(link["stats64"]["tx"]["dropped"]),
    }


def chart(results: dict[str, dict[str, Any]], path: Path) -> None:
    """Two panels: throughput bars (1 and 4 streams) and ping p50/p99 bars, per data path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = range(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for offset, key, label in ((-0.2, "tcp_1_gbps", "1 stream"), (0.2, "tcp_4_gbps", "4 streams")):
        left.bar([i + offset for i in x], [results[n][key] for n in names], 0.4, label=label)
    left.set_ylabel("iperf3 TCP, Gbit/s")
    rtts = (
        ("ping_p50_ms", "p50 idle"),
        ("ping_p99_ms", "p99 idle"),
        ("loaded_ping_p50_ms", "p50 under 1 stream"),
        ("loaded_ping_p99_ms", "p99 under 1 stream"),
    )
    for k, (key, label) in enumerate(rtts):
        offset = -0.3 + 0.2 * k
        right.bar([i + offset for i in x], [results[n][key] for n in names], 0.2, label=label)
    right.set_ylabel("ping RTT, ms")
    for ax in (left, right):
        ax.set_xticks(list(x), names, rotation=15)
        ax.legend()
    fig.suptitle("overlaynet data plane vs Linux kernel VXLAN (one run, container to container)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def _cell(value: float, kernel: float) -> str:
    """A figure with its ratio to kernel VXLAN; a figure the run did not measure (`--streams
    1` leaves out the 4-stream column) is a dash, not 'nan (nanx)'."""
    if math.isnan(value):
        return f"{'-':>20s}"
    return f"{value:>11.3f} ({value / kernel:5.2f}x)"


def table(results: dict[str, dict[str, Any]]) -> str:
    """Each figure with its ratio to kernel VXLAN."""
    kernel = results["kernel VXLAN"]
    head = "".join(f"{label:>20s}" for label in LABELS) + f"{'ping loss idle/loaded':>23s}"
    lines = [f"{'path':26s}{head}"]
    for name, r in results.items():
        cells = "".join(_cell(r[f], kernel[f]) for f in FIGURES)
        loss = f"{r['ping_loss']:.1%} / {r['loaded_ping_loss']:.1%}"
        lines.append(f"{name:26s}{cells}{loss:>23s}")
    return "\n".join(lines)


def brief(r: dict[str, Any]) -> dict[str, Any]:
    """A round's figures for the progress line: without `tcp_N_cpu`, the per-CPU and
    per-process detail that only the JSON needs."""
    return {k: v for k, v in r.items() if not (k.startswith("tcp_") and k.endswith("_cpu"))}


def cpu_table(results: dict[str, dict[str, Any]]) -> str:
    """What each TCP transfer cost in CPU, in % of one CPU (this machine has `os.cpu_count()`
    x 100 %): all CPUs' busy share, its softirq part, the path's own processes, the other
    processes, the kernel threads, Gb/s per busy CPU."""
    head = "".join(f"{f'{n}: {label}':>13s}" for n in (1, 4) for label in CPU_LABELS)
    of = 100 * (os.cpu_count() or 1)
    lines = [f"{f'CPU, % of {of}; streams:':26s}{head}"]
    for name, r in results.items():
        lines.append(f"{name:26s}" + "".join(f"{r[f]:>13.1f}" for f in CPU_FIGURES))
    return "\n".join(lines)


def udp_table(results: dict[str, dict[str, Any]]) -> str:
    """iperf3 -u: the rate each path sustained, and the loss at 80 % of it (goal < 1 %)."""
    lines = [f"{'path (iperf3 -u -l 1400)':26s}{'sustained Gb/s':>16s}{'loss':>8s}"
             f"{'at 80 %: Gb/s':>16s}{'loss':>8s}"]  # fmt: skip
    for name, r in results.items():
        lines.append(f"{name:26s}{r['udp_max_gbps']:>16.3f}{r['udp_max_loss_pct']:>7.2f}%"
                     f"{r['udp_80_gbps']:>16.3f}{r['udp_80_loss_pct']:>7.2f}%"
                     f"  dropped at 80 %, per round: {r.get('udp_80_drops')}")  # fmt: skip
    return "\n".join(lines)


def interop_ratios(
    results: dict[str, dict[str, Any]],
    samples: dict[str, list[dict[str, Any]]],
    variants: dict[str, list[str]],
) -> list[str]:
    """Issue 19's figure: each kernel-VTEP row's 1-stream throughput over the same variant's
    agent-to-agent row, per round (the goal is >= 1 in every round, both directions); stored in
    the results as `ratio_to_agents`."""
    lines = []
    for name in variants:
        for row in (f"{name} → {KERNEL_PEER}", f"{KERNEL_PEER} → {name}"):
            if row not in samples or name not in samples:
                continue
            per_round = [
                mixed["tcp_1_gbps"] / agents["tcp_1_gbps"]
                for mixed, agents in zip(samples[row], samples[name], strict=True)
                if agents["tcp_1_gbps"] > 0
            ]
            results[row]["ratio_to_agents"] = per_round
            shown = ", ".join(f"{r:.2f}" for r in per_round)
            lines.append(f"{row} / {name} (1 stream, per round): {shown}")
    return lines


@contextlib.contextmanager
def cpu_latency(us: int | None) -> Iterator[None]:
    """Hold /dev/cpu_dma_latency at `us` µs while the block runs (None: leave it alone), as
    tuned's latency-performance profile does: 0 keeps every idle CPU in its polling state, so a
    wake-up costs no trip through the hypervisor. Closing the file lifts the request."""
    if us is None:
        yield
        return
    with CPU_DMA_LATENCY.open("wb", buffering=0) as qos:
        qos.write(struct.pack("=i", us))  # a binary s32 (the kernel also takes hex text)
        yield


def idle_states() -> dict[str, Any]:
    """The cpuidle driver, governor, haltpoll's guest_halt_poll_ns and CPU 0's idle states
    (name, exit latency in µs): what an idle vCPU does here, for the results."""

    def read(path: str) -> str:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return ""

    base = "/sys/devices/system/cpu"
    states = sorted(Path(f"{base}/cpu0/cpuidle").glob("state*"))
    return {
        "driver": read(f"{base}/cpuidle/current_driver"),
        "governor": read(f"{base}/cpuidle/current_governor_ro")
        or read(f"{base}/cpuidle/current_governor"),
        "guest_halt_poll_ns": read("/sys/module/haltpoll/parameters/guest_halt_poll_ns"),
        "states": {read(f"{s}/name"): read(f"{s}/latency") for s in states},
    }


def idle_entries() -> dict[str, int]:
    """How often the CPUs entered each idle state since boot, summed over CPUs (cpuidle's
    `usage`): its growth over a run says whether --cpu-latency kept them out of halting."""
    entries: dict[str, int] = {}
    for state in Path("/sys/devices/system/cpu").glob("cpu[0-9]*/cpuidle/state*"):
        name = (state / "name").read_text().strip()
        entries[name] = entries.get(name, 0) + int((state / "usage").read_text())
    return entries


def _redacted(extra: list[str]) -> list[str]:
    """vtep_main arguments with every --key value hidden: the run's throwaway key stays out of
    the results all the same."""
    return ["ID=…" if i and extra[i - 1] == "--key" else a for i, a in enumerate(extra)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=bench_args.positive_int, default=DEFAULT_SECONDS)
    parser.add_argument("--pings", type=bench_args.positive_int, default=DEFAULT_PINGS)
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=ARGS", type=bench_args.variant,
        help="extra overlaynet variant: vtep_main arguments, e.g. 'naive=--no-batch'",
    )  # fmt: skip
    parser.add_argument(
        "--code", action="append", default=[], metavar="NAME=PATH",
        help="run variant NAME's vtep_main from the checkout PATH (a git worktree of a base)",
    )  # fmt: skip
    parser.add_argument("--rounds", type=bench_args.positive_int, default=DEFAULT_ROUNDS)
    parser.add_argument(
        "--underlay-mtu", type=int, default=DEFAULT_UNDERLAY_MTU,
        help="MTU of the underlay veths (9000: jumbo; overlay and containers get 50 less)",
    )  # fmt: skip
    parser.add_argument(
        "--streams",
        type=bench_args.stream_counts,
        default="1,4",
        help="iperf3 stream counts to measure: 1,4 (default), 1 or 4",
    )
    parser.add_argument(
        "--no-interop", dest="interop", action="store_false", default=True,
        help="leave out the overlaynet <-> kernel VTEP rows",
    )  # fmt: skip
    parser.add_argument(
        "--no-udp", dest="udp", action="store_false", default=True,
        help="leave out the iperf3 -u rows (rate sustained, loss at 80 %% of it)",
    )  # fmt: skip
    parser.add_argument(
        "--pin", action="store_true",
        help=f"pin each path's sending side (iperf3 client, its host's VTEP) to CPU {PIN_SEND} "
        f"and the receiving side to CPU {PIN_RECEIVE}, the same for every path",
    )  # fmt: skip
    parser.add_argument(
        "--cpu-latency", type=int, metavar="US", default=None,
        help="hold /dev/cpu_dma_latency at US microseconds for the whole run (0: idle CPUs "
        "poll, tuned's latency-performance); default: not held",
    )  # fmt: skip
    parser.add_argument(
        "--no-encrypted", dest="encrypted", action="store_false", default=True,
        help=f"leave out the {ENCRYPTED!r} row",
    )  # fmt: skip
    args = parser.parse_args()
    variants: dict[str, list[str]] = {"overlaynet": []}
    if args.encrypted:
        # A fresh AES-128 key for this run only (the managers hand out keys in a swarm).
        variants[ENCRYPTED] = ["--key", f"1={secrets.token_hex(16)}"]
    for spec in args.variant:
        name, _, extra = spec.partition("=")
        variants[name] = extra.split()
    code: dict[str, Path] = {}
    for spec in args.code:
        name, _, path = spec.partition("=")
        if name not in variants:
            parser.error(f"--code {spec}: no variant named {name!r}")
        code[name] = Path(path).resolve()
    streams: set[int] = args.streams
    load_before = os.getloadavg()
    samples: dict[str, list[dict[str, Any]]] = {}
    results: dict[str, dict[str, Any]] = {}
    print(f"CPU latency held: {'no' if args.cpu_latency is None else f'{args.cpu_latency} us'}"
          f"; idle: {idle_states()}")  # fmt: skip
    entries_before = idle_entries()
    with cpu_latency(args.cpu_latency), Testbed("onet-bdp-", underlay_mtu=args.underlay_mtu) as tb:
        scenarios = build(tb, variants, code, interop=args.interop)
        for s in scenarios:
            tb.exec(s.client.ns, "ping", "-c", "3", "-i", "0.2", s.server.ip)  # warm ARP/FDB
        for round_ in range(args.rounds):
            for s in scenarios:
                r = measure(tb, s, streams, args.seconds, args.pings, udp=args.udp,
                            pinned=args.pin)  # fmt: skip
                samples.setdefault(s.name, []).append(r)
                print(f"round {round_ + 1} {s.name}: {brief(r)}", file=sys.stderr)
        for s in scenarios:
            runs = samples[s.name]
            results[s.name] = {f: statistics.median(r[f] for r in runs)
                               for f in (*FIGURES, *CPU_FIGURES)}  # fmt: skip
            if args.udp:
                results[s.name].update({f: statistics.median(r[f] for r in runs)
                                        for f in UDP_FIGURES})  # fmt: skip
            results[s.name]["ping_loss"] = max(r["ping_loss"] for r in runs)
            results[s.name]["loaded_ping_loss"] = max(r["loaded_ping_loss"] for r in runs)
            results[s.name]["tcp_1_gbps_all"] = [r["tcp_1_gbps"] for r in runs]
            if args.udp:
                results[s.name]["udp_80_drops"] = [r["udp_80_drops"] for r in runs]
            if s.vteps:
                results[s.name]["vtep_drops"] = vtep_drops(tb, s)
    load_after = os.getloadavg()
    entries = {k: v - entries_before.get(k, 0) for k, v in idle_entries().items()}
    print(table(results))
    print(cpu_table(results))
    if args.udp:
        print(udp_table(results))
    drops = {name: r["vtep_drops"] for name, r in results.items() if "vtep_drops" in r}
    if ENCRYPTED in results:
        plain, sealed = results["overlaynet"], results[ENCRYPTED]
        ratios = {f: sealed[f] / plain[f] for f in ("tcp_1_gbps", "tcp_4_gbps") if plain[f] > 0}
        results[ENCRYPTED]["ratio_to_plain_overlay"] = ratios
        print(f"{ENCRYPTED} / overlaynet (same run): "
              + ", ".join(f"{f} {r:.2f}" for f, r in ratios.items()))  # fmt: skip
    for line in interop_ratios(results, samples, variants):
        print(line)
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; drops: {drops}")
    print(f"CPU latency held: {args.cpu_latency}; idle-state entries during the run: {entries}")
    RESULTS.mkdir(exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path, png_path = RESULTS / f"e2e-{stamp}.json", RESULTS / f"e2e-{stamp}.png"
    meta = {
        "seconds": args.seconds,
        "pings": args.pings,
        "rounds": args.rounds,
        "underlay_mtu": args.underlay_mtu,
        "udp": {"datagram": UDP_DATAGRAM, "share": UDP_SHARE} if args.udp else None,
        "variants": {name: _redacted(extra) for name, extra in variants.items()},
        "code": {name: str(path) for name, path in code.items()},
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "cpu_latency_us": args.cpu_latency,
        "cpu_count": os.cpu_count(),
        "cpuidle": idle_states(),
        "idle_entries": entries,
    }
    json_path.write_text(json.dumps({"meta": meta, "results": results, "samples": samples},
                                    indent=1))  # fmt: skip
    chart(results, png_path)
    print(f"wrote {json_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
