"""Packets in a lab, captured with tcpdump and decoded layer by layer with scapy.

Three places to listen: the lab's underlay switch (VXLAN between hosts), a host's `eth0`, or a
container's `eth0` inside its own namespace (the inner frames, before encapsulation). A capture
can also be kept as a pcap file that tcpdump, scapy or tshark read (`-w FILE`).

`describe(frame)` is pure: raw Ethernet bytes in, one line per layer out, so the same decoding
serves live captures, pcap files (tools/decode_pcap.py) and tests.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlaynet import api
from overlaynet.errors import ApiError
from overlaynet.paths import HostPaths

# scapy is imported lazily: it takes ~1 s to load, which the rest of the CLI should not pay.

# Enough packets to see a ping's request and reply both ways, without flooding the terminal.
DEFAULT_COUNT = 8
DEFAULT_FILTER = "udp port 4789"
# Inside a container there is no VXLAN to pick out: its eth0 carries only its own frames.
CONTAINER_FILTER = ""
# A capture never runs longer than this: a quiet underlay must not hang the command.
MAX_SECONDS = 30.0
# How long a container's host agent may take to say which container a name means.
AGENT_TIMEOUT = 10.0


class CaptureError(Exception):
    """A capture that cannot start: no such container, or one the user must name better."""


def container_namespace(lab: str, ref: str, host: str | None = None) -> tuple[str, str]:
    """(host, network namespace) of container `ref` (a name or ID) in `lab`.

    Without `host`, every host's agent is asked; a name found on two hosts (standalone
    containers are named per host, as in Docker) is refused rather than guessed.
    """
    # The lab's host list lives with its lifecycle (pyroute2): loaded only when it is needed, as
    # describe() also serves the web view and tools/decode_pcap.py.
    from overlaynet.lab.lifecycle import read_hosts

    hosts = [host] if host else [h.name for h in read_hosts(lab)]
    if not hosts:
        raise CaptureError(f"lab {lab} has no hosts: see `overlaynet lab ls`")
    found: list[tuple[str, str]] = []
    for name in hosts:
        paths = HostPaths(name, lab)
        try:
            doc = api.Client(paths.socket, timeout=AGENT_TIMEOUT).call(
                "container.inspect", container=ref
            )
        except ApiError:
            continue  # not on this host
        except (api.AgentDown, TimeoutError, OSError) as e:
            if host:
                raise CaptureError(f"the agent of {name} does not answer: {e}") from None
            continue
        if doc.get("HostConfig", {}).get("NetworkMode") == "host":
            raise CaptureError(
                f"container {ref} on {name} shares its host's network: capture on {name}"
            )
        found.append((name, paths.kernel_names.container_netns(str(doc["Id"]))))
    where = f"on {host}" if host else f"on any host of lab {lab}"
    if not found:
        raise CaptureError(f"no container {ref} {where}: see `overlaynet -H HOST ps`")
    if len(found) > 1:
        on = ", ".join(h for h, _ in found)
        raise CaptureError(f"container {ref} is on {on}: say which host with -H")
    return found[0]


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


def capture(
    netns_name: str,
    interface: str,
    count: int,
    bpf: str,
    seconds: float,
    keep: Path | None = None,
) -> list[bytes]:
    """Up to `count` frames seen on `interface` in a namespace, within `seconds`; with `keep`,
    the pcap tcpdump wrote is also copied there (even when it holds no frame)."""
    seconds = min(seconds, MAX_SECONDS)
    with tempfile.TemporaryDirectory(prefix="onet-capture-") as tmp:
        out = Path(tmp) / "capture.pcap"
        argv = ["ip", "netns", "exec", netns_name, "timeout", str(seconds)]
        argv += ["tcpdump", "-n", "-i", interface, "-c", str(count), "-w", str(out), "-U"]
        argv += bpf.split()
        subprocess.run(argv, capture_output=True, check=False)
        if keep is not None and out.exists():
            # tcpdump writes into our private folder; the user's path gets a plain copy, so
            # tcpdump's dropped privileges never meet the user's directory permissions.
            shutil.copyfile(out, keep)
        return read_pcap(out) if out.exists() and out.stat().st_size > 24 else []


def render(frames: list[bytes]) -> str:
    blocks = []
    for n, frame in enumerate(frames, 1):
        lines = [f"#{n}  {len(frame)} bytes"]
        lines += [f"  {'  ' * depth}{layer}" for depth, layer in enumerate(describe(frame))]
        blocks.append("\n".join(lines))
    return "\n".join(blocks)


def run(
    lab: str,
    on: str,
    container: str | None,
    host: str | None,
    count: int,
    bpf: str | None,
    seconds: float,
    write: Path | None,
) -> int:
    """`overlaynet lab capture`: listen where asked, print the frames decoded (or, with
    `write`, keep them as a pcap and say how many); 1 when nothing matched in time."""
    from overlaynet.lab.lifecycle import namespaces_of
    from overlaynet.names import lab_namespace

    if count < 1:
        raise CaptureError(f"--count must be at least 1, not {count}")
    # Refused, not cut to MAX_SECONDS without a word; 0 would be `timeout 0`: no limit at all.
    if not 0 < seconds <= MAX_SECONDS:
        raise CaptureError(
            f"--seconds must be more than 0 and at most {MAX_SECONDS:.0f} (a capture stops "
            f"then, so a quiet network cannot hang it), not {seconds:g}"
        )
    if container:
        owner, where = container_namespace(lab, container, host)
        iface, label = "eth0", f"container {container} on {owner}"
        bpf = CONTAINER_FILTER if bpf is None else bpf
    else:
        where = lab_namespace(lab, "ul") if on == "underlay" else lab_namespace(lab, on)
        iface, label = ("br0" if on == "underlay" else "eth0"), on
        bpf = DEFAULT_FILTER if bpf is None else bpf
    if where not in namespaces_of(lab):
        raise CaptureError(f"lab {lab} has no {label}: see `overlaynet lab ls`")
    frames = capture(where, iface, count, bpf, seconds, keep=write)
    if not frames:
        matching = f" matching {bpf!r}" if bpf else ""
        print(f"no frames{matching} on {label} within {seconds:g} s")
        return 1
    if write is not None:
        print(f"{len(frames)} frames from {label} written to {write}")
    else:
        print(render(frames))
    return 0
