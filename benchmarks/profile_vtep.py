"""Where a VTEP's time goes on one iperf3 path, measured four ways at once: py-spy samples of the
sending VTEP (top-N table by own and total time), an underlay capture (datagram sizes, outer UDP
checksums, data segments per ACK, ACK gaps), `nstat` deltas in every namespace on the path, and
the VTEP's own counters. Writes a Markdown report to benchmarks/profiles/. Needs root and py-spy
(`.venv/bin/pip install py-spy`); namespaces are `onet-bpf-…`, removed afterwards.

    .venv/bin/python benchmarks/profile_vtep.py --path o2k --no-fdb   # issue 19 as reported
    .venv/bin/python benchmarks/profile_vtep.py --path o2k            # kernel MAC in the FDB
    .venv/bin/python benchmarks/profile_vtep.py --path a2a --streams 4

Paths: `o2k` overlaynet container → kernel VTEP container, `k2o` the reverse, `a2a` between two
overlaynet hosts. The profiled VTEP is the overlaynet one that sends the bulk (for `k2o`, the
receiving one). `--no-fdb` leaves the kernel side's MAC out of the overlaynet FDB (a static-peer
overlay: the agent knows the peer host, not its endpoints); `--vtep-arg` passes options to
every `vtep_main` (e.g. `--vtep-arg=--learning`).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_args

from overlaynet.lab.testbed import Container, Host, Testbed

PROFILES = Path(__file__).parent / "profiles"
#: Samples per second: enough for a stable top 20 in a few seconds, little enough that py-spy's
#: own CPU (on a 2-core machine) barely moves the figure.
SAMPLE_RATE = 200
#: Datagrams captured on the underlay: a few hundred ACK round trips, a second of traffic at most.
CAPTURE_PACKETS = 6000
#: Snap length: outer headers (14 + 20 + 8), VXLAN 8, inner Ethernet, IPv4, TCP with options.
SNAPLEN = 160
#: nstat counters worth showing (absolute deltas over the run; zero ones are left out).
NSTAT_KEYS = (
    "UdpInDatagrams", "UdpOutDatagrams", "UdpInErrors", "UdpRcvbufErrors", "UdpSndbufErrors",
    "UdpInCsumErrors", "TcpInSegs", "TcpOutSegs", "TcpRetransSegs", "TcpExtTCPBacklogDrop",
    "TcpExtTCPOFOQueue", "TcpExtTCPSACKReorder", "TcpExtTCPDelivered", "TcpExtDelayedACKs",
    "TcpExtTCPHPAcks", "TcpExtTCPPureAcks", "TcpExtTCPLossProbes", "IpExtInCsumErrors",
    "TcpExtTCPRcvCoalesce", "TcpExtTCPOrigDataSent",
)  # fmt: skip


def revision() -> str:
    """The commit the report describes (the working tree may hold uncommitted changes)."""
    git = ["git", "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()


def nstat(tb: Testbed, ns: str) -> dict[str, int]:
    """Absolute kernel counters of a namespace (`nstat -as`: no history file is touched)."""
    out = tb.exec(ns, "nstat", "-as", "--json")
    data: dict[str, Any] = json.loads(out)
    values: dict[str, int] = {}
    for group in data.values():
        values.update({k: int(v) for k, v in group.items()})
    return values


def build(
    tb: Testbed, path: str, fdb: bool, extra: tuple[str, ...], *, receiving: bool = False
) -> dict[str, Any]:
    """The two hosts of `path` and their containers; returns who sends, who is profiled."""
    o1 = tb.add_host("o1", 61)
    co1 = tb.add_container(o1, "co1", 61)
    if path == "a2a":
        o2 = tb.add_host("o2", 62)
        co2 = tb.add_container(o2, "co2", 62)
        vtep = tb.start_vtep(o1, [o2], extra=extra)
        receiver = tb.start_vtep(o2, [o1], extra=extra)
        if receiving:  # profile the VTEP that receives the bulk (o2) instead
            return {"client": co1, "server": co2, "vtep": receiver, "hosts": [o2, o1], "far": o1,
                    "other": vtep}  # fmt: skip
        return {"client": co1, "server": co2, "vtep": vtep, "hosts": [o1, o2], "far": o2,
                "other": receiver}  # fmt: skip
    k1 = tb.add_host("k1", 62)
    ck1 = tb.add_container(k1, "ck1", 62)
    tb.kernel_vxlan(k1, [o1])
    known, k1.containers = k1.containers, k1.containers if fdb else []
    vtep = tb.start_vtep(o1, [k1], extra=extra)
    k1.containers = known
    client, server = (co1, ck1) if path == "o2k" else (ck1, co1)
    return {"client": client, "server": server, "vtep": vtep, "hosts": [o1, k1], "far": k1}


def capture_summary(pcap: Path, sender_ip: str) -> dict[str, Any]:
    """From an underlay capture: the bulk direction's datagram sizes and outer checksums, the
    reverse direction's ACKs, data datagrams per ACK and the gaps between ACKs."""
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.vxlan import VXLAN
    from scapy.utils import PcapReader

    sizes: collections.Counter[int] = collections.Counter()
    data = acks = zero_csum = 0
    ack_times: list[float] = []
    sports: set[int] = set()
    with PcapReader(str(pcap)) as reader:
        for packet in reader:
            if not packet.haslayer(VXLAN) or not packet[VXLAN].payload.haslayer(TCP):
                continue
            inner = packet[VXLAN].payload
            if packet[IP].src == sender_ip:
                data += 1
                sizes[packet[IP].len] += 1
                zero_csum += packet[UDP].chksum == 0
                sports.add(packet[UDP].sport)
            elif inner[IP].len - 4 * inner[IP].ihl - 4 * inner[TCP].dataofs == 0:
                acks += 1
                ack_times.append(float(packet.time))
    gaps = [b - a for a, b in itertools.pairwise(ack_times)]
    return {
        "data_datagrams": data,
        "top_outer_ip_lengths": sizes.most_common(5),
        "outer_udp_checksum_zero": zero_csum,
        "outer_source_ports": len(sports),
        "pure_acks": acks,
        "data_per_ack": round(data / acks, 2) if acks else None,
        "ack_gap_median_us": round(statistics.median(gaps) * 1e6, 1) if gaps else None,
    }


