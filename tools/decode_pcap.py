"""Decode a pcap file of overlay traffic layer by layer (Ether/IP/UDP/VXLAN/Ether/IP/ICMP…).

tcpdump -ni br0 -w ping.pcap udp port 4789     (in the lab's underlay namespace)
.venv/bin/python tools/decode_pcap.py ping.pcap
"""

from __future__ import annotations

import argparse
from pathlib import Path

from overlaynet.lab import capture


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("pcap", type=Path)
    ns = p.parse_args()
    print(capture.render(capture.read_pcap(ns.pcap)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
