"""The agent's side of a trace: its four operations (`trace.requests`), gathering the records
of this host (container, veth, bridge ports, VTEP) into JSON for the CLI.

`TracePlane(agent)` reads the agent's runtime records and its VTEP; the blocking work (DNS in
the container, the probe and its captures) runs in worker threads.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import subprocess
from typing import TYPE_CHECKING, Any

import trio

from overlaynet.dataplane.tracing import TraceMatch
from overlaynet.errors import InvalidArgument, Unavailable
from overlaynet.model import Container, Network
from overlaynet.names import KernelNames
from overlaynet.trace import probe
from overlaynet.trace.model import SourceReport
from overlaynet.trace.requests import TraceArm, TracePlan, TraceProbe, TraceRecords

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent

#: `bridge`/`ip` look-ups are local and quick; a bound keeps a wedged one from holding a thread.
TOOL_TIMEOUT = 5.0


class TracePlane:
    """Handlers for trace.plan, trace.arm, trace.probe and trace.records."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    # -- helpers --------------------------------------------------------------------------

    def _container(self, ref: str) -> tuple[Container, str]:
        rt = self.agent.runtime
        c = rt.container(ref)
        ns = rt.container_netns(c)
        if ns is None or not c.endpoints:
            raise InvalidArgument(f"container {c.name} has no network namespace of its own")
        return c, ns

    def _networks(self, c: Container) -> list[tuple[Network, str]]:
        """FROM's networks with its address on each."""
        out = []
        for ep in c.endpoints:
            net = self.agent.runtime.networks.get(ep.network_id)
            if net is not None and ep.ip:
                out.append((net, ep.ip))
        return out

    def _pick(self, c: Container, dst: str, wanted: str | None) -> tuple[Network, str] | None:
        nets = self._networks(c)
        if wanted is not None:
            net = self.agent.runtime.network(wanted)
            found = [(n, ip) for n, ip in nets if n.id == net.id]
            if not found:
                raise InvalidArgument(f"container {c.name} is not on network {net.name}")
            nets = found
        for net, ip in nets:
            if net.subnet and ipaddress.IPv4Address(dst) in ipaddress.IPv4Network(net.subnet):
                return net, ip
        return None

    # -- operations -----------------------------------------------------------------------

    async def plan(self, req: TracePlan) -> dict[str, Any]:
        """TO as an address (resolved first when a name), FROM's address and the network."""
        c, ns = self._container(req.container)
        nets = self._networks(c)
        resolution = None
        try:
            dst = str(ipaddress.IPv4Address(req.to))
        except ValueError:
            named = req.network or (nets[0][0].name if nets else "")
            subnet = None
            if req.network is not None:
                subnet = self.agent.runtime.network(req.network).subnet or None
            resolution = await trio.to_thread.run_sync(probe.resolve, ns, req.to, named, subnet)
            if resolution.address is None:
                return {"resolution": resolution.__dict__, "dst_ip": None}
            dst = resolution.address
        picked = self._pick(c, dst, req.network)
        if resolution is not None and picked is not None:
            # The resolver answers from every network of FROM: name the one the answer is on.
            resolution = dataclasses.replace(resolution, network=picked[0].name)
        src = picked[1] if picked else (nets[0][1] if nets else "0.0.0.0")
        return {
            "resolution": None if resolution is None else resolution.__dict__,
            "src_ip": src,
            "dst_ip": dst,
            "network": picked[0].name if picked else None,
            "host": self.agent.paths.host,
            "local_ip": self.agent.overlay.local_ip or "",
        }

    async def arm(self, req: TraceArm) -> dict[str, Any]:
        match = req.match()
        vtep = self.agent.overlay.vtep
        if vtep is not None:
            vtep.arm_trace(match, req.seconds)
        return {"host": self.agent.paths.host, "armed": vtep is not None}

    async def records(self, req: TraceRecords) -> dict[str, Any]:
        vtep = self.agent.overlay.vtep
        return {
            "host": self.agent.paths.host,
            "ip": self.agent.overlay.local_ip or "",
            "vtep": vtep.trace_records() if vtep is not None else [],
        }

    async def probe(self, req: TraceProbe) -> dict[str, Any]:
        """Send the probe from FROM, watch its ports, and report (with this VTEP's records)."""
        packet, match = req.probe()
        c, ns = self._container(req.container)
        picked = self._pick(c, match.dst, req.network)
        nets = self._networks(c)
        net, src = picked if picked else (nets[0] if nets else (None, "0.0.0.0"))
        if net is None:
            raise Unavailable(f"container {c.name} is on no network")
        if match.src not in {ip for _, ip in nets}:
            raise InvalidArgument(f"the probe's source {match.src} is no address of {c.name}")
        ep = c.endpoint_on(net.id)
        assert ep is not None
        bridge = net.bridge_ifname or ""
        tap = KernelNames.tap(net.id) if net.vni is not None else ""
        veth = KernelNames.veth_host(ep.id)
        dst_container = ""
        dst_port = ""
        for other in self.agent.runtime.containers_on(net.id):
            oep = other.endpoint_on(net.id)
            if oep is not None and oep.ip == match.dst and other.id != c.id:
                dst_container, dst_port = other.name, KernelNames.veth_host(oep.id)
        lb = await self._vip(net.id, match)
        if lb is not None and not dst_container:
            # A VIP is an address of this host's load-balancer sandbox: the probe's first
            # stop is that sandbox's veth, where its nft table decides.
            dst_container, dst_port = str(lb["sandbox"]), str(lb.pop("port"))
        ports = await trio.to_thread.run_sync(_bridge_ports, bridge)
        result = await trio.to_thread.run_sync(
            probe.send_and_watch, ns, ep.ifname, veth, ports, match, packet, req.reply_wait
        )
        fdb = await trio.to_thread.run_sync(_bridge_fdb, bridge)
        vtep = self.agent.overlay.vtep
        report = SourceReport(
            host=self.agent.paths.host,
            container=c.name,
            src_ip=src,
            dst_ip=match.dst,
            proto=match.proto if match.proto == "icmp" else f"{match.proto}:{match.dport}",
            ip_id=match.ip_id,
            size=len(packet),
            network=net.name if picked else None,
            networks=[f"{n.name} {n.subnet}" for n, _ in nets],
            mtu=net.mtu,
            sent_at=result.sent_at,
            send_error=result.send_error,
            reply_at=result.reply_at,
            reply=result.reply,
            same_host=bool(dst_container),
            dst_container=dst_container,
            bridge=bridge,
            tap=dst_port or tap,
            bridge_fdb=fdb,
            captures=result.captures,
            vtep=vtep.trace_records() if vtep is not None else [],
            local_ip=self.agent.overlay.local_ip or "",
            lb=lb,
            ifname=ep.ifname,
        )
        return report.to_json()

    async def _vip(self, network_id: str, match: TraceMatch) -> dict[str, Any] | None:
        """When the probe's destination is a VIP balanced on this host: the sandbox, its veth,
        the service, and what its nft table (`host.nft.VipBalancer`) does with the probe's
        port: "dnat" to its backends, or "reject" (no running task)."""
        plane = self.agent.lb
        sb = plane.sandboxes.get(network_id)
        if sb is None or match.dst not in sb.addresses:
            return None
        box = self.agent.runtime.containers.get(sb.container_id)
        ep = box.endpoint_on(network_id) if box is not None else None
        keys = [
            k
            for k in sb.vips
            if k.vip == match.dst and k.protocol == match.proto and k.port in (None, match.dport)
        ]
        service = ""
        for svc in self.agent.service_names.services:
            if any(nid == network_id and str(vip) == match.dst for nid, vip in svc.vips):
                service = svc.name
        async with plane.kernel:
            view = await trio.to_thread.run_sync(sb.balancer.view)
        backends = [
            str(b.backend.addr) for v in view.vips if keys and v.key == keys[0] for b in v.backends
        ]
        chain = keys[0].chain if keys else ""
        rejects = bool(chain) and _chain_rejects(view.rules, chain)
        return {
            "sandbox": box.name if box is not None else sb.container_id,
            "port": KernelNames.veth_host(ep.id) if ep is not None else "",
            "vip": match.dst,
            "key": str(keys[0]) if keys else f"{match.dst}:{match.dport}/{match.proto}",
            "service": service,
            "table": sb.balancer.table,
            "backends": backends,
            "rule": "reject" if rejects else ("dnat" if backends else "none"),
            "chain": chain,
        }


