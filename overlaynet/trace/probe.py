"""The probe itself: built with scapy, resolved and sent from inside a container's namespace,
watched by short AF_PACKET captures on the ports it crosses on the source host.

Blocking; the agent runs it in a worker thread. Every capture is bounded in frames and time,
every socket is closed before returning, and nothing is sent but the one probe (and, for a
name, one DNS query to the container's own resolver).

The CLI imports this module (through `trace.run`) only to build and read probes: the namespace
plumbing (`host.nssocket`) is imported inside the functions the agent alone calls, so no CLI
module loads host code (issue 11).
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import select
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from overlaynet.dataplane.tracing import Matcher, TraceMatch
from overlaynet.trace.model import Capture, Resolution
from overlaynet.wire.ethernet import mac_to_str

#: <linux/if_ether.h>: every protocol, for AF_PACKET captures.
ETH_P_ALL = 0x0003
#: Frames read from all capture sockets together before giving up: a busy bridge cannot keep
#: the probe's worker thread reading forever.
MAX_FRAMES = 2000
#: <asm-generic/socket.h>: the kernel's receive time of each frame (struct timespec), so hops
#: are timed when the frame crossed the port, not when this thread got round to reading it.
SO_TIMESTAMPNS = 35
_TIMESPEC = struct.Struct("@qq")
#: The container's resolver (Docker's embedded DNS address).
RESOLVER = "127.0.0.11"
#: DNS answer wait: the embedded resolver answers local names at once.
DNS_TIMEOUT = 2.0
#: After the reply reached the container, captures keep reading this long so the frames of the
#: host ports that were read later in the same poll round are not lost.
SETTLE = 0.05


def build(match: TraceMatch, size: int) -> bytes:
    """The probe's IPv4 packet, DF set, `size` octets in all (padding after the L4 header
    carries a recognisable text): ICMP echo (id = match.sport), TCP SYN, or UDP. Called by
    the CLI, never in the agent (see `describe`)."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.packet import Raw

    ip = IP(src=match.src, dst=match.dst, id=match.ip_id, flags="DF", ttl=64)
    l4: Any
    if match.proto == "icmp":
        l4 = ICMP(type=8, id=match.sport, seq=1)
        header = 28
    elif match.proto == "tcp":
        l4 = TCP(sport=match.sport, dport=match.dport, flags="S", seq=match.ip_id << 16)
        header = 40
    else:
        l4 = UDP(sport=match.sport, dport=match.dport)
        header = 28
    pad = b"overlaynet-trace " * (size // 17 + 1)
    payload = pad[: max(0, size - header)]
    return bytes(ip / l4 / Raw(payload)) if payload else bytes(ip / l4)


def describe(frame: bytes) -> str:
    """A reply frame in a few words: echo-reply, SYN-ACK, RST, ICMP type/code. Read from the
    bytes (no scapy in the agent: its import reads the host's routes, and a library in the
    agent may have replaced `socket.inet_ntop`)."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return "a frame"
    l4 = 14 + (frame[14] & 0x0F) * 4
    proto = frame[23]
    if proto == 1 and len(frame) >= l4 + 8:
        kind, code = frame[l4], frame[l4 + 1]
        if kind == 0:
            return f"ICMP echo-reply id {int.from_bytes(frame[l4 + 4 : l4 + 6], 'big')}"
        if kind == 3 and code == 3:
            return "ICMP port unreachable"
        return f"ICMP type {kind} code {code}"
    if proto == 6 and len(frame) >= l4 + 14:
        sport = int.from_bytes(frame[l4 : l4 + 2], "big")
        flags = frame[l4 + 13]
        if flags & 0x12 == 0x12:
            return f"TCP SYN-ACK from port {sport} (listening)"
        if flags & 0x04:
            return f"TCP RST from port {sport} (closed)"
        return f"TCP flags 0x{flags:02x}"
    if proto == 17 and len(frame) >= l4 + 8:
        return f"UDP from port {int.from_bytes(frame[l4 : l4 + 2], 'big')}"
    return f"IPv4 protocol {proto}"


def resolve(netns: str, name: str, network: str, subnet: str | None = None) -> Resolution:
    """Ask the container's resolver (127.0.0.11, inside its namespace) for `name`'s A record:
    the first in `subnet` when one is given (a container on several networks has a record on
    each, in no fixed order), else the first."""
    from dnslib import QTYPE, RCODE, DNSRecord

    query = DNSRecord.question(name, "A")
    from overlaynet.host.nssocket import socket_in_netns

    sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(DNS_TIMEOUT)
        sock.sendto(query.pack(), (RESOLVER, 53))
        data, _ = sock.recvfrom(4096)
    except OSError as e:
        return Resolution(name, RESOLVER, network, None, f"no answer ({e})")
    finally:
        sock.close()
    try:
        answer = DNSRecord.parse(data)
    except Exception as e:  # dnslib raises its own DNSError and struct/index errors
        return Resolution(name, RESOLVER, network, None, f"a malformed answer ({e})")
    rcode = str(RCODE.get(answer.header.rcode))
    records = [rr for rr in answer.rr if rr.rtype == QTYPE.A]
    if subnet is not None:
        within = ipaddress.IPv4Network(subnet, strict=False)
        records = [rr for rr in records if ipaddress.IPv4Address(str(rr.rdata)) in within]
    for rr in records:
        if rr.rtype == QTYPE.A:
            record = f"{str(rr.rname).rstrip('.')} {rr.ttl} IN A {rr.rdata}"
            return Resolution(name, RESOLVER, network, str(rr.rdata), rcode, record)
    missing = "no A record" + (f" in {subnet}" if subnet is not None else "")
    return Resolution(name, RESOLVER, network, None, rcode if rcode != "NOERROR" else missing)


def match_of(packet: bytes) -> TraceMatch:
    """The trace match of a probe packet (IPv4, no options): addresses, protocol, IP id and
    the ports (ICMP: the echo identifier). ValueError for anything else."""
    if len(packet) < 28 or packet[0] != 0x45:
        raise ValueError("the probe must be an IPv4 packet without options")
    if int.from_bytes(packet[2:4], "big") != len(packet):
        raise ValueError("the probe's IPv4 total length is not its length")
    proto = {1: "icmp", 6: "tcp", 17: "udp"}.get(packet[9])
    if proto is None:
        raise ValueError(f"probe protocol {packet[9]}: icmp, tcp or udp")
    src = socket.inet_ntoa(packet[12:16])
    dst = socket.inet_ntoa(packet[16:20])
    ip_id = int.from_bytes(packet[4:6], "big")
    if proto == "icmp":
        if packet[20] != 8:
            raise ValueError("an ICMP probe is an echo request")
        return TraceMatch(src, dst, proto, ip_id, int.from_bytes(packet[24:26], "big"))
    sport, dport = int.from_bytes(packet[20:22], "big"), int.from_bytes(packet[22:24], "big")
    return TraceMatch(src, dst, proto, ip_id, sport, dport)


@dataclass
class ProbeResult:
    """What sending one probe showed on the source host."""

    sent_at: float | None = None
    send_error: str | None = None
    reply_at: float | None = None
    reply: str = ""
    captures: list[Capture] = field(default_factory=list)


def _packet_socket(ifname: str) -> socket.socket:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.bind((ifname, 0))
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def send_and_watch(
    netns: str,
    ifname: str,
    veth: str,
    ports: list[str],
    match: TraceMatch,
    packet: bytes,
    wait: float,
) -> ProbeResult:
    """Open captures (the container's `ifname` in `netns`, the host end `veth`, the other
    bridge `ports` in the calling thread's namespace), send `packet` from `netns`, read until
    the reply reaches the container or `wait` seconds pass."""
    from overlaynet.host.nssocket import run_in_netns

    matcher = Matcher(match)
    result = ProbeResult()
    sockets: dict[int, tuple[str, str, socket.socket]] = {}
    try:
        inner = run_in_netns(netns, lambda: _packet_socket(ifname))
        sockets[inner.fileno()] = ("container", ifname, inner)
        for stage, port in [("veth", veth)] + [("port", p) for p in ports if p != veth]:
            try:
                sock = _packet_socket(port)
            except OSError:
                continue  # a port that went away meanwhile: nothing to see there
            sockets[sock.fileno()] = (stage, port, sock)
        # IPPROTO_RAW (255) implies IP_HDRINCL: our header, IP id and DF included, is sent as is.
        raw = run_in_netns(
            netns, lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
        )
        with contextlib.closing(raw):
            result.sent_at = time.time()
            try:
                raw.sendto(packet, (match.dst, 0))
            except OSError as e:
                result.send_error = errno.errorcode.get(e.errno or 0, str(e))
                return result
        _watch(sockets, matcher, result, time.monotonic() + wait)
        return result
    finally:
        for _, _, sock in sockets.values():
            sock.close()


_STAMP_SPACE = socket.CMSG_SPACE(_TIMESPEC.size)
_ETHERTYPE_ARP = b"\x08\x06"


def arp_kind(frame: bytes, address: bytes) -> str | None:
    """The ARP part of a frame: "arp-request" for a who-has `address`, "arp-reply" for its
    is-at, else None (what a container's kernel does before it can send a probe to a
    neighbour it does not know)."""
    if len(frame) < 42 or frame[12:14] != _ETHERTYPE_ARP:
        return None
    op = frame[20:22]
    if op == b"\x00\x01" and frame[38:42] == address:
        return "arp-request"
    if op == b"\x00\x02" and frame[28:32] == address:
        return "arp-reply"
    return None


def _stamp(ancillary: list[tuple[int, int, bytes]]) -> float:
    """The frame's kernel receive time (epoch seconds), or now when the kernel gave none."""
    for level, kind, value in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
            seconds, nanos = _TIMESPEC.unpack_from(value)
            return float(seconds) + float(nanos) / 1e9
    return time.time()


def _watch(
    sockets: dict[int, tuple[str, str, socket.socket]],
    matcher: Matcher,
    result: ProbeResult,
    deadline: float,
) -> None:
    poller = select.poll()
    for fd in sockets:
        poller.register(fd, select.POLLIN)
    frames = 0
    while frames < MAX_FRAMES:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        for fd, _ in poller.poll(left * 1000):
            stage, port, sock = sockets[fd]
            while frames < MAX_FRAMES:
                try:
                    frame, ancillary, _flags, _addr = sock.recvmsg(65536, _STAMP_SPACE)
                except BlockingIOError:
                    break
                frames += 1
                kind = matcher.classify(frame) or arp_kind(frame, matcher.next_hop)
                if kind is None:
                    continue
                now = _stamp(ancillary)
                seen = (stage, port, kind)
                if any((c.stage, c.port, c.kind) == seen for c in result.captures):
                    continue  # the first sighting is the one that counts
                result.captures.append(
                    Capture(stage, port, kind, now, mac_to_str(frame[6:12]), mac_to_str(frame[0:6]))
                )
                if stage == "container" and kind == "reply":
                    result.reply_at = now
                    result.reply = describe(frame)
                    deadline = min(deadline, time.monotonic() + SETTLE)
