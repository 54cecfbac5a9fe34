"""A trace started from the page (`--allow-actions`): checked against the view, run by the same
code as `overlaynet trace` (trace/run.py) in a worker thread, and its hops mapped onto the
graph's elements so the page can light up the path and mark where the probe stopped.

Only the lab's own addresses are traced: TO as an IPv4 must lie in a subnet of one of the lab's
networks, and a name is traced only if it resolves (inside FROM) to such an address; anything
else is refused before a VTEP is armed or a probe sent.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from functools import partial
from typing import Any

import trio

from overlaynet import api
from overlaynet.errors import ApiError
from overlaynet.paths import HostPaths
from overlaynet.trace import run
from overlaynet.trace.partition import partitioned
from overlaynet.web.model import Record

# A DNS name as a container's resolver takes it (RFC 1123 labels, dots); longer is no name.
NAME_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,252})$")
# The source host's plan and probe: DNS in the container, then the probe's reply wait (the agent
# bounds it at 10 s) and its captures. Peers are asked with trace.run.PEER_WAIT.
SOURCE_WAIT = 30.0
# The page's choice of reply wait: the CLI's default.
REPLY_WAIT = run.DEFAULT_REPLY_WAIT


class TraceRefused(ValueError):
    """The request names something the lab does not have, or is malformed."""


def trace_request(body: Mapping[str, Any], view: Mapping[str, Record]) -> run.TraceRequest:
    """The trace a page's request asks for, checked against the view."""
    host, container, to = body.get("host"), body.get("container"), body.get("to")
    if not all(isinstance(v, str) and v for v in (host, container, to)):
        raise TraceRefused("a trace needs host, container and to as strings")
    assert isinstance(host, str) and isinstance(container, str) and isinstance(to, str)
    if not any(
        r.get("kind") == "container" and r["host"] == host and r["name"] == container
        for r in view.values()
    ):
        raise TraceRefused(f"no container {container!r} on host {host!r} in this lab")
    to = to.strip()
    try:
        ip = ipaddress.IPv4Address(to)
    except ValueError:
        if not NAME_RE.match(to):
            raise TraceRefused(f"{to!r} is neither an IPv4 address nor a name") from None
    else:
        if not in_lab(str(ip), view):
            raise TraceRefused(f"{to} is on none of this lab's networks")
    proto = body.get("proto", "icmp")
    if not isinstance(proto, str):
        raise TraceRefused("proto must be icmp, tcp:PORT or udp:PORT")
    try:
        name, port = run.parse_proto(proto)
    except ValueError as e:
        raise TraceRefused(str(e)) from None
    network = body.get("network") or None
    if network is not None and not (
        isinstance(network, str)
        and any(r.get("kind") == "network" and r["name"] == network for r in view.values())
    ):
        raise TraceRefused(f"no network {network!r} in this lab")
    return run.TraceRequest(host, container, to, name, port, network, reply_wait=REPLY_WAIT)


def in_lab(ip: str, view: Mapping[str, Record]) -> bool:
    """Whether `ip` lies in a subnet of one of the lab's networks."""
    addr = ipaddress.IPv4Address(ip)
    for r in view.values():
        if r.get("kind") == "network" and r.get("subnet"):
            try:
                if addr in ipaddress.IPv4Network(r["subnet"], strict=False):
                    return True
            except ValueError:
                continue
    return False


def lab_hosts(view: Mapping[str, Record]) -> list[tuple[str, str]]:
    """(name, underlay address) of the view's hosts, whose VTEPs are armed."""
    hosts = [r for r in view.values() if r.get("kind") == "host"]
    return sorted((str(h["name"]), str(h.get("ip", ""))) for h in hosts)


def agent_caller(lab: str) -> run.Caller:
    """Blocking calls to the lab's agents (run in a worker thread), failures as CallFailed."""

    def call(host: str, op: str, wait: float | None, **args: Any) -> Any:
        paths = HostPaths(host, lab)
        try:
            return api.Client(paths.socket, SOURCE_WAIT if wait is None else wait).call(op, **args)
        except api.AgentDown:
            raise run.CallFailed(f"Cannot connect to the agent of {host}") from None
        except TimeoutError:
            raise run.CallFailed(f"the agent of {host} did not answer in time") from None
        except ApiError as e:
            raise run.CallFailed(f"{host}: {e}") from None
        except OSError as e:
            raise run.CallFailed(f"Cannot connect to the agent of {host}: {e}") from None

    return call


