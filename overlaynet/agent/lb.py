"""Service VIPs on this node: one load-balancer sandbox per overlay network with VIPs here.

As Docker does since 2018 (`lb_<net>`): the sandbox has its own endpoint on the network (the
`lb` address the managers gave this node, from `task.assigned`), answers ARP for the network's
VIPs (they are its addresses), and `host/nft.py`'s `VipBalancer` there DNATs each VIP to the
service's running tasks and SNATs to the sandbox's address, so replies come back through it.
Backend changes are one nft transaction; a removed task's conntrack entries are cut.

The sandbox is a container the agent runs for itself, named `lb_<network name>` and marked by
the label `model.SANDBOX_LABEL=<network id>` (hidden from `ps` and DNS, as Docker's sandboxes
are no containers at all): the runtime then builds, restores, and
reconciles its namespace and veth like any endpoint's, and the control plane publishes its
address in the endpoint table, so tasks on other hosts reach it (ARP and FDB). A sandbox exists
only while another container of this host uses the network (only they can be its clients).

`desired_vips` is the pure part; `LbPlane` the thin shell, a child of the agent's nursery.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any

import trio

from overlaynet.agent import requests as rq
from overlaynet.agent import views
from overlaynet.agent.runtime import Allocation
from overlaynet.agent.servicedns import (
    SANDBOX_INGRESS,
    ServiceEndpoint,
    missing_serving,
    sandbox_name,
)
from overlaynet.agent.tasks import (
    GWBRIDGE,
    AssignedTask,
    TaskNetwork,
    ensure_gwbridge,
    local_tasks,
    task_network,
)
from overlaynet.cluster.lbidle import LB_IDLE_OPTION, LINUX_DEFAULT
from overlaynet.dns.records import RecordKind
from overlaynet.errors import ApiError
from overlaynet.host import links
from overlaynet.host.nft import (
    IDLE_TIMEOUT_SYSCTL,
    Backend,
    NftError,
    PortMapping,
    PublishedPorts,
    VipBalancer,
    VipKey,
    _write_sysctl,
)
from overlaynet.model import SANDBOX_ENV, SANDBOX_LABEL, Container, Status
from overlaynet.names import new_id

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent

log = logging.getLogger("overlaynet.agent.lb")

LB_ENV = SANDBOX_ENV
# The sandbox's process only holds its place (busybox's sleep takes no `infinity`): 68 years.
LB_COMMAND = ("sleep", "2147483647")
LB_IMAGE = "alpine"
# How often the plane looks again without being told (a sandbox's namespace rebuilt, a missed
# change): the planes tell it on every change, this is only the safety net.
RECHECK = 2.0
# Docker's VIP balances every port of a service that publishes none: both protocols.
PROTOCOLS = ("tcp", "udp")
# A VIP new to this node waits at most this long for gossip to bring the tasks the managers
# say serve it. A node joins a network's gossip only with its first endpoint there and learns
# the others' tasks from the push-pull that follows (measured 0.4-0.8 s on a 3-host lab): a
# VIP installed before that sends every connection to the node's own new task alone (`network
# lb` showed 1 backend right after a scale to 3). Bounded, so a task whose node died unnoticed
# by the managers cannot keep a VIP away for long.
JOIN_SYNC_WAIT = 3.0


# Docker's name for the routing mesh's sandbox.
INGRESS_SANDBOX = SANDBOX_INGRESS


def lb_name(ep: TaskNetwork) -> str:
    return INGRESS_SANDBOX if ep.ingress else sandbox_name(ep.network_name)


def lb_network_of(c: Container) -> str | None:
    """The network a load-balancer sandbox serves (None: not a sandbox). Sandboxes made before
    labels carry the marker in their environment (LB_ENV): a restarted agent still finds them."""
    if SANDBOX_LABEL in c.labels:
        return c.labels[SANDBOX_LABEL]
    marker = next((e for e in c.env if e.startswith(LB_ENV + "=")), None)
    return marker.partition("=")[2] if marker else None


def desired_vips(
    services: Iterable[ServiceEndpoint],
    task_ips: Mapping[tuple[str, str], set[IPv4Address]],
    network_id: str,
) -> dict[VipKey, tuple[Backend, ...]]:
    """Each VIP on the network (vip-mode services) → its running tasks there, every port."""
    out: dict[VipKey, tuple[Backend, ...]] = {}
    for s in services:
        if s.endpoint_mode != "vip":
            continue
        for nid, vip in s.vips:
            if nid != network_id:
                continue
            ips = sorted(task_ips.get((nid, s.name), set()))
            for proto in PROTOCOLS:
                out[VipKey(str(vip), None, proto)] = tuple(Backend(str(ip)) for ip in ips)
    return out


def hold_new_vips(
    services: Iterable[ServiceEndpoint],
    known: Mapping[tuple[str, str], set[str]],
    network_id: str,
    installed: set[str],
    held_since: Mapping[str, float],
    now: float,
) -> tuple[list[ServiceEndpoint], dict[str, float]]:
    """(the services whose VIPs may be written now, the held ones → when first held).

    A service already balanced here follows gossip as it is (only lagging it); one not yet
    balanced here is held while this node does not know every task the managers say serves
    it on the network, for at most JOIN_SYNC_WAIT: a partial first set is never installed."""
    ready: list[ServiceEndpoint] = []
    held: dict[str, float] = {}
    for s in services:
        on_network = network_id in s.networks
        if not on_network or s.name in installed or not missing_serving(s, known, network_id):
            ready.append(s)
            continue
        since = held_since.get(s.name, now)
        if now - since >= JOIN_SYNC_WAIT:
            ready.append(s)
        else:
            held[s.name] = since
    return ready, held


def ingress_backends(
    services: Iterable[ServiceEndpoint],
    task_ips: Mapping[tuple[str, str], set[IPv4Address]],
    ingress_id: str,
    sandbox_addr: str,
) -> dict[VipKey, tuple[Backend, ...]]:
    """The routing mesh in the ingress sandbox: each ingress-mode published port, on the
    sandbox's own address (where this host DNATs it), → every running task's ingress address
    at the target port, on whichever node it runs."""
    out: dict[VipKey, tuple[Backend, ...]] = {}
    for s in services:
        ips = sorted(task_ips.get((ingress_id, s.name), set()))
        for p in s.ports:
            if p.mode == "ingress":
                key = VipKey(sandbox_addr, p.published, p.protocol)
                out[key] = tuple(Backend(str(ip), p.target) for ip in ips)
    return out


def published_ports(
    services: Iterable[ServiceEndpoint],
    ingress_addr: str | None,
    host_tasks: Iterable[tuple[AssignedTask, str]],
) -> dict[tuple[int, str], PortMapping]:
    """This host's published ports: every ingress-mode port to the ingress sandbox (all
    nodes), and the mode=host ports of the tasks running here, to each task's local address
    (masqueraded: the task's own default route does not lead back through this host)."""
    out: dict[tuple[int, str], PortMapping] = {}
    for task, addr in host_tasks:
        for p in task.host_ports:
            out[(p.published, p.protocol)] = PortMapping(
                p.published, p.protocol, addr, p.target, masquerade=True
            )
    if ingress_addr is not None:
        for s in services:
            for p in s.ports:
                if p.mode == "ingress":
                    out[(p.published, p.protocol)] = PortMapping(
                        p.published, p.protocol, ingress_addr, p.published
                    )
    return out


@dataclass
class Sandbox:
    network_id: str
    container_id: str
    balancer: VipBalancer
    vips: dict[VipKey, tuple[Backend, ...]]
    addresses: set[str]
    gateway_addr: str | None = None  # the ingress sandbox's docker_gwbridge address
    # Services balanced here, and those held back until gossip caught up (hold_new_vips).
    installed: set[str] = field(default_factory=set)
    held_since: dict[str, float] = field(default_factory=dict)
    idle_timeout: int | None = None  # what this plane last set (None: never set)


class LbPlane:
    """Keeps one sandbox per network that needs one, with the VIPs' backends up to date."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.endpoints: dict[str, TaskNetwork] = {}  # network id → this node's LB address
        self.sandboxes: dict[str, Sandbox] = {}
        self.ports: PublishedPorts | None = None
        self.changed = trio.Event()
        self.counters: Counter[str] = Counter()
        # One user of the sandboxes' balancers at a time (VipBalancer is not thread-safe): the
        # plane's steps and `network lb`'s reads.
        self.kernel = trio.Lock()

    def set_endpoints(self, doc: Mapping[str, Any]) -> None:
        """`task.assigned`'s `lb` list (this node's LB addresses)."""
        found: dict[str, TaskNetwork] = {}
        for entry in doc.get("lb") or ():
            try:
                ep = TaskNetwork.from_doc(entry)
            except (KeyError, TypeError, ValueError, AttributeError):
                self.counters["bad_lb_entries"] += 1
                continue
            found[ep.network_id] = ep
        if found != self.endpoints:
            self.endpoints = found
            self.poke()

    def poke(self) -> None:
        self.changed.set()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                with trio.move_on_after(RECHECK):
                    await self.changed.wait()
                self.changed = trio.Event()
                try:
                    async with self.kernel:
                        await self.step()
                except (ApiError, NftError, OSError, links.LinkError) as e:
                    self.counters["lb_failures"] += 1
                    log.warning("load balancer update failed: %s", e)
        finally:
            for sb in self.sandboxes.values():
                with contextlib.suppress(Exception):
                    sb.balancer.close(remove=False)
            self.sandboxes.clear()
            if self.ports is not None:
                with contextlib.suppress(Exception):
                    # The host's published ports go with the agent: nothing answers them now.
                    self.ports.close(remove=True)
                self.ports = None

    def _wanted(self) -> dict[str, TaskNetwork]:
        """Networks whose sandbox should exist: an LB address here, and a container of
        this host (not a sandbox) on the network."""
        rt = self.agent.runtime
        used = {
            ep.network_id
            for c in list(rt.containers.values())
            if lb_network_of(c) is None
            for ep in c.endpoints
        }
        mesh = any(p.mode == "ingress" for s in self.agent.service_names.services for p in s.ports)
        return {
            nid: ep for nid, ep in self.endpoints.items() if nid in used or (ep.ingress and mesh)
        }

    def _existing(self) -> dict[str, Container]:
        out = {}
        for c in list(self.agent.runtime.containers.values()):
            nid = lb_network_of(c)
            if nid is not None:
                out[nid] = c
        return out

    async def step(self) -> None:
        wanted, existing = self._wanted(), self._existing()
        for nid, c in existing.items():
            if nid not in wanted or _endpoint_ip(c, nid) != wanted[nid].ip:
                await self._remove(nid, c)
        existing = self._existing()
        for nid, ep in wanted.items():
            have = existing.get(nid)
            if have is None:
                have = await self._create(ep)
            elif have.status != Status.RUNNING:
                await self.agent.container_start(rq.ContainerStart(have.id))
            await self._balance(nid, ep, have)
        await self._publish()

    async def _publish(self) -> None:
        """This host's published ports follow the services and the tasks here."""
        rt = self.agent.runtime
        ingress = next((sb for sb in self.sandboxes.values() if sb.gateway_addr), None)
        here = local_tasks(list(rt.containers.values()))
        gw = rt.local_network(GWBRIDGE)
        host_tasks = []
        for t in self.agent.task_runner.assigned:
            mine = here.get(t.id)
            if mine is None or not mine.running or not t.host_ports or gw is None:
                continue
            ep = rt.containers[mine.container_id].endpoint_on(gw.id)
            if ep is not None and ep.ip:
                host_tasks.append((t, ep.ip))
        wanted = published_ports(
            self.agent.service_names.services,
            ingress.gateway_addr if ingress else None,
            host_tasks,
        )
        if self.ports is None:
            if not wanted:
                return
            # DNAT from this host to its sandboxes and tasks is forwarding (Docker sets it too).
            await trio.to_thread.run_sync(_write_sysctl, "net/ipv4/ip_forward", "1")
            self.ports = await trio.to_thread.run_sync(PublishedPorts, None)
        have = {(m.published, m.protocol): m for m in self.ports.mappings()}
        for key, mapping in wanted.items():
            if have.get(key) != mapping:
                await trio.to_thread.run_sync(self.ports.add, mapping)
                self.counters["ports_published"] += 1
        for key in set(have) - set(wanted):
            await trio.to_thread.run_sync(self.ports.remove, *key)

    async def _create(self, ep: TaskNetwork) -> Container:
        agent = self.agent
        await agent._ensure_vtep()
        net = task_network(ep, time.time())
        # The ingress sandbox's first leg is docker_gwbridge (its default route: the host
        # DNATs published ports to it there and gets the replies back), then the ingress.
        first = (await ensure_gwbridge(agent)).id if ep.ingress else net.id
        req = rq.ContainerCreate(
            image=LB_IMAGE,
            cmd=LB_COMMAND,
            name=lb_name(ep),
            network=first,
            labels=(f"{SANDBOX_LABEL}={net.id}",),
        )
        allocation = Allocation(new_id(), ep.ip, ep.mac)
        c: Container = await agent._state(
            partial(agent.runtime.task_create, req, [(net, allocation)])
        )
        await agent.container_start(rq.ContainerStart(c.id))
        self.counters["sandboxes_created"] += 1
        log.info("load balancer sandbox created", extra={"fields": {"network": ep.network_name}})
        return c

    async def _remove(self, nid: str, c: Container) -> None:
        sb = self.sandboxes.pop(nid, None)
        if sb is not None:
            await trio.to_thread.run_sync(sb.balancer.close)
        async with self.agent._container(c.id):
            await self.agent._state(partial(self.agent.runtime.container_rm, c.id, True))
        self.counters["sandboxes_removed"] += 1

    async def _balance(self, nid: str, ep: TaskNetwork, c: Container) -> None:
        rt = self.agent.runtime
        netns = rt.container_netns(c)
        assert netns is not None
        sb = self.sandboxes.get(nid)
        if sb is None or sb.container_id != c.id:
            balancer = await trio.to_thread.run_sync(partial(VipBalancer, netns, ep.ip))
            gw = rt.local_network(GWBRIDGE)
            gw_ep = c.endpoint_on(gw.id) if gw is not None and ep.ingress else None
            sb = Sandbox(nid, c.id, balancer, {}, set(), gw_ep.ip if gw_ep else None)
            self.sandboxes[nid] = sb
        if ep.idle_timeout is not None and ep.idle_timeout != sb.idle_timeout:
            # `--opt lb-idle-timeout`; unset, the kernel's default (5 days) stays.
            await trio.to_thread.run_sync(sb.balancer.set_idle_timeout, ep.idle_timeout)
            sb.idle_timeout = ep.idle_timeout
        names = self.agent.service_names
        ready, sb.held_since = hold_new_vips(
            names.services, names.known_tasks, nid, sb.installed, sb.held_since, time.monotonic()
        )
        if sb.held_since:
            self.counters["vips_held_for_gossip"] += 1
            log.info("vips held", extra={"fields": {"services": sorted(sb.held_since)}})
        sb.installed = {s.name for s in ready}
        if sb.gateway_addr is not None:
            wanted = ingress_backends(ready, names.task_ips, nid, sb.gateway_addr)
        else:
            wanted = desired_vips(ready, names.task_ips, nid)
        addresses = {k.vip for k in wanted} - {sb.gateway_addr}
        for addr in addresses - sb.addresses:
            await trio.to_thread.run_sync(_add_address, netns, addr)
            sb.addresses.add(addr)
        for key, backends in wanted.items():
            if sb.vips.get(key) != backends:
                gone = set(sb.vips.get(key, ())) - set(backends)
                # A task leaving on purpose (still running: a rolling update drains it) may
                # finish the connections it serves; a dead one's are cut at once.
                cut = not all(IPv4Address(b.addr) in names.leaving_ips for b in gone)
                set_backends = partial(sb.balancer.set_backends, cut_removed=cut)
                await trio.to_thread.run_sync(set_backends, key, backends)
                sb.vips[key] = backends
                self.counters["backend_updates"] += 1
                log.info(
                    "vip backends",
                    extra={
                        "fields": {
                            "vip": key.vip,
                            "port": key.port,
                            "backends": len(backends),
                            "proto": key.protocol,
                        }
                    },
                )
        for key in set(sb.vips) - set(wanted):
            await trio.to_thread.run_sync(sb.balancer.remove_vip, key)
            del sb.vips[key]
        for addr in sb.addresses - addresses:
            await trio.to_thread.run_sync(_remove_address, netns, addr)
            sb.addresses.discard(addr)

    async def network_doc(self, req: rq.NetworkLb) -> dict[str, Any]:
        """`network lb NET`: this node's sandbox on the network, each VIP (with its service)
        and its backends (with their task containers) as read back from the kernel, with
        their connection counts, and the nft table as installed there."""
        agent = self.agent
        net = agent.runtime.network(req.network)
        sb = self.sandboxes.get(net.id)
        if sb is None:
            return views.lb_doc(net.name, net.id, None, None, None, {}, {})
        async with self.kernel:
            view = await trio.to_thread.run_sync(sb.balancer.view)
            idle = await trio.to_thread.run_sync(sb.balancer.idle_timeout)
        box = agent.runtime.containers.get(sb.container_id)
        ep = box.endpoint_on(net.id) if box is not None else None
        services: dict[str, str] = {}
        for s in agent.service_names.services:
            for nid, vip in s.vips:
                if nid == net.id:
                    services[str(vip)] = s.name
            if sb.gateway_addr is not None:
                for p in s.ports:
                    if p.mode == "ingress":
                        published = p.published if p.published is not None else p.target
                        services[f"{sb.gateway_addr}:{published}/{p.protocol}"] = s.name
        tasks = {
            str(r.address): r.name
            for r in agent.dns_table.records_of(net.id)
            if r.kind is RecordKind.CONTAINER
        }
        name = box.name if box is not None else sb.container_id
        doc = views.lb_doc(net.name, net.id, name, ep.ip if ep else None, view, services, tasks)
        doc["IdleTimeout"] = idle_timeout_doc(idle, self.endpoints.get(net.id))
        return doc

    def view(self) -> list[dict[str, Any]]:
        """Each sandbox's VIPs, backends with their connection counts, and nft rules."""
        out = []
        for nid, sb in self.sandboxes.items():
            v = sb.balancer.view()
            out.append(
                {
                    "network_id": nid,
                    "vips": [
                        {
                            "vip": str(vv.key),
                            "backends": [
                                {"addr": str(b.backend), "connections": b.connections}
                                for b in vv.backends
                            ],
                        }
                        for vv in v.vips
                    ],
                    "rules": v.rules,
                }
            )
        return out


