"""DNS across the overlay while TCP saturates it (issue 15: "DNS over the overlay under a TCP load
still answers within 10 ms p99"): a client container on one host sends paced UDP queries (500/s,
bounded count) to a DNS server in a container on another host, first on an idle overlay, then
while iperf3 TCP runs between the same two containers; reports p50/p99/max RTT and the share
answered (correctly), idle and loaded, for overlaynet and kernel VXLAN in the same run. JSON to
benchmarks/results/. Needs root; namespaces `onet-mxd…`.

    .venv/bin/python benchmarks/dns_load.py [--rate 500] [--count 2000] [--variant NAME=ARGS]

The server (`dns_load.py serve`, also used by tests/integration/dataplane/test_tunnel_in_tunnel)
answers `A.B.C.D.<anything>` written with dashes (`10-1-2-3.mx.test`) with the A record
A.B.C.D, like nip.io, so a client can check every answer without shared state; every other
query gets NXDOMAIN; undecodable datagrams are counted and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bench_args
import e2e_throughput as e2e
from dnslib import QTYPE, RCODE, RR, A, DNSError, DNSRecord

from overlaynet.lab.testbed import Testbed

#: Paced at 500 queries/s (a busy service's resolver load, far below what one core answers),
#: 2000 queries (4 s) per phase: bounded in count and time.
DEFAULT_RATE = 500
DEFAULT_COUNT = 2000
#: Queries per phase at most: each in flight is told apart by its 16-bit DNS ID.
MAX_COUNT = 65535
#: A query not answered within this long counts as unanswered (dig's default is 5 s; a
#: resolver retries after 1 s or less).
ANSWER_TIMEOUT = 1.0
#: The suffix of the names queried.
ZONE = "mx.test"
GOAL_P99_MS = 10.0


def address_in(name: str) -> str | None:
    """`10-1-2-3.mx.test.` -> 10.1.2.3; None when the first label is not four dashed octets."""
    parts = name.split(".", 1)[0].split("-")
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts):
        return None
    return ".".join(str(int(p)) for p in parts)


def name_for(i: int) -> str:
    """The i-th query's name: a distinct address per query (10.x.y.z, z never 0)."""
    n = i % (255 * 65536)
    return f"10-{n // (255 * 256) % 256}-{n // 255 % 256}-{n % 255 + 1}.{ZONE}"


def answer(data: bytes) -> bytes:
    """The reply to one query (raises DNSError when it does not decode)."""
    query = DNSRecord.parse(data)
    reply = query.reply()
    address = address_in(str(query.q.qname))
    if address is None or query.q.qtype != QTYPE.A:
        reply.header.rcode = RCODE.NXDOMAIN if address is None else RCODE.NOERROR
    else:
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(address), ttl=0))
    return bytes(reply.pack())


def serve(bind: str, port: int) -> None:
    """Answer until SIGTERM; bad datagrams are counted (printed on exit) and dropped."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind, port))
    signal.signal(signal.SIGTERM, lambda _n, _f: sys.exit(0))  # run `finally`: print the count
    bad = 0
    try:
        while True:
            data, peer = sock.recvfrom(4096)
            try:
                sock.sendto(answer(data), peer)
            except (DNSError, ValueError, IndexError):
                bad += 1
    finally:
        print(f"undecodable queries: {bad}", file=sys.stderr)


def query(i: int) -> bytes:
    record = DNSRecord.question(name_for(i), "A")
    record.header.id = i & 0xFFFF
    return bytes(record.pack())


def correct(reply: DNSRecord, i: int) -> bool:
    """Whether `reply` answers the i-th query: its name, one A record, the address in the name."""
    name = name_for(i)
    return (
        str(reply.q.qname).rstrip(".") == name
        and len(reply.rr) == 1
        and str(reply.rr[0].rdata) == address_in(name)
    )


def client(server: str, port: int, rate: int, count: int) -> dict[str, Any]:
    """Send `count` queries at `rate`/s from one socket, receiving meanwhile; RTTs in ms of the
    correct answers (right ID, name and address), how many came back wrong or never."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((server, port))
    sock.setblocking(False)
    sent: dict[int, tuple[int, float]] = {}  # id -> (query number, send time)
    rtts: list[float] = []
    wrong = 0
    start = time.monotonic()
    i = 0
    deadline = start + count / rate + ANSWER_TIMEOUT
    while time.monotonic() < deadline and (i < count or sent):
        now = time.monotonic()
        while i < count and start + i / rate <= now:
            sent[i & 0xFFFF] = i, time.monotonic()
            sock.send(query(i))
            i += 1
        wait = start + i / rate - now if i < count else deadline - now
        readable, _, _ = select.select([sock], [], [], max(0.0, wait))
        while readable:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                break
            arrived = time.monotonic()
            try:
                reply = DNSRecord.parse(data)
            except DNSError:
                wrong += 1
                continue
            entry = sent.pop(reply.header.id, None)
            if entry is None or not correct(reply, entry[0]):
                wrong += 1
            elif arrived - entry[1] <= ANSWER_TIMEOUT:
                rtts.append((arrived - entry[1]) * 1000)
    return {"sent": i, "answered": len(rtts), "wrong": wrong, "rtts_ms": sorted(rtts)}


