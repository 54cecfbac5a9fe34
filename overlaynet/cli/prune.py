"""`container prune`, `network prune` and `system prune`: remove what nothing uses, as docker does.

Through the agent's ordinary requests (ls, inspect, rm): stopped containers; user networks of
this host with no container (never `bridge`, `host`, `none`, `docker_gwbridge` or `ingress`,
never a swarm network). Without `-f` they ask on stdin first, with docker's words. Images are a
catalog here (nothing to reclaim), so the total is docker's `0B`.
"""

from __future__ import annotations

import argparse
import os
import select
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from overlaynet.cli.main import CliError, call

# Networks every host (or swarm node) has and no prune removes (docker's own, and the routing
# mesh's, which the swarm keeps).
PROTECTED_NETWORKS = frozenset({"bridge", "host", "none", "docker_gwbridge", "ingress"})

CONTAINER_WARNING = "WARNING! This will remove all stopped containers."
NETWORK_WARNING = (
    "WARNING! This will remove all custom networks not used by at least one container."
)
SYSTEM_WARNING = """WARNING! This will remove:
  - all stopped containers
  - all networks not used by at least one container
  - all dangling images
  - unused build cache
"""
QUESTION = "Are you sure you want to continue? [y/N] "
# Nothing here holds disk space a prune could give back (images are the catalog's).
RECLAIMED = "Total reclaimed space: 0B"


# How long a prompt waits for a stdin that is not a terminal (a pipe, a file) to answer. A
# script that means to answer has written its `y` already; one that stays open and silent
# (`sleep 20 | overlaynet network rm ingress`) would otherwise hold the command forever.
PIPE_ANSWER_WAIT = 5.0


def _answer_from_pipe(fd: int, wait: float) -> str | None:
    """One line read from a descriptor that is not a terminal, byte by byte (nothing past the
    line is taken from the stream); None if no whole line or end of input came within `wait`."""
    deadline = time.monotonic() + wait
    got = bytearray()
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return None
        byte = os.read(fd, 1)
        if byte in (b"", b"\n"):
            return got.decode(errors="replace")
        got += byte


def confirm(warning: str, stdin: TextIO, stdout: TextIO, wait: float = PIPE_ANSWER_WAIT) -> bool:
    """docker's prompt (cli/internal/prompt.Confirm): the warning, the question, and yes only
    for y or Y. A stdin that is not a terminal has `wait` seconds to answer; silence is no,
    said in one line."""
    stdout.write(f"{warning}\n{QUESTION}")
    stdout.flush()
    try:
        fd = stdin.fileno()
    except (AttributeError, OSError, ValueError):
        fd = None  # an in-memory stream: it has its answer already
    if fd is None or stdin.isatty():
        answer: str | None = stdin.readline()
    else:
        answer = _answer_from_pipe(fd, wait)
    if answer is None:
        stdout.write(f"\nno answer on stdin (not a terminal) within {wait:g} s: taken as no\n")
        stdout.flush()
        return False
    return answer.strip() in ("y", "Y")


def stopped_containers(rows: list[dict[str, Any]]) -> list[str]:
    """Ids of `ps --all` rows that do not run (created and exited ones, as docker prunes)."""
    return [r["id"] for r in rows if r["state"] not in ("running", "paused", "restarting")]


def prunable_networks(rows: list[dict[str, Any]], used: Callable[[str], bool]) -> list[str]:
    """Names of this host's user networks no container uses; `used(id)` asks about one."""
    return [
        r["name"]
        for r in rows
        if r["name"] not in PROTECTED_NETWORKS and r.get("scope") == "local" and not used(r["id"])
    ]


def report(title: str, names: list[str]) -> str:
    """`Deleted Containers:` and one name per line, then a blank line; nothing if none."""
    return f"{title}:\n" + "".join(f"{n}\n" for n in names) + "\n" if names else ""


def _prune_containers(ns: argparse.Namespace) -> list[str]:
    deleted = []
    for cid in stopped_containers(call(ns, "container.ls", all=True)):
        try:
            call(ns, "container.rm", container=cid, force=False)
        except CliError as e:  # started again meanwhile, or gone: not ours to remove now
            print(e, file=sys.stderr)
            continue
        deleted.append(cid)
    return deleted


def _network_used(ns: argparse.Namespace, network_id: str) -> bool:
    try:
        doc = call(ns, "network.inspect", network=network_id)
    except CliError:
        return True  # gone or unreadable: leave it alone
    return bool(doc.get("Containers"))


def _prune_networks(ns: argparse.Namespace) -> list[str]:
    rows = call(ns, "network.ls")
    deleted = []
    for name in prunable_networks(rows, lambda nid: _network_used(ns, nid)):
        try:
            call(ns, "network.rm", network=name)
        except CliError as e:  # a container joined it meanwhile
            print(e, file=sys.stderr)
            continue
        deleted.append(name)
    return deleted


def cmd_container_prune(ns: argparse.Namespace) -> int:
    if not ns.force and not confirm(CONTAINER_WARNING, sys.stdin, sys.stdout):
        return 0
    print(report("Deleted Containers", _prune_containers(ns)) + RECLAIMED)
    return 0


def cmd_network_prune(ns: argparse.Namespace) -> int:
    if not ns.force and not confirm(NETWORK_WARNING, sys.stdin, sys.stdout):
        return 0
    print(report("Deleted Networks", _prune_networks(ns)), end="")
    return 0


def cmd_system_prune(ns: argparse.Namespace) -> int:
    if not ns.force and not confirm(SYSTEM_WARNING, sys.stdin, sys.stdout):
        return 0
    containers = _prune_containers(ns)  # first: their networks may be unused afterwards
    networks = _prune_networks(ns)
    print(
        report("Deleted Containers", containers) + report("Deleted Networks", networks) + RECLAIMED
    )
    return 0


def _force(p: argparse.ArgumentParser) -> None:
    p.add_argument("-f", "--force", action="store_true", help="do not prompt for confirmation")


def register(sub: Any, container: Any, network: Any) -> None:
    """`container prune`, `network prune` and `system prune` (the `system` group is made here)."""
    p = container.add_parser("prune", help="remove all stopped containers")
    _force(p)
    p.set_defaults(func=cmd_container_prune)
    p = network.add_parser("prune", help="remove all unused networks")
    _force(p)
    p.set_defaults(func=cmd_network_prune)
    system = sub.add_parser("system", help="manage overlaynet").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    p = system.add_parser("prune", help="remove stopped containers and unused networks")
    p.add_argument("-a", "--all", action="store_true", help="accepted for docker compatibility")
    _force(p)
    p.set_defaults(func=cmd_system_prune)
