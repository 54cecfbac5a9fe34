"""A whole trace, gathered from the agents: plan, arm every VTEP, probe, collect, explain.

The orchestration `overlaynet trace` and the web view (`POST /api/actions/trace`) both run. It
talks to agents only through a `Caller` each of them supplies (the CLI's `call`, the web
server's blocking client in a worker thread), so it knows neither argparse nor trio: a failed
call is a `CallFailed` with the message the caller's user should read.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from overlaynet.dataplane.tracing import TraceMatch
from overlaynet.trace import probe
from overlaynet.trace.model import PeerReport, Resolution, SourceReport
from overlaynet.trace.verdict import explain

#: The VTEPs stay armed this long: plan, arm every host, probe (its wait) and collect.
ARM_SECONDS = 15.0
#: Ephemeral source ports / ICMP identifiers for the probe (Linux's default local port range).
PORT_LOW, PORT_HIGH = 32768, 60999
#: A quick answer for hosts that may be down: arming and collecting are local look-ups.
PEER_WAIT = 5.0
#: The probe's default size (IPv4 total length), as ping's 56 data octets make.
DEFAULT_SIZE = 84
#: The default wait for the reply, and the agent's own bound on it (trace.requests).
DEFAULT_REPLY_WAIT = 2.0


class CallFailed(Exception):
    """An agent could not be asked, or refused: the message says which and why."""


class Caller(Protocol):
    """One API call to `host`'s agent; `wait` None is the caller's own default wait."""

    def __call__(self, host: str, op: str, wait: float | None, **args: Any) -> Any: ...


@dataclass(frozen=True)
class TraceRequest:
    """FROM (a container on `source_host`), TO (a name resolved in FROM, or an IPv4)."""

    source_host: str
    source: str
    to: str
    proto: str = "icmp"
    port: int = 0
    network: str | None = None
    size: int = DEFAULT_SIZE
    reply_wait: float = DEFAULT_REPLY_WAIT


def parse_proto(spec: str) -> tuple[str, int]:
    """`icmp`, `tcp:PORT` or `udp:PORT` → (protocol, port); ValueError otherwise."""
    name, _, port = spec.partition(":")
    if name == "icmp" and not port:
        return "icmp", 0
    if name in ("tcp", "udp") and port.isdigit() and 1 <= int(port) <= 65535:
        return name, int(port)
    raise ValueError(f"invalid protocol {spec!r}: use icmp, tcp:PORT or udp:PORT")


def run_trace(
    call: Caller,
    req: TraceRequest,
    lab_hosts: Sequence[tuple[str, str]],
    check_destination: Callable[[str], None] | None = None,
    partitions: Partitions | None = None,
) -> dict[str, Any]:
    """Plan, arm, probe, collect and explain: the trace as JSON.

    `lab_hosts` are (name, underlay address) of every host whose VTEP may carry the probe;
    `check_destination(ip)` may raise CallFailed to refuse the planned destination before
    anything is armed or sent (the web server sends only to its lab's own addresses);
    `partitions` names the peers a lab partition cuts off (see `Partitions`)."""
    plan = call(
        req.source_host, "trace.plan", None, container=req.source, to=req.to, network=req.network
    )
    resolution = None if plan["resolution"] is None else Resolution.from_json(plan["resolution"])
    if plan["dst_ip"] is None:
        trace = explain(None, [], resolution, plan.get("host", req.source_host))
        return {**trace.to_json(), "source": None, "peers": []}
    if check_destination is not None:
        check_destination(str(plan["dst_ip"]))
    match = {
        "src": plan["src_ip"],
        "dst": plan["dst_ip"],
        "proto": req.proto,
        "ip_id": 1 + secrets.randbelow(0xFFFE),
        "sport": PORT_LOW + secrets.randbelow(PORT_HIGH - PORT_LOW),
        "dport": req.port,
    }
    others = [(h, ip) for h, ip in lab_hosts if h != req.source_host]
    down: dict[str, str] = {}
    for host in [req.source_host, *(h for h, _ in others)]:
        try:
            call(host, "trace.arm", PEER_WAIT, seconds=ARM_SECONDS, **match)
        except CallFailed as e:
            if host == req.source_host:
                raise
            down[host] = why_down(str(e))
    packet = probe.build(TraceMatch.from_json(match), req.size)
    doc = call(
        req.source_host,
        "trace.probe",
        None,
        container=req.source,
        packet=packet.hex(),
        network=plan["network"],
        reply_wait=req.reply_wait,
    )
    source = SourceReport.from_json(doc)
    peers = []
    for host, ip in others:
        if host in down:
            peers.append(PeerReport(host, ip, down[host]))
            continue
        try:
            got = call(host, "trace.records", PEER_WAIT)
        except CallFailed as e:
            peers.append(PeerReport(host, ip, why_down(str(e))))
            continue
        peers.append(PeerReport(host, str(got.get("ip") or ip), None, list(got["vtep"])))
    peers = with_context(call, req.source_host, peers, partitions)
    trace = explain(source, peers, resolution)
    return {
        **trace.to_json(),
        "source": source.to_json(),
        "peers": [p.__dict__ for p in peers],
    }


#: `partitions(source_host, {peer: underlay address})`: the peers a lab's partition rules cut
#: off from the source host, each with the rule (`trace.partition.partitioned` for a lab).
Partitions = Callable[[str, dict[str, str]], dict[str, str]]


def with_context(
    call: Caller, source_host: str, peers: list[PeerReport], partitions: Partitions | None
) -> list[PeerReport]:
    """The peers with what the source host's gossip says of them and the partitions between
    them and the source host, so a probe that never arrived names its reason."""
    states: dict[str, str] = {}
    try:
        for m in call(source_host, "gossip.members", PEER_WAIT) or []:
            states[str(m.get("addr", ""))] = str(m.get("state", ""))
    except CallFailed:
        pass  # an agent that cannot say: the trace goes on without gossip's view
    cut = partitions(source_host, {p.host: p.ip for p in peers}) if partitions else {}
    return [
        dataclasses.replace(p, gossip=states.get(p.ip, ""), partitioned=cut.get(p.host))
        for p in peers
    ]


def why_down(message: str) -> str:
    """A peer's failed call as the trace reports it."""
    if "Cannot connect" in message or "did not answer" in message:
        return "its agent does not answer"
    return message
