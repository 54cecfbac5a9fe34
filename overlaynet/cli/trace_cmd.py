"""`overlaynet trace [-H node1] FROM TO [--proto icmp|tcp:PORT|udp:PORT] [--network NET] [--json]`:
one probe from a container, each hop it took, and where and why it stopped.

The CLI only asks agents: the source host plans (DNS inside FROM) and sends; every lab host's
VTEP is armed first and its records fetched after; `trace.verdict` reads them all. The
orchestration is `trace.run` (the web view runs it too); this module is its command line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from overlaynet.cli.main import DEFAULT_WAIT, CliError, call
from overlaynet.trace import run
from overlaynet.trace.verdict import table


def parse_proto(spec: str) -> tuple[str, int]:
    """`icmp`, `tcp:PORT` or `udp:PORT` → (protocol, port), for argparse."""
    try:
        return run.parse_proto(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _lab_hosts(ns: argparse.Namespace) -> list[tuple[str, str]]:
    """(name, underlay address) of every host of the lab; none outside a lab."""
    if ns.lab in (None, "", "none"):
        return []
    from overlaynet import lab

    return [(h.name, h.ip) for h in lab.read_hosts(ns.lab)]


def _partitions(ns: argparse.Namespace) -> run.Partitions | None:
    """The lab's partition rules as the trace reads them; none outside a lab."""
    if ns.lab in (None, "", "none"):
        return None
    from overlaynet.trace.partition import partitioned

    lab_name = str(ns.lab)
    return lambda source, peers: partitioned(lab_name, source, peers)


def run_trace(ns: argparse.Namespace) -> dict[str, Any]:
    """The trace as JSON (trace.run does the work; this CLI only supplies its `call`)."""

    source_host = ns.host or "node1"

    def ask(host: str, op: str, wait: float | None, **args: Any) -> Any:
        # The source host is asked as -H said (none: the CLI's own default host).
        on = ns if host == source_host else argparse.Namespace(**{**vars(ns), "host": host})
        try:
            return call(on, op, DEFAULT_WAIT if wait is None else wait, **args)
        except CliError as e:
            raise run.CallFailed(str(e)) from None

    proto, port = ns.proto
    req = run.TraceRequest(source_host, ns.source, ns.to, proto, port, ns.network, ns.size, ns.wait)
    try:
        return run.run_trace(ask, req, _lab_hosts(ns), partitions=_partitions(ns))
    except run.CallFailed as e:
        raise CliError(str(e)) from None


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
            outcome=str(doc.get("outcome", "")),
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
