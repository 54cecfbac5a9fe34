"""`network rm NETWORK…`, with docker's question before the routing mesh's network goes.

Removing `ingress` takes every published port of the swarm with it, and here it cannot be made
again (no `network create --ingress`): docker asks first (cli/command/network/remove.go), and so
does this, on stdin; anything but y/Y keeps the network, and so does a stdin that is not a
terminal and stays silent (prune.confirm's bound). Other networks go as they always did,
each name echoed, an error for one not stopping the others.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from overlaynet.cli.main import CliError, call
from overlaynet.cli.prune import confirm

INGRESS_WARNING = (
    "WARNING! This is the routing mesh's network: without it no service can publish a port on "
    "every node (mode=host only), and this swarm cannot create it again."
)


def _is_ingress(ns: argparse.Namespace, ref: str) -> bool:
    try:
        doc = call(ns, "network.inspect", network=ref)
    except CliError:
        return False  # the removal itself says what is wrong with the name
    return bool(doc.get("Ingress"))


def cmd_network_rm(
    ns: argparse.Namespace, stdin: TextIO | None = None, stdout: TextIO | None = None
) -> int:
    status = 0
    for ref in ns.networks:
        try:
            if _is_ingress(ns, ref) and not confirm(
                INGRESS_WARNING, stdin or sys.stdin, stdout or sys.stdout
            ):
                continue
            call(ns, "network.rm", network=ref)
            print(ref)
        except CliError as e:
            print(e, file=sys.stderr)
            status = e.status
    return status
