"""How full the VTEP's batches are, from its own counters (noise on a shared machine moves Gb/s
by 2x, these ratios hardly): frames per UDP-GSO batch at the sending VTEP (FDB tx_frames /
tx_gso_batches) and segments per merged super-frame at the receiving one (FDB rx_frames /
rx_merged_writes), for an iperf3 transfer with 1 and with 4 streams between two overlaynet hosts,
per `vtep_main` variant. Needs root; namespaces `onet-bbs-…`, removed afterwards; about a
minute for two variants.

    .venv/bin/python benchmarks/batch_sizes.py 'b128=--drain-budget 128' 'b32=--drain-budget 32'
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import bench_args

from overlaynet.lab.testbed import Container, Host, Testbed

SECONDS = 2  # per transfer
ROUNDS = 2


def iperf(tb: Testbed, client: Container, server: Container, streams: int) -> float:
    """Gbit/s received."""
    srv = tb.popen("ip", "netns", "exec", server.ns, "iperf3", "-s", "-1", "-B", server.ip)
    try:
        time.sleep(0.4)
        out = tb.exec(client.ns, "iperf3", "-c", server.ip, "-t", str(SECONDS), "-P",
                      str(streams), "-J", timeout=SECONDS + 30)  # fmt: skip
        return float(json.loads(out)["end"]["sum_received"]["bits_per_second"]) / 1e9
    finally:
        Testbed.stop(srv)


def counters(tb: Testbed, host: Host, process: Any) -> tuple[int, int, int, int]:
    """tx_gso_batches, FDB tx_frames, rx_merged_writes, FDB rx_frames of the host's VTEP."""
    (net,) = tb.vtep_stats(host, process, 10)["networks"].values()
    fdb = net["fdb"]
    return (
        net["counters"].get("tx_gso_batches", 0),
        sum(r["tx_frames"] for r in fdb),
        net["counters"].get("rx_merged_writes", 0),
        sum(r["rx_frames"] for r in fdb),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "variant",
        nargs="+",
        metavar="NAME=ARGS",
        type=bench_args.variant,
        help="vtep_main arguments",
    )
    args = parser.parse_args()
    with Testbed("onet-bbs-") as tb:
        pairs = []
        for i, spec in enumerate(args.variant):
            name, _, extra = spec.partition("=")
            n = 41 + 10 * i
            h1, h2 = tb.add_host(f"o{n}", n), tb.add_host(f"o{n + 1}", n + 1)
            c1, c2 = tb.add_container(h1, f"co{n}", n), tb.add_container(h2, f"co{n + 1}", n + 1)
            p1 = tb.start_vtep(h1, [h2], extra=tuple(extra.split()))
            p2 = tb.start_vtep(h2, [h1], extra=tuple(extra.split()))
            tb.exec(c1.ns, "ping", "-c", "2", "-i", "0.2", c2.ip)
            pairs.append((name, h1, p1, h2, p2, c1, c2))
        print(f"{'round':6s}{'variant':12s}{'streams':>8s}{'Gb/s':>8s}{'frames/GSO batch':>18s}"
              f"{'segments/merged write':>23s}")  # fmt: skip
        for round_ in range(ROUNDS):
            for name, h1, p1, h2, p2, c1, c2 in pairs:
                for streams in (1, 4):
                    tx0, rx0 = counters(tb, h1, p1), counters(tb, h2, p2)
                    gbps = iperf(tb, c1, c2, streams)
                    tx1, rx1 = counters(tb, h1, p1), counters(tb, h2, p2)
                    per_batch = (tx1[1] - tx0[1]) / max(1, tx1[0] - tx0[0])
                    per_write = (rx1[3] - rx0[3]) / max(1, rx1[2] - rx0[2])
                    print(f"{round_ + 1:<6d}{name:12s}{streams:>8d}{gbps:>8.2f}{per_batch:>18.1f}"
                          f"{per_write:>23.1f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
