"""Under-the-hood views: `overlaynet stats` (every counter, by plane) and `overlaynet dns NETWORK`
(the names a container on that network resolves, and where each came from).

Both ask the agent (`stats`, `dns.records`) and print; `--format json` prints the answer as is.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from overlaynet.cli.main import CliError, call
from overlaynet.cli.tables import table

FORMATS = ("table", "json")


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in labels.items()) or "-"


def _value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def stats_table(doc: dict[str, Any], planes: list[str] | None = None) -> str:
    """PLANE, COUNTER, LABELS, VALUE: planes in the agent's order, counters as it sorts them."""
    rows = [
        [plane, s["counter"], _labels(s["labels"]), _value(s["value"])]
        for plane, samples in doc["planes"].items()
        if not planes or plane in planes
        for s in samples
    ]
    return table(["PLANE", "COUNTER", "LABELS", "VALUE"], rows)


def _origin(origin: dict[str, str]) -> str:
    source = origin.get("Source", "unknown")
    if source == "local":
        return f"local ({origin.get('Container', '')})"
    if source == "gossip":
        return f"gossip {origin.get('Owner', '')} ({origin.get('HostIP', '')})"
    return source


def dns_table(doc: dict[str, Any]) -> str:
    """NAME, KIND, ADDRESS, TTL, ORIGIN: one row per record."""
    rows = [
        [r["Name"], r["Kind"], r["Address"], str(r["TTL"]), _origin(r["Origin"])]
        for r in doc["Records"]
    ]
    return table(["NAME", "KIND", "ADDRESS", "TTL", "ORIGIN"], rows)


def cmd_stats(ns: argparse.Namespace) -> int:
    doc = call(ns, "stats")
    if ns.format == "json":
        print(json.dumps(doc, indent=4))
        return 0
    unknown = sorted(set(ns.plane or []) - set(doc["planes"]))
    if unknown:
        raise CliError(f"no plane {unknown[0]!r}: choose from {', '.join(doc['planes'])}")
    print(stats_table(doc, ns.plane))
    return 0


def cmd_dns(ns: argparse.Namespace) -> int:
    doc = call(ns, "dns.records", network=ns.network)
    if ns.format == "json":
        print(json.dumps(doc, indent=4))
        return 0
    if not doc["ResolvesNames"]:
        print(f"network {doc['Network']} has no embedded name resolution (as Docker's bridge)")
    print(dns_table(doc))
    return 0


def register(sub: Any) -> None:
    """Add `stats` and `dns` to the CLI's top-level commands."""
    c = sub.add_parser("stats", help="every VTEP, DNS, gossip, manager and API counter")
    c.add_argument("--format", choices=FORMATS, default="table", help="'table' or 'json'")
    c.add_argument(
        "--plane", action="append", help="only this plane (vtep, dns, gossip, …); repeatable"
    )
    c.set_defaults(func=cmd_stats)
    c = sub.add_parser("dns", help="the names a container on NETWORK resolves, and their origin")
    c.add_argument("network")
    c.add_argument("--format", choices=FORMATS, default="table", help="'table' or 'json'")
    c.set_defaults(func=cmd_dns)
