"""What the page may do, not only show, when the server runs with `--allow-actions`: a bounded
capture of the lab's underlay (tcpdump on the lab's switch, lab/capture.py) and a ping from one
of the lab's containers to another's address (through the agent's API, as `overlaynet exec`).

Everything is bounded: frames and seconds per capture, pings per request, one action at a time.
Targets are only addresses of the lab's own containers (from the server's view), so no action
sends a packet anywhere else.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import trio

from overlaynet.lab import capture
from overlaynet.names import lab_namespace
from overlaynet.web.model import Record
from overlaynet.wire.vxlan import VXLAN_PORT

# Enough frames for a 3-ping exchange both ways plus its ARP, few enough to read on one screen.
CAPTURE_COUNT = 24
# A capture stops after this long even on a quiet underlay; a 3-ping run takes ~2 s.
CAPTURE_SECONDS = 5.0
# tcpdump needs a moment to open its socket: the ping starts after it (not an assertion).
CAPTURE_SETTLE = 0.7
PING_COUNT = 3
# Per ping reply wait (ping -W); the whole ping is bounded by PING_TIMEOUT.
PING_WAIT = 1
PING_TIMEOUT = 10.0


class ActionRefused(ValueError):
    """The request names something the lab does not have, or is malformed."""


@dataclass(frozen=True)
class PingSpec:
    host: str
    container: str
    target: str


def ping_spec(body: Mapping[str, Any], view: Mapping[str, Record]) -> PingSpec | None:
    """The ping a capture request asks for (None: no ping), checked against the view."""
    container = body.get("container")
    if not container:
        return None
    host, target = body.get("host"), body.get("target")
    if not all(isinstance(v, str) for v in (host, container, target)):
        raise ActionRefused("a ping needs host, container and target as strings")
    assert isinstance(host, str) and isinstance(container, str) and isinstance(target, str)
    try:
        ipaddress.IPv4Address(target)
    except ValueError:
        raise ActionRefused(f"target {target!r} is no IPv4 address") from None
    ctrs = [r for r in view.values() if r.get("kind") == "container"]
    if not any(c["host"] == host and c["name"] == container for c in ctrs):
        raise ActionRefused(f"no container {container!r} on host {host!r} in this lab")
    lab_ips = {n["ip"].split("/")[0] for c in ctrs for n in c.get("networks", []) if n.get("ip")}
    if target not in lab_ips:
        raise ActionRefused(f"{target} is no address of this lab's containers")
    return PingSpec(host, container, target)


def network_of(body: Mapping[str, Any], view: Mapping[str, Record]) -> Record:
    net_id = body.get("network")
    rec = view.get(f"net/{net_id}") if isinstance(net_id, str) else None
    if rec is None or rec.get("driver") != "overlay":
        raise ActionRefused(f"no overlay network {net_id!r} in this lab")
    return rec


async def capture_underlay(lab: str, count: int = CAPTURE_COUNT) -> list[bytes]:
    """Up to `count` VXLAN datagrams seen on the lab's switch within CAPTURE_SECONDS."""
    return await trio.to_thread.run_sync(
        capture.capture,
        lab_namespace(lab, "ul"),
        "br0",
        count,
        f"udp port {VXLAN_PORT}",
        CAPTURE_SECONDS,
    )


async def ping(lab: str, spec: PingSpec) -> str:
    """`overlaynet exec CONTAINER ping …` on the container's host; ping's summary line."""
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab, "-H", spec.host, "exec"]
    argv += [spec.container, "ping", "-c", str(PING_COUNT), "-W", str(PING_WAIT), spec.target]
    with trio.move_on_after(PING_TIMEOUT):
        done = await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)
        lines = [ln for ln in done.stdout.decode(errors="replace").splitlines() if ln.strip()]
        summary = next((ln for ln in lines if "packets transmitted" in ln), "")
        return summary or f"ping exited {done.returncode}: {done.stderr.decode()[-200:]}"
    return f"ping did not end within {PING_TIMEOUT:g} s"


async def capture_with_ping(lab: str, spec: PingSpec | None) -> tuple[list[bytes], str]:
    """A capture, and the ping (if any) sent while it runs."""
    frames: list[bytes] = []
    result = ""
    async with trio.open_nursery() as nursery:

        async def run_capture() -> None:
            frames.extend(await capture_underlay(lab))

        nursery.start_soon(run_capture)
        if spec is not None:
            await trio.sleep(CAPTURE_SETTLE)
            result = await ping(lab, spec)
    return frames, result
