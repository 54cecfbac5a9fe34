"""`overlaynet trace [-H node1] FROM TO [--proto icmp|tcp:PORT|udp:PORT] [--network NET] [--json]`:
one probe from a container, each hop it took, and where and why it stopped.

The CLI only asks agents: the source host plans (DNS inside FROM) and sends; every lab host's
VTEP is armed first and its records fetched after; `trace.verdict` reads them all.
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from overlaynet.cli.main import CliError, call
from overlaynet.dataplane.tracing import TraceMatch
from overlaynet.trace import probe
from overlaynet.trace.model import PeerReport, Resolution, SourceReport
from overlaynet.trace.verdict import explain, table

#: The VTEPs stay armed this long: plan, arm every host, probe (its wait) and collect.
ARM_SECONDS = 15.0
#: Ephemeral source ports / ICMP identifiers for the probe (Linux's default local port range).
PORT_LOW, PORT_HIGH = 32768, 60999
#: A quick answer for hosts that may be down: arming and collecting are local look-ups.
PEER_WAIT = 5.0


def parse_proto(spec: str) -> tuple[str, int]:
    """`icmp`, `tcp:PORT` or `udp:PORT` → (protocol, port)."""
    name, _, port = spec.partition(":")
    if name == "icmp" and not port:
        return "icmp", 0
    if name in ("tcp", "udp") and port.isdigit() and 1 <= int(port) <= 65535:
        return name, int(port)
    raise argparse.ArgumentTypeError(f"invalid protocol {spec!r}: use icmp, tcp:PORT or udp:PORT")


def _on(ns: argparse.Namespace, host: str) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(ns), "host": host})


def _lab_hosts(ns: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, underlay address) of every host of the lab; none outside a lab."""
    if ns.lab in (None, "", "none"):
        return []
    from overlaynet import lab

    return [(h.name, h.ip) for h in lab.read_hosts(ns.lab)]


def run_trace(ns: argparse.Namespace) -> dict[str, Any]:
    """Plan, arm, probe, collect and explain: the trace as JSON."""
    source_host = ns.host or "node1"
    proto, port = ns.proto
    plan = call(ns, "trace.plan", container=ns.source, to=ns.to, network=ns.network)
    resolution = None if plan["resolution"] is None else Resolution.from_json(plan["resolution"])
    if plan["dst_ip"] is None:
        trace = explain(None, [], resolution, plan.get("host", source_host))
        return {**trace.to_json(), "source": None, "peers": []}
    ip_id = 1 + secrets.randbelow(0xFFFE)
    sport = PORT_LOW + secrets.randbelow(PORT_HIGH - PORT_LOW)
    match = {
        "src": plan["src_ip"],
        "dst": plan["dst_ip"],
        "proto": proto,
        "ip_id": ip_id,
        "sport": sport,
        "dport": port,
    }
    others = [(h, ip) for h, ip in _lab_hosts(ns) if h != source_host]
    down: dict[str, str] = {}
    for host in [source_host, *(h for h, _ in others)]:
        try:
            call(_on(ns, host), "trace.arm", wait=PEER_WAIT, seconds=ARM_SECONDS, **match)
        except CliError as e:
            if host == source_host:
                raise
            down[host] = _why_down(str(e))
    packet = probe.build(TraceMatch.from_json(match), ns.size)
    doc = call(
        ns,
        "trace.probe",
        container=ns.source,
        packet=packet.hex(),
        network=plan["network"],
        reply_wait=ns.wait,
    )
    source = SourceReport.from_json(doc)
    peers = []
    for host, ip in others:
        if host in down:
            peers.append(PeerReport(host, ip, down[host]))
            continue
        try:
            got = call(_on(ns, host), "trace.records", wait=PEER_WAIT)
        except CliError as e:
            peers.append(PeerReport(host, ip, _why_down(str(e))))
            continue
        peers.append(PeerReport(host, str(got.get("ip") or ip), None, list(got["vtep"])))
    trace = explain(source, peers, resolution)
    return {
        **trace.to_json(),
        "source": source.to_json(),
        "peers": [p.__dict__ for p in peers],
    }


def _why_down(message: str) -> str:
    if "Cannot connect" in message or "did not answer" in message:
        return "its agent does not answer"
    return message


def cmd_trace(ns: argparse.Namespace) -> int:
    doc = run_trace(ns)
    if ns.json:
        print(json.dumps(doc, indent=4))
    else:
        from overlaynet.trace.model import Hop, Stop, Trace

        trace = Trace(
            [Hop(**h) for h in doc["hops"]],
            doc["reached"],
            None if doc["stop"] is None else Stop(**doc["stop"]),
        )
        print(table(trace))
    return 0 if doc["reached"] else 1


def register(sub: Any) -> None:
    """Add `trace` to the CLI's top-level commands."""
    c = sub.add_parser(
        "trace", help="send one probe from a container and show each hop, or where it stopped"
    )
    c.add_argument("source", metavar="FROM_CONTAINER")
    c.add_argument("to", metavar="TO", help="a container name (resolved in FROM) or an IPv4")
    c.add_argument(
        "--proto",
        type=parse_proto,
        default=("icmp", 0),
        help="icmp (default), tcp:PORT or udp:PORT",
    )
    c.add_argument("--network", default=None, help="the network of FROM to trace on")
    c.add_argument(
        "--size", type=int, default=84, help="probe size in octets (IPv4 total length, DF set)"
    )
    c.add_argument(
        "--wait", type=float, default=2.0, help="seconds to wait for the reply (at most 10)"
    )
    c.add_argument("--json", action="store_true", help="the hops and records as JSON")
    c.set_defaults(func=cmd_trace)