def _chain_rejects(rules: str, chain: str) -> bool:
    """Whether `chain` in nft's text of the table ends in a reject (a VIP with no backend)."""
    inside = False
    for line in rules.splitlines():
        words = line.split()
        if words[:2] == ["chain", chain]:
            inside = True
        elif inside and words[:1] == ["}"]:
            return False
        elif inside and "reject" in words:
            return True
    return False


def _bridge_ports(bridge: str) -> list[str]:
    """The links enslaved to `bridge` (`ip -j link show master`)."""
    if not bridge:
        return []
    out = _tool(["ip", "-j", "link", "show", "master", bridge])
    return [str(link["ifname"]) for link in out if "ifname" in link]


def _bridge_fdb(bridge: str) -> dict[str, str]:
    """The bridge's learned MACs → port (`bridge -j fdb show br`), local entries left out."""
    if not bridge:
        return {}
    out = _tool(["bridge", "-j", "fdb", "show", "br", bridge])
    return {
        str(e["mac"]): str(e["ifname"])
        for e in out
        if "mac" in e and "ifname" in e and "permanent" not in e.get("state", "")
    }


def _tool(argv: list[str]) -> list[dict[str, Any]]:
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0 or not done.stdout.strip():
        return []
    try:
        doc = json.loads(done.stdout)
    except ValueError:
        return []
    return [d for d in doc if isinstance(d, dict)] if isinstance(doc, list) else []