def summary(r: dict[str, Any]) -> dict[str, float]:
    rtts = r["rtts_ms"]
    q = statistics.quantiles(rtts, n=100, method="inclusive") if len(rtts) > 1 else rtts or [0]
    return {
        "p50_ms": statistics.median(rtts) if rtts else float("nan"),
        "p99_ms": q[min(98, len(q) - 1)] if rtts else float("nan"),
        "max_ms": max(rtts) if rtts else float("nan"),
        "answered_pct": 100 * r["answered"] / max(1, r["sent"]),
        "wrong": r["wrong"],
    }


def _measure(
    tb: Testbed, s: e2e.Scenario, rate: int, count: int, load: bool, nice: int
) -> dict[str, Any]:
    """One phase on scenario `s`: the client in s.client's namespace, with iperf3 TCP from the
    client to the server's container running throughout when `load`."""
    seconds = count / rate
    iperf_server = iperf_client = None
    if load:
        iperf_server = tb.popen("ip", "netns", "exec", s.server.ns, "iperf3", "-s", "-1", "-B",
                                s.server.ip)  # fmt: skip
        _wait_listening(tb, s.server.ns, ":5201", "-ltn")
        iperf_client = subprocess.Popen(
            ["ip", "netns", "exec", s.client.ns, "iperf3", "-c", s.server.ip,
             "-t", str(int(seconds + 3)), "-J"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(1)  # slow start over: the overlay is saturated when the queries start
    try:
        out = tb.exec(s.client.ns, "nice", "-n", str(nice), sys.executable, __file__, "client",
                      "--server", s.server.ip, "--rate", str(rate), "--count", str(count),
                      timeout=seconds + 30)  # fmt: skip
        result: dict[str, Any] = json.loads(out)
        if iperf_client is not None:
            tcp, _ = iperf_client.communicate(timeout=seconds + 30)
            report = json.loads(tcp)["end"]["sum_received"]
            result["tcp_gbps"] = float(report["bits_per_second"]) / 1e9
        return result
    finally:
        for p in (iperf_client, iperf_server):
            if p is not None:
                tb.stop(p)


def _wait_listening(tb: Testbed, ns: str, port: str, flags: str) -> None:
    deadline = time.monotonic() + 10
    while port not in tb.exec(ns, "ss", flags):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {port} in {ns}")
        time.sleep(0.05)


def bench(args: argparse.Namespace) -> int:
    variants: dict[str, list[str]] = {"overlaynet": []} | {
        name: extra.split() for name, _, extra in (v.partition("=") for v in args.variant)
    }
    load_before = os.getloadavg()
    results: dict[str, dict[str, Any]] = {}
    samples: dict[str, dict[str, Any]] = {}
    with Testbed("onet-mxd-") as tb:
        scenarios = [s for s in e2e.build(tb, variants, {}, interop=False)
                     if s.name != "same-host bridge"]  # fmt: skip
        for s in scenarios:
            tb.popen("ip", "netns", "exec", s.server.ns, "nice", "-n", str(args.nice),
                     sys.executable, __file__, "serve", "--bind", s.server.ip)  # fmt: skip
            _wait_listening(tb, s.server.ns, ":53", "-lun")
            tb.exec(s.client.ns, "ping", "-c", "3", "-i", "0.2", s.server.ip)  # warm ARP/FDB
        for s in scenarios:
            for phase, load in (("idle", False), ("loaded", True)):
                r = _measure(tb, s, args.rate, args.count, load, args.nice)
                samples.setdefault(s.name, {})[phase] = r
                results.setdefault(s.name, {})[phase] = summary(r) | (
                    {"tcp_gbps": r["tcp_gbps"]} if "tcp_gbps" in r else {}
                )
                print(f"{s.name} {phase}: {results[s.name][phase]}", file=sys.stderr)
    load_after = os.getloadavg()
    print(f"{'path':14s}{'phase':>8s}{'p50 ms':>9s}{'p99 ms':>9s}{'max ms':>9s}"
          f"{'answered':>10s}{'wrong':>7s}{'TCP Gb/s':>10s}")  # fmt: skip
    for name, phases in results.items():
        for phase, f in phases.items():
            tcp = f"{f['tcp_gbps']:10.2f}" if "tcp_gbps" in f else f"{'-':>10s}"
            print(f"{name:14s}{phase:>8s}{f['p50_ms']:9.3f}{f['p99_ms']:9.3f}{f['max_ms']:9.3f}"
                  f"{f['answered_pct']:9.2f}%{f['wrong']:7d}{tcp}")  # fmt: skip
    print(f"goal: loaded p99 <= {GOAL_P99_MS} ms; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}")  # fmt: skip
    results_dir = Path(__file__).parent / "results"
    results_dir.mkdir(exist_ok=True)
    path = results_dir / f"dns_load-{time.strftime('%Y%m%d-%H%M%S')}.json"
    meta = {"rate": args.rate, "nice": args.nice, "count": args.count,
            "answer_timeout_s": ANSWER_TIMEOUT, "variants": variants, "goal_p99_ms": GOAL_P99_MS,
            "loadavg_before": load_before, "loadavg_after": load_after}  # fmt: skip
    path.write_text(json.dumps({"meta": meta, "results": results, "samples": samples}, indent=1))
    print(f"wrote {path}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    p_serve = sub.add_parser("serve", help="answer dashed-address names (run in a container ns)")
    p_serve.add_argument("--bind", default="0.0.0.0")
    p_serve.add_argument("--port", type=int, default=53)
    p_client = sub.add_parser("client", help="paced queries, JSON on stdout")
    p_client.add_argument("--server", required=True)
    p_client.add_argument("--port", type=int, default=53)
    for p in (parser, p_client):
        p.add_argument(
            "--rate", type=bench_args.positive_int, default=DEFAULT_RATE, help="queries per second"
        )
        p.add_argument("--count", type=int, default=DEFAULT_COUNT, help="queries per phase")
    parser.add_argument(
        "--nice", type=int, default=0,
        help="nice value of the DNS server and client (-10: as the VTEP's loop, so waits for a "
        "CPU are told apart from waits in queues)",
    )  # fmt: skip
    parser.add_argument(
        "--variant", action="append", default=[], metavar="NAME=ARGS",
        help="another overlaynet pair with these vtep_main arguments, e.g. offload=--offload",
    )  # fmt: skip
    args = parser.parse_args()
    if args.command == "serve":
        with contextlib.suppress(KeyboardInterrupt):
            serve(args.bind, args.port)
        return 0
    if not 0 < args.count <= MAX_COUNT:
        parser.error(f"--count must be 1..{MAX_COUNT} (query IDs are 16 bits)")
    if args.command == "client":
        print(json.dumps(client(args.server, args.port, args.rate, args.count)))
        return 0
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
