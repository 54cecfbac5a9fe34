"""`overlaynet network vtep NET`: the data plane of one overlay network on one host (VNI, VTEP,
peers, FDB, ARP answers, counters), drawn from the agent's `network inspect`.

A swarm overlay reaches a host only with its first container there (Docker's lazy extension):
before that the host's inspect has the network's VNI but no VTEP, and the view says so in one
line instead of failing on the missing fields.
"""

from __future__ import annotations

import argparse
from typing import Any

from overlaynet.cli.main import CliError, call
from overlaynet.cli.tables import table


def no_vtep_reason(network: str, overlay: dict[str, Any]) -> str | None:
    """Why an overlay has no VTEP to show on this host, or None when it has one."""
    if overlay.get("VTEP"):
        return None
    return (
        f"network {network} has no VTEP on this host yet: a swarm overlay reaches a host with "
        f"its first container there (`run --network {network} …` here, or look with -H on a "
        "host that runs one)"
    )


def render(network: str, doc: dict[str, Any]) -> str:
    """The view of `network inspect`'s document; CliError when there is nothing to show."""
    overlay = doc.get("Overlay")
    if overlay is None:
        raise CliError(f"network {network} is not an overlay network")
    reason = no_vtep_reason(network, overlay)
    if reason is not None:
        raise CliError(reason)
    dp = overlay.get("DataPlane") or {}
    lines = [
        f"VNI {overlay['VNI']}   VTEP {overlay['VTEP']}   TAP {dp.get('tap', '-')}",
        f"peers (head-end replication): {' '.join(overlay.get('Peers') or []) or '-'}",
    ]
    if dp.get("accel"):
        lines.append(f"accel: {dp['accel']}")
    lane = dp.get("lane")
    if lane:
        lines.append(
            f"lane: {lane['mode']} ({lane['wakeups']} wake-ups, {lane['demoted']} demoted; "
            "pings and other lone frames in a thread of their own)"
        )
    if dp.get("tap_tso") and not dp.get("offload"):
        lines.append("tap: tso (super-frames cut into RFC 7348 segments in c)")
    learning = dp.get("learning")
    if learning:
        lines.append(f"MAC learning: on, {learning['learned']} of {learning['limit']} learned\n")
    else:
        lines.append("MAC learning: off (the FDB comes from gossip or `network fdb`)\n")
    if dp.get("offload"):
        wires = " ".join(f"{p}={w}" for p, w in sorted(dp["offload"]["wire"].items()))
        tap = dp["offload"].get("tap", "-")
        lines.append(f"offload: on, tap: {tap}, wire per peer: {wires or '-'}\n")
    fdb = [
        [r["mac"], r["remote_ip"], str(r["tx_frames"]), str(r["rx_frames"])]
        for r in dp.get("fdb", [])
    ]
    lines.append(table(["MAC", "VTEP", "TX FRAMES", "RX FRAMES"], fdb) + "\n")
    arp = [[ip, mac] for ip, mac in sorted(dp.get("arp", {}).items())]
    lines.append(table(["IP (ARP ANSWERED LOCALLY)", "MAC"], arp) + "\n")
    counters = [[k, str(v)] for k, v in sorted(dp.get("counters", {}).items())]
    lines.append(table(["COUNTER", "VALUE"], counters))
    return "\n".join(lines)


def cmd_network_vtep(ns: argparse.Namespace) -> int:
    """The data plane of one overlay network: peers, FDB, ARP answers, counters."""
    print(render(ns.network, call(ns, "network.inspect", network=ns.network)))
    return 0
