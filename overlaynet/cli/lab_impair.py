"""`lab impair`, `lab partition`, `lab heal`: break the lab's network on purpose and mend it
(the work is in `overlaynet.lab.impair`; this module parses and prints)."""

from __future__ import annotations

import argparse
from typing import Any

from overlaynet.api import AgentDown
from overlaynet.errors import ApiError

_IMPAIR_HELP = """\
Overlay traffic (VXLAN) that NODE sends is impaired in its VTEP: loss, delay, jitter,
duplicate, reorder and rate, seeded with --seed so an experiment repeats. Everything else NODE
sends on the underlay (gossip, cluster) gets --loss only, from nftables (table ip onet_impair):
nftables cannot delay, so delay, jitter, duplicate, reorder and rate apply to overlay traffic
only. Options left out are not impaired; `lab heal NODE` ends it."""


def register(lab_subparsers: Any) -> None:
    """Add the three verbs under `overlaynet lab`."""
    c = lab_subparsers.add_parser(
        "impair",
        help="impair what a host sends (loss, delay, ...)",
        description=_IMPAIR_HELP,
    )
    c.add_argument("node", help="the host whose outgoing traffic is impaired")
    c.add_argument("--to", metavar="NODE", help="only toward this host (default: every host)")
    c.add_argument("--loss", type=float, default=0.0, metavar="P", help="drop P %% of packets")
    c.add_argument("--delay", type=float, default=0.0, metavar="MS", help="overlay only")
    c.add_argument("--jitter", type=float, default=0.0, metavar="MS", help="± on the delay")
    c.add_argument("--duplicate", type=float, default=0.0, metavar="P", help="overlay only")
    c.add_argument("--reorder", type=float, default=0.0, metavar="P", help="overlay only")
    c.add_argument("--rate", type=float, metavar="MBIT", help="overlay only, Mbit/s")
    c.add_argument("--seed", type=int, metavar="N", help="repeat the same random decisions")
    c.add_argument("--name", help="lab name (default: --lab)")
    c.set_defaults(func=cmd_lab_impair)
    c = lab_subparsers.add_parser(
        "partition",
        help="cut the lab into groups that cannot reach each other",
        description="Each GROUP is hosts joined by commas; one group alone is cut off from the "
        "rest, and hosts not named join the first group. All traffic between groups is dropped "
        "on the underlay (nftables), overlay included.",
    )
    c.add_argument("groups", nargs="+", metavar="GROUP", help="e.g. node1,node2 node3")
    c.add_argument("--name", help="lab name (default: --lab)")
    c.set_defaults(func=cmd_lab_partition)
    c = lab_subparsers.add_parser("heal", help="end impairments and partitions")
    c.add_argument("node", nargs="?", help="only those this host is part of (default: all)")
    c.add_argument("--name", help="lab name (default: --lab)")
    c.set_defaults(func=cmd_lab_heal)


def _lab(ns: argparse.Namespace) -> str:
    return str(ns.name or ns.lab)


def _run(fn: Any, *args: Any) -> int:
    from overlaynet.cli.main import CliError
    from overlaynet.dataplane.impair import ImpairmentError
    from overlaynet.lab.lifecycle import LabError

    try:
        record = fn(*args)
    except (LabError, ImpairmentError, ApiError, AgentDown, ValueError) as e:
        raise CliError(str(e)) from None
    lines = record.lines()
    print("\n".join(lines) if lines else "no impairments or partitions")
    return 0


def cmd_lab_impair(ns: argparse.Namespace) -> int:
    from overlaynet.cli.main import CliError
    from overlaynet.dataplane.impair import Impairment, ImpairmentError
    from overlaynet.lab import impair

    try:
        spec = Impairment(ns.loss, ns.delay, ns.jitter, ns.duplicate, ns.reorder, ns.rate, ns.seed)
    except ImpairmentError as e:
        raise CliError(str(e)) from None
    if spec.empty:
        # Installing nothing would replace what NODE has (`lab impair node1` to look at it
        # healed it without a word): refused, nothing changed.
        raise CliError(
            f"lab impair {ns.node} needs at least one of --loss, --delay, --duplicate, "
            f"--reorder, --rate: nothing was changed (`lab ls` shows what applies, "
            f"`lab heal {ns.node}` ends it)"
        )
    return _run(impair.impair, _lab(ns), ns.node, ns.to, spec)


def cmd_lab_partition(ns: argparse.Namespace) -> int:
    from overlaynet.lab import impair

    return _run(impair.partition, _lab(ns), ns.groups)


def cmd_lab_heal(ns: argparse.Namespace) -> int:
    from overlaynet.lab import impair

    return _run(impair.heal, _lab(ns), ns.node)


def print_active(lab: str) -> None:
    """`lab ls`'s part: the lab's active impairments and partitions, if any."""
    from overlaynet.lab import impair

    lines = impair.active(lab)
    for line in lines:
        print(f"{lab}: {line}")
    if any(line.startswith("impair ") for line in lines):
        print(f"{lab}: ({impair.OVERLAY_ONLY}; the underlay gets loss only)")


#: Verbs that change kernel objects (nftables in the lab's namespaces): main asks for root.
NEEDS_ROOT = (cmd_lab_impair, cmd_lab_partition, cmd_lab_heal)
