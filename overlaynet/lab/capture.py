"""Packets on the lab's underlay, captured with tcpdump and decoded layer by layer with scapy.

`describe(frame)` is pure: raw Ethernet bytes in, one line per layer out, so the same decoding
serves live captures, pcap files (tools/decode_pcap.py) and tests.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# scapy is imported lazily: it takes ~1 s to load, which the rest of the CLI should not pay.

# Enough packets to see a ping's request and reply both ways, without flooding the terminal.
DEFAULT_COUNT = 8
DEFAULT_FILTER = "udp port 4789"
# A capture never runs longer than this: a quiet underlay must not hang the command.
MAX_SECONDS = 30.0


@dataclass(frozen=True)
class Layer:
    name: str
    fields: str

    def __str__(self) -> str:
        return f"{self.name:<6} {self.fields}"


def describe(frame: bytes) -> list[Layer]:
    """Each layer of an Ethernet frame, outermost first, with the fields that matter here."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether
    from scapy.layers.vxlan import VXLAN

    layers: list[Layer] = []
    pkt: Any = Ether(frame)
    while pkt is not None and pkt.name != "NoPayload":
        if isinstance(pkt, Ether):
            layers.append(Layer("Ether", f"{pkt.src} > {pkt.dst} type 0x{pkt.type:04x}"))
        elif isinstance(pkt, IP):
            df = " DF" if pkt.flags.DF else ""
            layers.append(Layer("IPv4", f"{pkt.src} > {pkt.dst} ttl {pkt.ttl} len {pkt.len}{df}"))
        elif isinstance(pkt, UDP):
            layers.append(
                Layer("UDP", f"{pkt.sport} > {pkt.dport} len {pkt.len} chksum 0x{pkt.chksum:04x}")
            )
        elif isinstance(pkt, VXLAN):
            layers.append(Layer("VXLAN", f"flags 0x{int(pkt.flags):02x} vni {pkt.vni}"))
        elif isinstance(pkt, ARP):
            op = {1: "who-has", 2: "is-at"}.get(pkt.op, str(pkt.op))
            layers.append(Layer("ARP", f"{op} {pkt.pdst} tell {pkt.psrc} ({pkt.hwsrc})"))
        elif isinstance(pkt, ICMP):
            kind = {0: "echo-reply", 8: "echo-request"}.get(pkt.type, f"type {pkt.type}")
            layers.append(Layer("ICMP", f"{kind} id {pkt.id} seq {pkt.seq}"))
        elif isinstance(pkt, TCP):
            layers.append(
                Layer("TCP", f"{pkt.sport} > {pkt.dport} flags {pkt.flags} seq {pkt.seq}")
            )
        else:
            layers.append(Layer(pkt.name, f"{len(bytes(pkt))} bytes"))
            break
        pkt = pkt.payload
    return layers


def read_pcap(path: Path) -> list[bytes]:
    import scapy.layers.l2  # noqa: F401  (registers Ethernet as link type 1 for the reader)
    from scapy.utils import rdpcap

    return [bytes(p) for p in rdpcap(str(path))]


def capture(netns_name: str, interface: str, count: int, bpf: str, seconds: float) -> list[bytes]:
    """Up to `count` frames seen on `interface` in a namespace, within `seconds`."""
    seconds = min(seconds, MAX_SECONDS)
    with tempfile.TemporaryDirectory(prefix="onet-capture-") as tmp:
        out = Path(tmp) / "capture.pcap"
        argv = ["ip", "netns", "exec", netns_name, "timeout", str(seconds)]
        argv += ["tcpdump", "-n", "-i", interface, "-c", str(count), "-w", str(out), "-U"]
        argv += bpf.split()
        subprocess.run(argv, capture_output=True, check=False)
        return read_pcap(out) if out.exists() and out.stat().st_size > 24 else []


def render(frames: list[bytes]) -> str:
    blocks = []
    for n, frame in enumerate(frames, 1):
        lines = [f"#{n}  {len(frame)} bytes"]
        lines += [f"  {'  ' * depth}{layer}" for depth, layer in enumerate(describe(frame))]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)
