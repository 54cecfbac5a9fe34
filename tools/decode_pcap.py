#!/usr/bin/env python3
"""Decode a pcap file of overlay traffic layer by layer (Ether/IP/UDP/VXLAN/Ether/IP/ICMP…).

overlaynet lab capture -c 4 -w ping.pcap     (the lab's underlay: VXLAN between hosts)
tools/decode_pcap.py ping.pcap
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# The project's virtual environment, beside this script: tools/decode_pcap.py run by a python3
# outside it (no .venv/bin on PATH) would not find overlaynet or scapy.
VENV = Path(__file__).resolve().parent.parent / ".venv"

try:
    from overlaynet.lab import capture
except ImportError:
    if (VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != VENV.resolve():
        os.execv(str(VENV / "bin" / "python"), [str(VENV / "bin" / "python"), *sys.argv])
    raise


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("pcap", type=Path)
    ns = p.parse_args()
    try:
        frames = capture.read_pcap(ns.pcap)
    except OSError as e:
        print(f"decode_pcap: cannot read {ns.pcap}: {e.strerror or e}", file=sys.stderr)
        return 1
    except Exception as e:  # scapy's reader says only Scapy_Exception for a file it cannot parse
        print(f"decode_pcap: {ns.pcap} is not a pcap file scapy can read: {e}", file=sys.stderr)
        return 1
    try:
        print(capture.render(frames))
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
