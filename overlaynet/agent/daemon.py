"""The per-host daemon: one trio nursery, one child per plane, and the requests that drive them.

Planes (each started with `nursery.start`): the embedded DNS, the swarm member (a manager's
server on managers), gossip/control, the VTEP (started with the first overlay), the API server.
A request goes allocate -> decide -> apply -> publish: the agent asks the managers (addresses,
swarm networks) in trio, hands the answers to the runtime, whose records and kernel work run in
a worker thread under a short state lock, then the planes follow. Slow waits (a `stop -t 30`, a
manager's answer) never hold that lock; requests on one container go one at a time.

Here: the agent's construction, its nursery of planes, the dispatch table, the swarm's requests
and `main`. The other requests' handlers live by plane, bound to the agent as the lb and trace
planes are: `handlers_networks`, `handlers_containers`, `handlers_views`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from overlaynet import api
from overlaynet.agent import control, engine_id, hostcore, metrics
from overlaynet.agent import requests as rq
from overlaynet.agent.apiserver import ApiServer, bind_unix
from overlaynet.agent.container_health import for_agent as container_health_for
from overlaynet.agent.events import Events
from overlaynet.agent.handlers_containers import POLL_INTERVAL, ContainerRequests
from overlaynet.agent.handlers_networks import NetworkRequests
from overlaynet.agent.handlers_views import ViewRequests
from overlaynet.agent.lb import LbPlane
from overlaynet.agent.locks import KeyedLocks
from overlaynet.agent.overlay import OverlayDriver, offload_addresses
from overlaynet.agent.runtime import Allocation, Runtime
from overlaynet.agent.servicedns import ServiceNames
from overlaynet.agent.swarm import SwarmMember
from overlaynet.agent.tasks import TaskRunner, agent_hooks
from overlaynet.agent.watch import ChangeFeed, WatchChanges, agent_parts
from overlaynet.api import Request
from overlaynet.cluster.state import MANAGER_PORT
from overlaynet.dataplane import datakeys
from overlaynet.dataplane.impair import ImpairRequest, ImpairState
from overlaynet.dataplane.lane import LANE_ENV, LANE_MODES
from overlaynet.dataplane.seal import SEAL_OVERHEAD
from overlaynet.dns import feed as dns_feed
from overlaynet.dns.records import DnsTable
from overlaynet.dns.server import DnsServer
from overlaynet.dns.upstream import upstreams_from_resolv_conf
from overlaynet.errors import ApiError, Conflict, InvalidArgument, Unavailable
from overlaynet.host import links, process
from overlaynet.model import Container, Driver, Endpoint, Network, Status
from overlaynet.names import new_id
from overlaynet.paths import HostPaths, make_private_dir, write_private
from overlaynet.trace import requests as trace_rq
from overlaynet.trace.collect import TracePlane

log = logging.getLogger("overlaynet.agent")
T = TypeVar("T")

VERSION = "0.1.0"
# Docker answers with TTL 600 s, which leaves stale answers behind when containers move;
# a few seconds keeps clients' caches honest at negligible cost (issue #5).
DNS_TTL = 5
# How often a swarm node reads its own role (promote/demote take effect within this).
ROLE_CHECK_INTERVAL = 2.0
# With no container running, the process poll sleeps this long unless a state change pokes it
# (`_state`): a safety net; an idle agent no longer wakes every POLL_INTERVAL (issue 15).
IDLE_PROCESS_POLL = 2.0


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: easy to grep, easy to load."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(getattr(record, "fields", {}))
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


class Agent:
    def __init__(
        self,
        paths: HostPaths,
        advertise_addr: str | None = None,
        metrics_addr: tuple[str, int] | None = None,
        lane: str = "off",
    ) -> None:
        self.paths = paths
        # The VTEP's lane (`dataplane/lane.py`: `--lane`, or OVERLAYNET_LANE in a lab).
        self.lane = lane
        self.advertise_addr = advertise_addr
        self.overlay = OverlayDriver(advertise_addr)
        self.runtime = Runtime(
            paths.host,
            paths.state_dir,
            paths.kernel_names,
            copy_host_resolv=paths.lab is None,
            overlay=self.overlay,
        )
        # Records and kernel, held for milliseconds: never across a wait (issue 18).
        self.state_lock = trio.Lock()
        self.container_locks = KeyedLocks()
        self.dns_table = DnsTable(ttl=DNS_TTL)
        if paths.lab is None:
            # On a real host, names not known locally go to the host's resolvers, as in Docker.
            # A lab host has no way out, so it gets none (answers come at once: SERVFAIL).
            self.dns_table.set_upstreams(upstreams_from_resolv_conf(_read("/etc/resolv.conf")))
        self.dns = DnsServer(self.dns_table)
        self.swarm = SwarmMember(paths.state_dir, paths.host)
        self.control = control.ControlPlane()
        self.swarm.node_status = self.control.node_status
        self._nursery: trio.Nursery | None = None
        self._vtep_start = trio.Lock()
        self._synced_generation = -1
        # Set when the runtime's state changed (a container started, say): wakes the idle
        # process poll.
        self._containers_changed = trio.Event()
        # Per swarm network: what the VTEP was last told (recomputed only when it changes).
        self._planes: dict[str, tuple[hostcore.NetworkPlanes, frozenset[str]]] = {}
        self.api: ApiServer | None = None
        # Where Prometheus text is served (`--metrics-addr`); None: not at all (opt-in).
        self.metrics_addr = metrics_addr
        self.counters: Counter[str] = Counter()
        self.started = time.time()
        # The worker side of services: runs the tasks the managers assign here (in a swarm).
        self.task_runner = TaskRunner(agent_hooks(self))
        self.container_health = container_health_for(self)
        # Service names for DNS, from the managers' service list (task.assigned).
        self.service_names = ServiceNames()
        # Service VIPs: a load-balancer sandbox per overlay network with VIPs here.
        self.lb = LbPlane(self)
        # `overlaynet trace`: probes, captures and the VTEP's trace flag.
        self.trace = TracePlane(self)
        self.service_names.on_change = self.lb.poke
        # `lab impair`: overlay impairments toward peers, kept across restarts.
        self.impairments = ImpairState(paths.state_dir / "impair.json", lambda: self.overlay.vtep)
        # `watch`: subscribers (the web view) are woken when this host's state changes.
        self.watch = ChangeFeed(partial(agent_parts, self))
        # The requests' handlers, grouped by plane and bound to this agent (as the lb and
        # trace planes are); the dispatch table below names each one.
        self.network_requests = NetworkRequests(self)
        self.container_requests = ContainerRequests(self)
        self.view_requests = ViewRequests(self)
        # The planes that run containers for the managers (tasks, lb) drive them through the
        # agent as a client's request would.
        self.network_create = self.network_requests.network_create
        self.container_start = self.container_requests.container_start
        self.container_stop = self.container_requests.container_stop
        handlers: dict[type[Request], Callable[[Any], Awaitable[Any]]] = {
            rq.Ping: self.ping,
            rq.Info: self.info,
            rq.HostKernel: self.view_requests.host_kernel,
            rq.NetworkCreate: self.network_requests.network_create,
            rq.NetworkLs: self.network_requests.network_ls,
            rq.NetworkInspect: self.network_requests.network_inspect,
            rq.NetworkRm: self.network_requests.network_rm,
            rq.NetworkConnect: self.network_requests.network_connect,
            rq.NetworkDisconnect: self.network_requests.network_disconnect,
            rq.NetworkPeer: self.network_requests.network_peer,
            rq.NetworkFdb: self.network_requests.network_fdb,
            rq.ContainerCreate: self.container_requests.container_create,
            rq.ContainerStart: self.container_requests.container_start,
            rq.ContainerStop: self.container_requests.container_stop,
            rq.ContainerRm: self.container_requests.container_rm,
            rq.ContainerLs: self.container_requests.container_ls,
            rq.ContainerInspect: self.container_requests.container_inspect,
            rq.ContainerWait: self.container_requests.container_wait,
            rq.ContainerTop: self.container_requests.container_top,
            rq.ContainerLogs: self.container_requests.container_logs,
            rq.ContainerExec: self.container_requests.container_exec,
            rq.ImageLs: self.container_requests.image_ls,
            rq.SwarmInit: self.swarm_init,
            rq.SwarmJoin: self.swarm_join,
            rq.SwarmJoinToken: self.swarm_join_token,
            rq.SwarmLeave: self.swarm_leave,
            rq.GossipMembers: self.view_requests.gossip_members,
            rq.GossipEndpoints: self.view_requests.gossip_endpoints,
            rq.Stats: self.view_requests.stats,
            rq.DnsRecords: self.view_requests.dns_records,
            rq.NetworkLb: self.lb.network_doc,
            Events: self.runtime.events.handle,
            ImpairRequest: self.impairments.handle,
            WatchChanges: self.watch.handle,
            trace_rq.TracePlan: self.trace.plan,
            trace_rq.TraceArm: self.trace.arm,
            trace_rq.TraceRecords: self.trace.records,
            trace_rq.TraceProbe: self.trace.probe,
        }
        handlers.update({cls: self.cluster_request for cls in rq.CLUSTER_REQUESTS})
        # Every request type has its handler: checked here, not at a client's first call.
        assert set(handlers) == set(rq.REQUESTS.values())
        self.handlers = handlers

    async def _state(self, fn: Callable[[], T]) -> T:
        """Run records-and-kernel work in a thread under the state lock; then the planes follow.

        Waiting for the lock can be cancelled (a client that gave up); once the work starts it
        finishes, and the planes with it, so no request is left half-applied."""
        async with self.state_lock:
            with trio.CancelScope(shield=True):
                try:
                    result = await trio.to_thread.run_sync(fn)
                finally:
                    if self.runtime.generation != self._synced_generation:
                        self._containers_changed.set()
                        self.container_health.poke()
                        self.task_runner.poke()
                        await self._sync_planes()
        return result

    async def _sync_planes(self) -> None:
        """Make gossip, the VTEP and DNS match the runtime's containers and networks and what
        gossip knows of other hosts. Runs under the state lock."""
        rt = self.runtime
        self._synced_generation = rt.generation
        if self.control.running:
            addr = self.swarm.advertise_addr or ""
            self.control.publish(hostcore.local_records(rt.containers.values(), rt.networks, addr))
            dirty = self.control.take_dirty()
            for net in rt.networks.values():
                if net.scope != "swarm" or net.vni is None:
                    continue
                have = self._planes.get(net.id)
                if have is None or dirty is None or net.id in dirty:
                    planes = hostcore.translate(net, self.control.remote(net.id))
                else:
                    planes = have[0]
                wanted = (planes, frozenset(self.control.peers(net.id)))
                if wanted != have:
                    self.overlay.learn(net.id, planes.endpoints, wanted[1])
                    self._planes[net.id] = wanted
                self.overlay.learn_offload(
                    net.id, offload_addresses(self.control.gossip, net.id, self.control.node_id)
                )
            for gone in set(self._planes) - set(rt.networks):
                del self._planes[gone]
            self.overlay.set_members(self.control.live_addresses())
        else:
            self._planes.clear()
        remote_names = {nid: list(p.names) for nid, (p, _) in self._planes.items()}
        view = dns_feed.build_view(rt.networks.values(), rt.containers.values(), remote_names)
        self.service_names.add_to(view, self.dns_table)
        dns_feed.apply(self.dns_table, view)
        served = view.served_containers()
        for cid in list(self.dns.containers):
            if cid not in served:
                await self.dns.remove_container(cid)
        for cid in served - set(self.dns.containers):
            ns = rt.container_netns(rt.containers[cid])
            if ns is None:
                continue
            try:
                await self.dns.add_container(cid, ns)
            except OSError as e:
                self.counters["dns_bind_failures"] += 1
                log.warning(
                    "embedded DNS unavailable",
                    extra={"fields": {"container": cid, "error": str(e)}},
                )
        self.watch.poke()

    async def _ensure_vtep(self) -> None:
        """Start the VTEP plane (a child of the agent's nursery) if it does not run yet."""
        # Two requests (or a request and the task runner) may both find no VTEP: one starts
        # it, the other waits for it, instead of failing on udp/4789 already bound.
        async with self._vtep_start:
            if self.overlay.vtep is not None or self.overlay.local_ip is None:
                return  # without an underlay address, attaching an overlay says why
            assert self._nursery is not None
            try:
                await self._nursery.start(self._run_vtep)
            except OSError as e:
                raise Unavailable(f"cannot start the VXLAN data plane: {e}") from None

    async def _run_vtep(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        assert self.overlay.local_ip is not None
        # Imported with the first overlay, not at start: an idle agent has no VTEP (issue 15).
        from overlaynet.dataplane.vtep import Vtep

        vtep = Vtep(self.overlay.local_ip, lane=self.lane)
        self.impairments.apply(vtep)
        self.overlay.vtep = vtep
        try:
            task_status.started()
            await vtep.run()
        finally:
            self.overlay.close()

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = bind_unix(self.paths.socket)
        write_private(self.paths.pid_file, f"{os.getpid()}\n")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.dns.run)
                await self.swarm.start(nursery)
                await self._start_control()
                nursery.start_soon(self._follow_gossip)
                nursery.start_soon(self._follow_role)
                if any(n.driver == Driver.OVERLAY for n in self.runtime.networks.values()):
                    await self._ensure_vtep()
                counts = await self._state(self.runtime.restore)
                log.info("restored state", extra={"fields": counts})
                if self.metrics_addr is not None:
                    await self._start_metrics()
                self.api = ApiServer(listener, rq.REQUESTS, self.handle, self.counters)
                await nursery.start(self.api.run)
                nursery.start_soon(self._poll_processes)
                await nursery.start(self.task_runner.run)
                await nursery.start(self.container_health.run)
                await nursery.start(self.lb.run)
                nursery.start_soon(self._handle_signals, nursery.cancel_scope)
                log.info("agent ready", extra={"fields": {"socket": str(self.paths.socket)}})
                task_status.started()
        finally:
            self._nursery = None
            self.overlay.close()
            listener.close()
            self.paths.socket.unlink(missing_ok=True)
            self.paths.pid_file.unlink(missing_ok=True)
            log.info("agent stopped")

    async def _handle_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("shutting down", extra={"fields": {"signal": signum}})
                scope.cancel()
                return

    async def _poll_processes(self) -> None:
        """Notice containers whose process ended. Liveness is read here in trio (/proc/PID/stat
        of each running container: microseconds); the runtime's poll goes to a worker thread
        under the state lock only when one ended: a thread hop every POLL_INTERVAL was most of
        an idle agent's wake-ups (issue 15). With none running, wait for a state change."""
        while True:
            if _running(self.runtime.containers.values()):
                await trio.sleep(POLL_INTERVAL)
            else:
                with trio.move_on_after(IDLE_PROCESS_POLL):
                    await self._containers_changed.wait()
                self._containers_changed = trio.Event()
            if not any(map(_ended, _running(self.runtime.containers.values()))):
                continue
            ended = await self._state(self.runtime.poll)
            for c in ended:
                log.info(
                    "container exited",
                    extra={"fields": {"container": c.name, "exit_code": c.exit_code}},
                )

    async def handle(self, req: Request, fds: tuple[int, ...] = ()) -> bytes:
        """A typed request in, one response line out (an error line when it is refused).
        `fds`: descriptors the client attached (exec's streams, `run -i`'s stdin)."""
        op = req.OP
        try:
            if isinstance(req, rq.ContainerExec):
                return api.encode_result(await self.container_requests.container_exec(req, fds))
            if isinstance(req, rq.ContainerCreate) and req.attach:
                return api.encode_result(await self.container_requests.container_create(req, fds))
            return api.encode_result(await self.handlers[type(req)](req))
        except ApiError as e:
            self.counters["refused_requests"] += 1
            return api.encode_error(e.kind, str(e))
        except Exception as e:
            self.counters["internal_errors"] += 1
            log.exception("request failed", extra={"fields": {"op": op}})
            return api.encode_error("unavailable", f"{op} failed inside the agent: {e}")

    # ---- operations ---------------------------------------------------------------------

    async def ping(self, req: rq.Ping) -> Any:
        return {"host": self.paths.host, "pid": os.getpid(), "version": VERSION}

    async def info(self, req: rq.Info) -> Any:
        rt = self.runtime
        # Reads on the event loop walk copies: a request may be changing the dicts in a thread.
        running = sum(1 for c in list(rt.containers.values()) if c.status == Status.RUNNING)
        return {
            "ID": engine_id.load_or_create(self.paths.state_dir),
            "Name": self.paths.host,
            "Lab": self.paths.lab,
            "Pid": os.getpid(),
            "Uptime": round(time.time() - self.started, 1),
            "Containers": len(rt.containers),
            "ContainersRunning": running,
            "Networks": len(rt.networks),
            "StateDir": str(self.paths.state_dir),
            "Swarm": self._swarm_info(),
            "Gossip": {
                "Members": self.control.members_view(),
                "KeyFingerprints": self.control.key_fingerprints(),
                "Counters": {
                    **(self.control.gossip.stats() if self.control.gossip else {}),
                    **self.control.counters,
                },
            },
            "Counters": dict(self.counters),
            "Tasks": dict(self.task_runner.counters),
            "Dns": self.dns.counters(),
            "Cluster": self._cluster_counters(),
        }

    def _cluster_counters(self) -> dict[str, Any] | None:
        """What this node's manager refused and why (issue 18: rejections were invisible)."""
        server = self.swarm.server
        if server is None:
            return None
        return {
            "Rejections": server.rejections(),
            "Connections": server.connections(),
            "Counters": dict(server.stats),
            "Raft": server.raft_info(),
        }

    # ---- the managers' side of a request ----------------------------------------------------

    @contextlib.asynccontextmanager
    async def _container(self, ref: str) -> AsyncIterator[str]:
        """Hold one container's lock for a request: its id, or NotFound."""
        cid = self.runtime.container(ref).id
        async with self.container_locks.hold(cid):
            self.runtime.container(cid)  # removed while we waited: NotFound
            yield cid

    async def _target(self, ref: str) -> tuple[Network | None, Network | None]:
        """The network `ref` names: (local record, None), or (None, the managers' record)
        for a swarm network not on this host yet (it comes with the container)."""
        local = self.runtime.local_network(ref)
        if local is not None or not self.swarm.in_swarm:
            if local is not None and local.driver == Driver.OVERLAY:
                await self._ensure_vtep()
            return local, None
        docs = (await self.swarm.snapshot())["networks"]
        exact = [d for d in docs if ref in (d["id"], d["name"])]
        prefix = [d for d in docs if d["id"].startswith(ref)] if ref else []
        found = exact or (prefix if len(prefix) == 1 else [])
        if not found:
            return None, None
        net = self._with_data_keys(hostcore.network_from_swarm(found[0]), found[0])
        hostcore.check_attachable(net, ref)
        await self._ensure_vtep()
        return None, net

    def _with_data_keys(self, net: Network, doc: dict[str, Any]) -> Network:
        """An encrypted swarm network (issue 18): its keys to the overlay driver before it is
        attached, the encrypted option on the record, the MTU lowered by the sealing."""
        if not doc.get("encrypted"):
            return net
        self.overlay.set_data_keys(net.id, datakeys.data_keys(doc.get("data_keys") or []))
        options = {**net.options, datakeys.ENCRYPTED_OPTION: ""}
        return dataclasses.replace(net, mtu=net.mtu - SEAL_OVERHEAD, options=options)

    async def _follow_data_keys(self) -> None:
        """Encrypted networks' keyrings as the managers have them now (rotation)."""
        try:
            # The role check fetched one a moment ago: reuse it (one request less per 2 s).
            docs = (await self.swarm.snapshot(max_age=ROLE_CHECK_INTERVAL / 2))["networks"]
            rings = {d["id"]: datakeys.data_keys(d["data_keys"]) for d in docs if d["encrypted"]}
        except (ApiError, OSError, KeyError, TypeError, ValueError) as e:
            self.counters["data_key_polls_failed"] += 1
            log.debug("data keys not fetched: %s", e)
            return
        for net_id, keys in rings.items():
            self.overlay.set_data_keys(net_id, keys)

    async def _allocate(self, net: Network | None, ip: str | None) -> Allocation | None:
        """An address from the managers, when `net` is a swarm network."""
        if net is None or net.scope != "swarm":
            return None
        endpoint_id = new_id()
        res = await self.swarm.call("ip.allocate", network=net.id, endpoint_id=endpoint_id, ip=ip)
        return Allocation(endpoint_id, str(res["ip"]), str(res["mac"]))

    async def _release_allocation(self, net: Network | None, allocation: Allocation | None) -> None:
        if net is not None and allocation is not None:
            ep = Endpoint(allocation.endpoint_id, net.id, "", allocation.ip, allocation.mac)
            await self._release([(net, ep)])

    async def _release(self, endpoints: list[tuple[Network, Endpoint]]) -> None:
        """Give swarm addresses back once their endpoints are gone. Shielded: a client that
        hangs up must not leave an address taken; a manager that fails is logged, not fatal."""
        with trio.CancelScope(shield=True):
            for net, ep in endpoints:
                try:
                    await self.swarm.call("ip.release", network=net.id, endpoint_id=ep.id)
                except ApiError as e:
                    self.counters["release_failures"] += 1
                    log.warning("could not release %s on %s: %s", ep.ip, net.name, e)

    # ---- swarm ----------------------------------------------------------------------------

    def _advertise(self, spec: str | None) -> tuple[str, int]:
        """`--advertise-addr eth0|IP[:PORT]` → (IP, port)."""
        text = spec or self.advertise_addr or "eth0"
        host, _, port = text.partition(":")
        ip = underlay_address(host)
        if ip is None:
            raise InvalidArgument(
                f"cannot use {text!r} as the advertise address: give an IPv4 address or an "
                "interface with one (e.g. eth0)"
            )
        try:
            number = int(port) if port else MANAGER_PORT
        except ValueError:
            raise InvalidArgument(f"invalid port in advertise address {text!r}") from None
        if not 1 <= number <= 65535:
            raise InvalidArgument(f"invalid port in advertise address {text!r}")
        return ip, number

    def _swarm_info(self) -> dict[str, Any] | None:
        joined = self.swarm.joined
        if joined is None:
            return None
        return {
            "NodeID": joined.node_id,
            "ClusterID": joined.cluster_id,
            "Role": "manager" if self.swarm.is_manager else "worker",
            "Managers": list(joined.managers),
            "AdvertiseAddr": self.swarm.advertise_addr,
        }

    async def _start_control(self) -> None:
        joined = self.swarm.joined
        if joined is None or self.control.running or self._nursery is None:
            return
        assert self.swarm.advertise_addr is not None
        await self.control.start(
            self._nursery,
            joined.node_id,
            self.swarm.advertise_addr,
            joined.gossip_key,
            self.swarm.gossip_seeds(),
        )

    async def _follow_gossip(self) -> None:
        """Whenever gossip learns something, bring the VTEP and DNS in line (coalesced)."""
        while True:
            await self.control.changed.wait()
            self.control.changed = trio.Event()
            async with self.state_lock:
                await self._sync_planes()
            members = self.control.members_view()
            if self.runtime.events.moved(members):  # node up/down events, with the hostnames
                self.runtime.events.members(members, await self._node_names())
            if self.swarm.server is not None:
                # A member may have come or gone: the leader moves tasks now, not next second.
                self.swarm.server.kick()

    async def _follow_role(self) -> None:
        while True:
            await trio.sleep(ROLE_CHECK_INTERVAL)
            if self.swarm.in_swarm:
                await self.swarm.follow_role()
                # Gossip key rotation: report this host's keys, take the managers' stage.
                await self.control.follow_keys(self.swarm)
                await self._follow_data_keys()

    async def swarm_init(self, req: rq.SwarmInit) -> Any:
        ip, port = self._advertise(req.advertise_addr)
        if req.force_new_cluster:
            res = await self.swarm.force_new_cluster()
        else:
            res = await self.swarm.init(ip, port, req.ingress_subnet)
        await self._start_control()
        self.task_runner.poke()
        log.info("swarm initialised", extra={"fields": {"node": res["node_id"]}})
        return res

    async def swarm_join(self, req: rq.SwarmJoin) -> Any:
        ip, _ = self._advertise(req.advertise_addr)
        res = await self.swarm.join(req.token, req.remote, ip)
        await self._start_control()
        self.task_runner.poke()
        async with self.state_lock:
            await self._sync_planes()
        log.info("joined swarm", extra={"fields": res})
        return res

    async def swarm_join_token(self, req: rq.SwarmJoinToken) -> Any:
        return await self.swarm.call("join_token", role=req.role, rotate=req.rotate)

    async def swarm_leave(self, req: rq.SwarmLeave) -> Any:
        """Docker refuses to leave while overlay endpoints exist here: the managers would give
        their addresses to others (issue 18: same IP and MAC twice). `--force` removes them."""
        rt = self.runtime
        attached = [
            (c, net) for c in list(rt.containers.values()) for net, _ in rt.swarm_endpoints(c)
        ]
        if attached and self.swarm.in_swarm:
            if not req.force:
                names = ", ".join(sorted({c.name for c, _ in attached}))
                raise Conflict(
                    f"this node has containers attached to swarm networks ({names}): "
                    "disconnect or remove them first, or use `--force` to disconnect them "
                    "and leave"
                )
            for c, net in attached:
                async with self._container(c.id) as cid:
                    await self._state(partial(rt.network_disconnect, net.id, cid))
                    ep = c.endpoint_on(net.id)
                    if ep is not None:
                        await self._release([(net, ep)])
        await self.swarm.leave(req.force)
        await self.control.stop()
        async with self.state_lock:
            await self._sync_planes()
        return {}

    async def cluster_request(self, req: Request) -> Any:
        """Node management: answered by the managers, whichever host is asked."""
        return await self.swarm.call(req.OP, **req.to_args())

    # ---- the metrics page, the managers' names for nodes ------------------------------------

    async def _start_metrics(self) -> None:
        """Serve Prometheus text (a child of the agent's nursery). A port that cannot be bound
        is logged and counted: the agent's own work goes on without the export."""
        assert self._nursery is not None and self.metrics_addr is not None
        host, port = self.metrics_addr

        def page() -> str:
            return metrics.render(self.paths.host, self.view_requests.stats_samples())

        try:
            bound = await self._nursery.start(
                partial(metrics.serve, host, port, page, self.counters)
            )
        except OSError as e:
            self.counters["metrics_bind_failures"] += 1
            log.error(
                "metrics endpoint unavailable",
                extra={"fields": {"addr": f"{host}:{port}", "error": str(e)}},
            )
            return
        log.info("metrics endpoint ready", extra={"fields": {"addr": f"{host}:{bound}"}})

    async def _node_names(self) -> dict[str, str]:
        """Node id and underlay address → hostname, as the managers know them; empty when this
        host is no manager (workers may not list nodes) or none answers."""
        if not self.swarm.is_manager:
            return {}
        try:
            nodes = await self.swarm.call("node.ls")
        except ApiError:
            return {}
        names: dict[str, str] = {}
        for node in nodes:
            names[str(node["id"])] = names[str(node["addr"])] = str(node["hostname"])
        return names


def underlay_address(spec: str) -> str | None:
    """An IPv4 address as given, or the first IPv4 address of the named interface."""
    try:
        return str(ipaddress.IPv4Address(spec))
    except ValueError:
        pass
    for ifname, iface in links.addresses():
        if ifname == spec:
            return str(iface.ip)
    return None


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def setup_logging(log_file: Path | None, level: str = "info") -> None:
    handler: logging.Handler = (
        logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    )
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="overlaynet agent", description="run one host's agent")
    p.add_argument("--host", required=True, help="this host's name (node1, …)")
    p.add_argument("--lab", default=None, help="the lab this host belongs to (none on a VM)")
    p.add_argument("--log-file", type=Path, default=None)
    p.add_argument("--log-level", default="info")
    p.add_argument(
        "--advertise-addr",
        default="eth0",
        help="underlay address for VXLAN and gossip: an IPv4 address or an interface (eth0)",
    )
    p.add_argument(
        "--metrics-addr",
        default=None,
        metavar="IP:PORT",
        help="serve Prometheus text on http://IP:PORT/metrics (off unless given), "
        "e.g. 127.0.0.1:9323",
    )
    p.add_argument(
        "--lane",
        default=os.environ.get(LANE_ENV, "off"),
        help=f"the VTEP's second thread for pings and other lone frames: {', '.join(LANE_MODES)}"
        f" (default off, or ${LANE_ENV}, which a lab's agents inherit from `lab up`)",
    )
    ns = p.parse_args(argv)
    try:
        metrics_addr = metrics.parse_addr(ns.metrics_addr) if ns.metrics_addr else None
    except ValueError as e:
        p.error(str(e))
    if ns.lane not in LANE_MODES:
        p.error(f"--lane (or ${LANE_ENV}) must be one of {', '.join(LANE_MODES)}, not {ns.lane!r}")
    paths = HostPaths(ns.host, ns.lab)
    make_private_dir(paths.state_dir)
    setup_logging(ns.log_file, ns.log_level)
    make_private_dir(paths.state_dir)  # again, now that its warnings reach the log
    agent = Agent(paths, underlay_address(ns.advertise_addr), metrics_addr, ns.lane)
    trio.run(agent.run)
    return 0


def _running(containers: Iterable[Container]) -> list[Container]:
    """A copy: a request may be changing the dict in a worker thread meanwhile."""
    return [c for c in list(containers) if c.status == Status.RUNNING]


def _ended(c: Container) -> bool:
    """A running container's process is gone (or a zombie not reaped yet), read from /proc
    without a thread; the runtime's poll then records it (and reaps its child)."""
    if c.pid is None or c.pid_start is None:
        return True
    return not process.alive(process.Running(c.pid, c.pid_start))