async def run_in_lab(lab: str, req: run.TraceRequest, view: Mapping[str, Record]) -> dict[str, Any]:
    """The trace as trace.run makes it, plus the graph elements of its path (`path`)."""
    snapshot = dict(view)

    def check(ip: str) -> None:
        if not in_lab(ip, snapshot):
            raise run.CallFailed(
                f"{req.to} resolved to {ip}, which is on none of this lab's networks"
            )

    def partitions(source: str, peers: dict[str, str]) -> dict[str, str]:
        return partitioned(lab, source, peers)  # `lab partition` named as the stop, as the CLI

    doc = await trio.to_thread.run_sync(
        partial(
            run.run_trace,
            agent_caller(lab),
            req,
            lab_hosts(snapshot),
            check,
            partitions=partitions,
        )
    )
    return {**doc, "path": path_on_graph(doc, req, snapshot)}


def path_on_graph(
    doc: Mapping[str, Any], req: run.TraceRequest, view: Mapping[str, Record]
) -> dict[str, Any]:
    """The graph's element ids (app.js's elements()) along the trace: the source container, its
    network, each host a hop was on, its VTEP edge and the underlay between hosts, and the
    destination container when it was reached; `stop` is the element where the probe stopped."""
    ctrs = {k: r for k, r in view.items() if r.get("kind") == "container"}
    src_key = next(
        (k for k, r in ctrs.items() if r["host"] == req.source_host and r["name"] == req.source),
        None,
    )
    source = doc.get("source") or {}
    net_name = source.get("network")
    dst_ip = source.get("dst_ip")
    nodes: list[str] = []
    edges: list[str] = []

    def add(ids: list[str], key: str | None) -> None:
        if key is not None and key not in ids:
            ids.append(key)

    add(nodes, src_key)
    net_key = _network_key(view, net_name, req.source_host)
    if src_key is not None and net_key is not None:
        add(nodes, net_key)
        add(edges, f"att:{src_key}:{net_key}")
    hosts = [str(h["host"]) for h in doc.get("hops", []) if h.get("host")]
    stages = {str(h["stage"]) for h in doc.get("hops", [])}
    for host in hosts:
        add(nodes, f"host/{host}")
        if net_key is not None and net_key.count("/") == 1:  # an overlay: its VTEP edge
            add(edges, f"vtep:{net_key}:{host}")
    if len(set(hosts)) > 1 or "underlay" in stages or "peer-vtep" in stages:
        add(nodes, "underlay")
        for host in hosts:
            add(edges, f"ul:{host}")
    dst_key = _container_at(view, dst_ip, net_key)
    if dst_key is not None and (doc.get("reached") or "destination" in stages):
        add(nodes, dst_key)
        if net_key is not None:
            add(edges, f"att:{dst_key}:{net_key}")
    stop = doc.get("stop")
    stop_at = None
    if stop is not None:
        stop_at = _stop_element(stop, src_key, net_key, dst_key)
        add(nodes, stop_at)
    return {
        "nodes": [n for n in nodes if n in view or n == "underlay"],
        "edges": edges,
        "stop": stop_at,
    }


def _network_key(view: Mapping[str, Record], name: Any, host: str) -> str | None:
    if not isinstance(name, str) or not name:
        return None
    for key, r in view.items():
        if r.get("kind") != "network" or r.get("name") != name:
            continue
        if r.get("driver") == "overlay" or r.get("host") == host:
            return key
    return None


def _container_at(view: Mapping[str, Record], ip: Any, net_key: str | None) -> str | None:
    if not isinstance(ip, str):
        return None
    for key, r in view.items():
        if r.get("kind") != "container":
            continue
        for n in r.get("networks", []):
            if str(n.get("ip", "")).split("/")[0] == ip and (
                net_key is None or n.get("key") == net_key
            ):
                return key
    return None


def _stop_element(
    stop: Mapping[str, Any], src_key: str | None, net_key: str | None, dst_key: str | None
) -> str | None:
    """The element where the probe stopped: what the stop's stage names on the graph."""
    where, host = str(stop.get("where", "")), str(stop.get("host", ""))
    if where in ("dns", "container"):
        return src_key
    if where in ("veth", "bridge"):
        return net_key or src_key
    if where == "underlay":
        return "underlay"
    if where == "destination" and dst_key is not None:
        return dst_key
    return f"host/{host}" if host else src_key