def idle_timeout_doc(seconds: int, ep: TaskNetwork | None) -> dict[str, Any]:
    """`network lb`'s IdleTimeout: what the sandbox's namespace holds, and where it came from."""
    configured = ep.idle_timeout if ep is not None else None
    return {
        "Seconds": seconds,
        "Sysctl": IDLE_TIMEOUT_SYSCTL.replace("/", "."),
        "Source": "kernel default" if configured is None else f"--opt {LB_IDLE_OPTION}",
        "KernelDefault": LINUX_DEFAULT,
    }


def _endpoint_ip(c: Container, network_id: str) -> str | None:
    ep = c.endpoint_on(network_id)
    return ep.ip if ep else None


def _add_address(netns: str, addr: str) -> None:
    """The VIP as the sandbox's own (/32 on eth0): it answers ARP for it on the bridge."""
    with links.ipr(netns) as ns:
        idx = links.index_of(ns, "eth0")
        if idx is None:
            raise links.LinkError(f"no eth0 in {netns}")
        with contextlib.suppress(Exception):  # already there (a restarted agent)
            ns.addr("add", index=idx, address=addr, prefixlen=32)


def _remove_address(netns: str, addr: str) -> None:
    with links.ipr(netns) as ns:
        idx = links.index_of(ns, "eth0")
        if idx is not None:
            with contextlib.suppress(Exception):
                ns.addr("del", index=idx, address=addr, prefixlen=32)
