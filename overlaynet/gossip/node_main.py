"""A stand-alone gossip agent for one host (tests and demos, until the real agent wires it in):
joins, takes part in networks, publishes entries and keeps its view in a JSON status file.

    python -m overlaynet.gossip.node_main --name h1 --ip 192.168.0.11 --key <hex> \\
        --join 192.168.0.12 --network net1 --entry net1:ep1=value --status /run/h1.json

SIGTERM or SIGINT leaves the cluster gracefully; SIGKILL is a crash."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

import trio

from overlaynet.gossip.config import GOSSIP_PORT, LAB_CONFIG, LAN_CONFIG, lab_config
from overlaynet.gossip.keyring import Keyring
from overlaynet.gossip.service import GossipService

TABLE = "endpoint_table"
# Often enough for a test to watch convergence, rarely enough to cost nothing.
STATUS_INTERVAL = 0.2
# How often to retry joining while no seed answers (agents start in any order).
JOIN_RETRY = 0.5


def status(service: GossipService, networks: list[str]) -> dict[str, object]:
    return {
        "name": service.node.name,
        "members": [
            {
                "name": m.name,
                "addr": f"{m.addr[0]}:{m.addr[1]}",
                "state": m.state.name.lower(),
                "incarnation": m.incarnation,
            }
            for m in service.members()
        ],
        "entries": {
            net: {
                key: {"value": e.value.decode(errors="replace"), "owner": e.owner}
                for key, e in service.entries(TABLE, net).items()
            }
            for net in networks
        },
        "stats": service.stats(),
    }


def write_status(path: Path, data: dict[str, object]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)  # readers never see half a file


async def main_async(args: argparse.Namespace) -> None:
    keyring = Keyring.from_hex(*args.key)
    config = LAB_CONFIG if args.profile == "lab" else LAN_CONFIG
    if args.lab_hosts is not None:
        config = lab_config(args.lab_hosts)
    service = GossipService(args.name, args.ip, keyring, port=args.port, config=config)
    networks: list[str] = list(args.network)
    async with trio.open_nursery() as nursery:
        await nursery.start(service.run)
        if args.join:
            while await service.join(args.join) == 0:
                await trio.sleep(JOIN_RETRY)
        for net in networks:
            service.join_network(net)
        for spec in args.entry:
            net, _, rest = spec.partition(":")
            key, _, value = rest.partition("=")
            service.set_entry(TABLE, net, key, value.encode())
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            nursery.start_soon(_status_loop, service, networks, args.status)
            async for _ in signals:
                await service.leave()
                if args.status:
                    write_status(args.status, status(service, networks))
                nursery.cancel_scope.cancel()
                return


async def _status_loop(service: GossipService, networks: list[str], path: Path | None) -> None:
    while path is not None:
        write_status(path, status(service, networks))
        await trio.sleep(STATUS_INTERVAL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--ip", required=True, help="underlay address to bind and advertise")
    parser.add_argument("--port", type=int, default=GOSSIP_PORT)
    parser.add_argument("--key", action="append", required=True, help="hex key; primary first")
    parser.add_argument("--join", action="append", default=[], help="ip or ip:port")
    parser.add_argument("--network", action="append", default=[])
    parser.add_argument("--entry", action="append", default=[], help="NET:KEY=VALUE")
    parser.add_argument("--status", type=Path)
    parser.add_argument("--profile", choices=("lab", "lan"), default="lab")
    parser.add_argument(
        "--lab-hosts",
        type=int,
        help="the lab profile for a lab of this many hosts (over --profile)",
    )
    trio.run(main_async, parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
