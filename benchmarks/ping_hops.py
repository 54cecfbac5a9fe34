"""Where a ping's time goes between two overlaynet hosts, idle or under a 1-stream iperf3 load:
tcpdump at every hop (container eth0, TAP, underlay eth0 on each side) and, per hop, the median
and largest delay of the echo requests and of the replies. Writes Markdown to
benchmarks/profiles/. Needs root; namespaces `onet-bhp-…`, removed afterwards.

    .venv/bin/python benchmarks/ping_hops.py            # under load
    .venv/bin/python benchmarks/ping_hops.py --idle

tap1 -> ul1 is the sending VTEP (the frame's wait in the TAP queue, then the loop), ul2 -> tap2
the receiving one; the replies go the other way.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from overlaynet.lab.testbed import Testbed

PROFILES = Path(__file__).parent / "profiles"
PINGS = 40  # at 20 ms: within the transfer, after slow start
TRANSFER_SECONDS = 5
#: tcpdump filter for VXLAN datagrams that carry ICMP: IPv4 protocol at UDP 8 + VXLAN 8 +
#: Ethernet 14 + 9.
VXLAN_ICMP = "udp port 4789 and udp[39] = 1"
HOPS = ("c1", "tap1", "ul1", "ul2", "tap2", "c2")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", action="store_true", help="no iperf3 load")
    parser.add_argument(
        "--vtep-args", default="", help="extra vtep_main arguments, e.g. '--spin-us 300'"
    )
    parser.add_argument("--name", help="report name (default: ping-hops-loaded/idle)")
    args = parser.parse_args()
    from scapy.layers import vxlan  # noqa: F401  (binds port 4789, so captures decode)
    from scapy.layers.inet import ICMP
    from scapy.utils import rdpcap

    load_before = os.getloadavg()
    times: dict[tuple[int, int], dict[str, float]] = {}
    with Testbed("onet-bhp-") as tb:
        o1, o2 = tb.add_host("o1", 81), tb.add_host("o2", 82)
        c1, c2 = tb.add_container(o1, "c1", 81), tb.add_container(o2, "c2", 82)
        extra = tuple(args.vtep_args.split())
        tb.start_vtep(o1, [o2], extra=extra)
        tb.start_vtep(o2, [o1], extra=extra)
        tb.exec(c1.ns, "ping", "-c", "2", "-i", "0.2", c2.ip)
        load: subprocess.Popen[bytes] | None = None
        if not args.idle:
            tb.popen("ip", "netns", "exec", c2.ns, "iperf3", "-s", "-1", "-B", c2.ip)
            time.sleep(0.5)
            load = tb.popen("ip", "netns", "exec", c1.ns, "iperf3", "-c", c2.ip, "-t",
                            str(TRANSFER_SECONDS))  # fmt: skip
            time.sleep(1)
        points = {
            "c1": (c1.ns, "eth0", "icmp"),
            "tap1": (o1.ns, "on-tap-tdp", "icmp"),
            "ul1": (o1.ns, "eth0", VXLAN_ICMP),
            "ul2": (o2.ns, "eth0", VXLAN_ICMP),
            "tap2": (o2.ns, "on-tap-tdp", "icmp"),
            "c2": (c2.ns, "eth0", "icmp"),
        }
        dumps = [
            tb.popen(
                "ip",
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                dev,
                "-n",
                "-U",
                "-w",
                str(tb.workdir / f"{hop}.pcap"),
                *rule.split(),
            )
            for hop, (ns, dev, rule) in points.items()
        ]
        time.sleep(1)
        tb.exec(c1.ns, "ping", "-c", str(PINGS), "-i", "0.02", c2.ip, check=False)
        time.sleep(0.3)
        for dump in dumps:
            Testbed.stop(dump)
        if load is not None:
            load.wait(TRANSFER_SECONDS + 10)
        for hop in points:
            for packet in rdpcap(str(tb.workdir / f"{hop}.pcap")):
                if packet.haslayer(ICMP) and packet[ICMP].type in (0, 8):
                    key = (int(packet[ICMP].type), int(packet[ICMP].seq))
                    times.setdefault(key, {}).setdefault(hop, float(packet.time))
    load_after = os.getloadavg()
    lines = ["| direction | hop | median µs | max µs | pings |", "|---|---|---:|---:|---:|"]
    for kind, order in ((8, HOPS), (0, HOPS[::-1])):
        for a, b in itertools.pairwise(order):
            gaps = [v[b] - v[a] for (t, _), v in times.items() if t == kind and a in v and b in v]
            if gaps:
                median, worst = statistics.median(gaps) * 1e6, max(gaps) * 1e6
                label = "request" if kind == 8 else "reply"
                lines.append(f"| {label} | {a} → {b} | {median:.0f} | {worst:.0f} | {len(gaps)} |")
    name = args.name or f"ping-hops-{'idle' if args.idle else 'loaded'}"
    command = "benchmarks/ping_hops.py " + " ".join(sys.argv[1:])
    report = "\n".join([
        f"# {name}",
        "",
        f"Command: `.venv/bin/python {command}` at {time.strftime('%Y-%m-%d %H:%M:%S')}; load "
        f"average {load_before[0]:.2f} before, {load_after[0]:.2f} after.",
        "",
        *lines,
        "",
    ])  # fmt: skip
    PROFILES.mkdir(exist_ok=True)
    (PROFILES / f"{name}.md").write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