def top_table(raw: Path, top: int) -> str:
    """py-spy's collapsed stacks as a top-N table: own samples and total (inclusive) samples."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        samples += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    lines = [f"{samples} samples", "", "| function | own % | total % |", "|---|---:|---:|"]
    for name, count in own.most_common(top):
        lines.append(
            f"| `{name}` | {100 * count / samples:.1f} | {100 * total[name] / samples:.1f} |"
        )
    return "\n".join(lines)


def perf_table(data: Path, top: int) -> str:
    """`perf report` of the VTEP process by symbol, with children (time in and under it) and
    own time: the kernel work its system calls do (over veth that includes the receiving host's
    whole receive path, run in softirq on the sender's CPU) next to the interpreter's."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--children", "--sort", "sym", "--stdio",
         "--percent-limit", "1.5", "-g", "none"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    rows = [line.split(None, 3) for line in out.splitlines() if line.strip()[:1].isdigit()]
    lines = ["| symbol ([k] kernel) | with children % | own % |", "|---|---:|---:|"]
    for row in [r for r in rows if len(r) == 4 and r[1].endswith("%")][:top]:
        lines.append(
            f"| `{row[2]} {row[3].strip()}` | {row[0].rstrip('%')} | {row[1].rstrip('%')} |"
        )
    return "\n".join(lines)


#: What a shared object's time is, for the system-wide table (`--system`).
DSO_CLASSES = (
    ("[kernel", "kernel"),
    ("libpython", "interpreter"),
    ("python3", "interpreter"),
    ("_ctypes", "ctypes"),
    ("libffi", "ctypes"),
    ("egress-", "C helpers"),
    ("ingress-", "C helpers"),
    ("offload-", "C helpers"),
)


def dso_class(dso: str) -> str:
    """The kind of code a shared object holds (`DSO_CLASSES`; anything else: "other")."""
    return next((kind for prefix, kind in DSO_CLASSES if dso.startswith(prefix)), "other")


def system_table(data: Path, roles: dict[int, str]) -> str:
    """`perf report` of a system-wide recording as a table: the share of all CPU time (both
    CPUs) by process role and kind of code: how much of the machine goes to the interpreter,
    the C helpers, the ctypes calls between them and the kernel work each process runs."""
    out = subprocess.run(
        ["perf", "report", "-i", str(data), "--sort", "pid,dso", "--stdio", "-g", "none"],
        capture_output=True, text=True, check=False,
    ).stdout  # fmt: skip
    shares: dict[tuple[str, str], float] = collections.defaultdict(float)
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) != 3 or not parts[0].endswith("%") or ":" not in parts[1]:
            continue
        pid_text, _, comm = parts[1].partition(":")
        pid = int(pid_text) if pid_text.isdigit() else -1
        role = roles.get(pid, "idle" if pid == 0 else f"other ({comm})")
        shares[role, dso_class(parts[2].strip())] += float(parts[0].rstrip("%"))
    kinds = ("interpreter", "ctypes", "C helpers", "kernel", "other")
    by_role: dict[str, float] = collections.defaultdict(float)
    for (role, _kind), share in shares.items():
        by_role[role] += share
    lines = [f"| process | {' | '.join(kinds)} | all |", "|---|" + "---:|" * (len(kinds) + 1)]
    for role, total in sorted(by_role.items(), key=lambda item: -item[1]):
        if total < 0.5:
            continue
        cells = " | ".join(f"{shares[role, kind]:.1f}" for kind in kinds)
        lines.append(f"| {role} | {cells} | {total:.1f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", choices=("o2k", "k2o", "a2a"), default="o2k")
    parser.add_argument("--no-fdb", dest="fdb", action="store_false", default=True)
    parser.add_argument("--seconds", type=bench_args.positive_int, default=5)
    parser.add_argument("--streams", type=bench_args.positive_int, default=1)
    parser.add_argument("--top", type=bench_args.positive_int, default=20)
    parser.add_argument(
        "--receiving", action="store_true",
        help="a2a: profile the VTEP that receives the bulk, not the one that sends it",
    )  # fmt: skip
    parser.add_argument("--vtep-arg", action="append", default=[])
    parser.add_argument(
        "--perf", action="store_true",
        help="also `perf record` the VTEP: where its system calls spend their (kernel) time",
    )  # fmt: skip
    parser.add_argument(
        "--system", action="store_true",
        help="also `perf record -a`: all CPU time by process and kind of code (interpreter, "
        "ctypes, C helpers, kernel)",
    )  # fmt: skip
    parser.add_argument("--name", help="report name (default: from the options)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    name = args.name or f"{args.path}{'' if args.fdb else '-nofdb'}-P{args.streams}"
    PROFILES.mkdir(exist_ok=True)
    raw = Path(f"/tmp/profile-{os.getpid()}.txt")
    load_before = os.getloadavg()
    with Testbed("onet-bpf-") as tb:
        topo = build(tb, args.path, args.fdb, tuple(args.vtep_arg), receiving=args.receiving)
        client: Container = topo["client"]
        server: Container = topo["server"]
        hosts: list[Host] = topo["hosts"]
        tb.exec(client.ns, "ping", "-c", "2", "-i", "0.2", server.ip)
        namespaces = [h.ns for h in hosts] + [client.ns, server.ns]
        before = {ns: nstat(tb, ns) for ns in namespaces}
        srv = tb.popen("ip", "netns", "exec", server.ns, "iperf3", "-s", "-1", "-B", server.ip)
        time.sleep(0.5)
        pcap = tb.workdir / "profile.pcap"
        sender_host = hosts[0] if args.path != "k2o" else hosts[1]
        port = f"p{sender_host.ip.rsplit('.', 1)[1]}"
        dump = tb.popen("ip", "netns", "exec", tb.underlay, "tcpdump", "-i", port, "-n", "-s",
                        str(SNAPLEN), "-c", str(CAPTURE_PACKETS), "-w", str(pcap),
                        "udp", "port", "4789")  # fmt: skip
        spy = subprocess.Popen(
            [py_spy, "record", "--pid", str(topo["vtep"].pid), "--rate", str(SAMPLE_RATE),
             "--duration", str(args.seconds), "--format", "raw", "--function", "--nonblocking",
             "--output", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        perf_data = tb.workdir / "perf.data"
        perf = (
            subprocess.Popen(
                [
                    "perf",
                    "record",
                    "-q",
                    "-g",
                    "-F",
                    str(SAMPLE_RATE),
                    "-p",
                    str(topo["vtep"].pid),
                    "-o",
                    str(perf_data),
                    "--",
                    "sleep",
                    str(args.seconds),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            if args.perf
            else None
        )
        system_data = tb.workdir / "system.data"
        system = (
            subprocess.Popen(
                ["perf", "record", "-q", "-a", "-F", str(SAMPLE_RATE), "-o", str(system_data),
                 "--", "sleep", str(args.seconds)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            if args.system
            else None
        )  # fmt: skip
        out = tb.exec(client.ns, "iperf3", "-c", server.ip, "-t", str(args.seconds + 1),
                      "-P", str(args.streams), "-J", timeout=args.seconds + 30)  # fmt: skip
        spy.wait(args.seconds + 30)
        kernel_table = ""
        if perf is not None:
            perf.wait(args.seconds + 30)
            kernel_table = perf_table(perf_data, args.top)
        system_text = ""
        if system is not None:
            system.wait(args.seconds + 30)
            roles = {topo["vtep"].pid: "profiled VTEP (o1)", srv.pid: "iperf3 server"}
            if "other" in topo:
                roles[topo["other"].pid] = "other VTEP"
            system_text = system_table(system_data, roles)  # the client: "other (iperf3)"
        Testbed.stop(dump)
        Testbed.stop(srv)
        after = {ns: nstat(tb, ns) for ns in namespaces}
        result = json.loads(out)["end"]
        gbps = result["sum_received"]["bits_per_second"] / 1e9
        retrans = result["sum_sent"].get("retransmits")
        summary = capture_summary(pcap, sender_host.ip)
        topo["vtep"].send_signal(10)  # SIGUSR1: counters to the stats file
        time.sleep(0.5)
        counters = json.loads(tb.stats_path(hosts[0]).read_text())
    load_after = os.getloadavg()
    deltas = {
        ns.rsplit("-", 1)[1]: {k: after[ns].get(k, 0) - before[ns].get(k, 0) for k in NSTAT_KEYS
                               if after[ns].get(k, 0) - before[ns].get(k, 0)}
        for ns in after
    }  # fmt: skip
    command = "benchmarks/profile_vtep.py " + " ".join(sys.argv[1:])
    net_counters = next(iter(counters["networks"].values()))["counters"]
    report = "\n".join([
        f"# {name}: {gbps:.3f} Gbit/s, {retrans} retransmits",
        "",
        f"Command: `.venv/bin/python {command}` at {time.strftime('%Y-%m-%d %H:%M:%S')}; "
        f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
        f"git {revision()}.",
        "",
        "## py-spy, the overlaynet VTEP (host o1)",
        "",
        top_table(raw, args.top),
        "",
        *(["## perf, the VTEP process: own time by symbol (kernel and user)", "",
            kernel_table, ""] if kernel_table else []),
        *(["## perf -a: share of all CPU time (both CPUs, %) by process and kind of code", "",
            system_text, ""] if system_text else []),
        "## Underlay capture (first datagrams of the transfer)",
        "",
        "```", json.dumps(summary), "```",
        "",
        "## nstat deltas by namespace",
        "",
        "```", json.dumps(deltas, indent=1), "```",
        "",
        "## VTEP counters (o1)",
        "",
        "```", json.dumps({"host": counters["counters"], "network": net_counters}, indent=1),
        "```", "",
    ])  # fmt: skip
    target = PROFILES / f"{name}.md"
    target.write_text(report)
    raw.unlink(missing_ok=True)
    print(report)
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
