"""The per-host daemon: one trio nursery wiring the planes, and the local API that drives them.

Kernel work runs in worker threads under one lock (pyroute2 and subprocess calls block), so the
event loop stays free and requests are applied one at a time. A client's request can fail; it
can never stop the agent.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import ipaddress
import json
import logging
import os
import signal
import socket as stdsocket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from overlaynet import api
from overlaynet.agent import control, hostcore, views
from overlaynet.agent import requests as rq
from overlaynet.agent.overlay import OverlayDriver
from overlaynet.agent.records import ENDPOINT_TABLE, BadEndpointRecord, EndpointRecord
from overlaynet.agent.runtime import (
    Runtime,
    epoch_from_iso,
    iso_from_epoch,
)
from overlaynet.agent.swarm import SwarmMember
from overlaynet.api import Request
from overlaynet.boundary import contained
from overlaynet.dns import feed as dns_feed
from overlaynet.dns.records import DnsTable, NameRecord
from overlaynet.dns.server import DnsServer
from overlaynet.dns.upstream import upstreams_from_resolv_conf
from overlaynet.errors import ApiError, InvalidArgument, NotFound
from overlaynet.host import links, netns
from overlaynet.model import OVERLAY_MTU, Container, Driver, Network, Status
from overlaynet.paths import HostPaths, make_private_dir

log = logging.getLogger("overlaynet.agent")
T = TypeVar("T")

# How often the agent looks for containers whose process ended (Docker learns it from
# containerd events; a poll this often keeps `ps` and `run`'s exit code prompt).
POLL_INTERVAL = 0.2
VERSION = "0.1.0"
# Docker answers with TTL 600 s, which leaves stale answers behind when containers move;
# a few seconds keeps clients' caches honest at negligible cost (issue #5).
DNS_TTL = 5
# How often a swarm node reads its own role (promote/demote take effect within this).
ROLE_CHECK_INTERVAL = 2.0


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
    def __init__(self, paths: HostPaths, advertise_addr: str | None = None) -> None:
        self.paths = paths
        self.advertise_addr = advertise_addr
        self.overlay = OverlayDriver(advertise_addr)
        self.runtime = Runtime(
            paths.host,
            paths.state_dir,
            paths.kernel_names,
            copy_host_resolv=paths.lab is None,
            overlay=self.overlay,
        )
        self.lock = trio.Lock()
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
        if self.swarm.in_swarm:
            self.runtime.cluster = ClusterBridge(self)
        self._synced_generation = -1
        self.counters: Counter[str] = Counter()
        self.started = time.time()
        handlers: dict[type[Request], Callable[[Any], Awaitable[Any]]] = {
            rq.Ping: self.ping,
            rq.Info: self.info,
            rq.HostKernel: self.host_kernel,
            rq.NetworkCreate: self.network_create,
            rq.NetworkLs: self.network_ls,
            rq.NetworkInspect: self.network_inspect,
            rq.NetworkRm: self.network_rm,
            rq.NetworkConnect: self.network_connect,
            rq.NetworkDisconnect: self.network_disconnect,
            rq.NetworkPeer: self.network_peer,
            rq.NetworkFdb: self.network_fdb,
            rq.ContainerCreate: self.container_create,
            rq.ContainerStart: self.container_start,
            rq.ContainerStop: self.container_stop,
            rq.ContainerRm: self.container_rm,
            rq.ContainerLs: self.container_ls,
            rq.ContainerInspect: self.container_inspect,
            rq.ContainerWait: self.container_wait,
            rq.ContainerTop: self.container_top,
            rq.ContainerLogs: self.container_logs,
            rq.SwarmInit: self.swarm_init,
            rq.SwarmJoin: self.swarm_join,
            rq.SwarmJoinToken: self.swarm_join_token,
            rq.SwarmLeave: self.swarm_leave,
            rq.GossipMembers: self.gossip_members,
            rq.GossipEndpoints: self.gossip_endpoints,
        }
        handlers.update({cls: self.cluster_request for cls in rq.CLUSTER_REQUESTS})
        # Every request type has its handler: checked here, not at a client's first call.
        assert set(handlers) == set(rq.REQUESTS.values())
        self.handlers = handlers

    async def locked(self, fn: Callable[[], T]) -> T:
        """Run kernel work in a thread, one request at a time; then let the planes follow."""
        async with self.lock:
            try:
                return await trio.to_thread.run_sync(fn)
            finally:
                if self.runtime.generation != self._synced_generation:
                    await self._sync_planes()

    async def _sync_planes(self) -> None:
        """Make gossip, the VTEP and DNS match the runtime's containers and networks and what
        gossip knows of other hosts. Runs under the agent lock."""
        rt = self.runtime
        self._synced_generation = rt.generation
        remote_names: dict[str, list[NameRecord]] = {}
        if self.control.running:
            addr = self.swarm.advertise_addr or ""
            self.control.publish(hostcore.local_records(rt.containers.values(), rt.networks, addr))
            for net in rt.networks.values():
                if net.scope != "swarm" or net.vni is None:
                    continue
                planes = hostcore.translate(net, self.control.remote(net.id))
                self.overlay.learn(net.id, planes.endpoints, self.control.peers(net.id))
                remote_names[net.id] = list(planes.names)
            self.overlay.set_members(self.control.live_addresses())
        view = dns_feed.build_view(rt.networks.values(), rt.containers.values(), remote_names)
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

    # ---- lifecycle ----------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listener = self._bind_socket()
        self.paths.pid_file.write_text(f"{os.getpid()}\n")
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.dns.run)
                await self.swarm.start(nursery)
                await self._start_control()
                nursery.start_soon(self._follow_gossip)
                nursery.start_soon(self._follow_role)
                counts = await self.locked(self.runtime.restore)
                log.info("restored state", extra={"fields": counts})
                nursery.start_soon(self._serve, listener)
                nursery.start_soon(self._poll_processes)
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

    def _bind_socket(self) -> trio.socket.SocketType:
        path = self.paths.socket
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = stdsocket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # left by an agent that died
        else:
            raise SystemExit(f"another agent already serves {path}")
        finally:
            probe.close()
        sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
        sock.setsockopt(stdsocket.SOL_SOCKET, stdsocket.SO_REUSEADDR, 1)
        # Bind synchronously: trio's async bind only differs for name resolution.
        sock._sock.bind(str(path))  # type: ignore[attr-defined]
        os.chmod(path, 0o660)
        sock.listen(64)
        return sock

    async def _handle_signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("shutting down", extra={"fields": {"signal": signum}})
                scope.cancel()
                return

    async def _poll_processes(self) -> None:
        while True:
            await trio.sleep(POLL_INTERVAL)
            ended = await self.locked(self.runtime.poll)
            for c in ended:
                log.info(
                    "container exited",
                    extra={"fields": {"container": c.name, "exit_code": c.exit_code}},
                )

    async def _serve(self, listener: trio.socket.SocketType) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    conn, _ = await listener.accept()
                except OSError as e:
                    if e.errno in (errno.EMFILE, errno.ENFILE):
                        await trio.sleep(0.1)
                        continue
                    raise
                nursery.start_soon(self._handle_connection, trio.SocketStream(conn))

    async def _handle_connection(self, stream: trio.SocketStream) -> None:
        with contained(self.counters, "connection_errors", log, "API connection"):
            async with stream:
                try:
                    line = await self._read_line(stream)
                    reply = await self.dispatch(line)
                    await stream.send_all(reply)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self.counters["client_gone"] += 1

    async def _read_line(self, stream: trio.SocketStream) -> bytes:
        buf = bytearray()
        with trio.move_on_after(30):
            while b"\n" not in buf and len(buf) <= api.MAX_REQUEST_BYTES:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                buf += chunk
        return bytes(buf.split(b"\n", 1)[0])

    async def dispatch(self, line: bytes) -> bytes:
        """One request line in, one response line out; nothing a client sends escapes this."""
        try:
            op, args = api.decode_request(line)
        except api.MalformedRequest as e:
            self.counters["malformed_requests"] += 1
            log.warning("malformed request", extra={"fields": {"error": str(e)}})
            return api.encode_error("invalid", f"malformed request: {e}")
        cls = rq.REQUESTS.get(op)
        if cls is None:
            self.counters["unknown_ops"] += 1
            return api.encode_error("invalid", f"unknown operation {op!r}")
        self.counters[f"op:{op}"] += 1
        try:
            req = api.decode_args(cls, args)
        except InvalidArgument as e:
            self.counters["bad_arguments"] += 1
            return api.encode_error(e.kind, str(e))
        return await self.handle(req)

    async def handle(self, req: Request) -> bytes:
        """A typed request in, one response line out (an error line when it is refused)."""
        op = req.OP
        try:
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
        running = sum(1 for c in rt.containers.values() if c.status == Status.RUNNING)
        return {
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
                "Counters": {
                    **(self.control.gossip.stats() if self.control.gossip else {}),
                    **self.control.counters,
                },
            },
            "Counters": dict(self.counters),
        }

    async def network_create(self, req: rq.NetworkCreate) -> Any:
        if req.driver == "overlay" and self.swarm.in_swarm:
            # In a swarm an overlay is cluster-scoped: the managers allocate its VNI and subnet.
            res = await self.swarm.call(
                "network.create",
                name=req.name,
                subnet=req.subnet,
                gateway=req.gateway,
                attachable=req.attachable,
                labels=req.labels,
            )
            return {"id": res["id"]}
        net = await self.locked(partial(self.runtime.network_create, req))
        log.info("network created", extra={"fields": {"network": net.name, "id": net.id}})
        return {"id": net.id}

    async def network_ls(self, req: rq.NetworkLs) -> Any:
        rows = {
            n.id: {"id": n.id, "name": n.name, "driver": str(n.driver), "scope": n.scope}
            for n in self.runtime.networks.values()
        }
        # A manager knows every swarm network; other hosts show one only while a container there
        # uses it (lazy extension), and the ingress network, as Docker does.
        for doc in await self._swarm_networks():
            if self.swarm.is_manager or doc.get("ingress"):
                rows.setdefault(doc["id"], _swarm_row(doc))
        return sorted(rows.values(), key=lambda r: r["name"])

    async def _swarm_networks(self) -> list[dict[str, Any]]:
        if not self.swarm.in_swarm:
            return []
        try:
            snap = await self.swarm.snapshot()
        except ApiError:
            return []  # no manager reachable: show what this host has
        nets: list[dict[str, Any]] = snap["networks"]
        return nets

    async def network_inspect(self, req: rq.NetworkInspect) -> Any:
        rt = self.runtime
        ref = req.network
        try:
            net = rt.network(ref)
        except NotFound:
            if not self.swarm.is_manager:
                raise
            doc = await self.swarm.call("network.inspect", network=ref)
            return views.network_doc(
                ClusterBridge.to_network(doc), [], {"Overlay": {"VNI": doc["vni"], "Peers": []}}
            )
        extra: dict[str, Any] = {}
        if net.driver == Driver.OVERLAY:
            dataplane = self.overlay.inspect(net)
            extra["Overlay"] = {
                "VNI": net.vni,
                "VTEP": f"{self.advertise_addr}:4789",
                "Peers": sorted((dataplane or {}).get("peers", net.peers)),
                "StaticPeers": list(net.peers),
                "StaticEndpoints": list(net.static_endpoints),
                "DataPlane": dataplane,
            }
        return views.network_doc(net, list(rt.containers.values()), extra)

    async def network_peer(self, req: rq.NetworkPeer) -> Any:
        net = await self.locked(partial(self.runtime.overlay_peer, req.network, req.host, req.add))
        return {"peers": net.peers}

    async def network_fdb(self, req: rq.NetworkFdb) -> Any:
        fn = partial(self.runtime.overlay_fdb, req.network, req.mac, req.host, req.ip, req.add)
        net = await self.locked(fn)
        return {"static_endpoints": net.static_endpoints}

    async def network_rm(self, req: rq.NetworkRm) -> Any:
        ref = req.network
        local = None
        with contextlib.suppress(NotFound):
            local = self.runtime.network(ref)
        if self.swarm.in_swarm and (local is None or local.scope == "swarm"):
            doc = await self.swarm.call("network.rm", network=local.id if local else ref)
            return {"id": doc["id"], "name": doc["name"]}
        net = await self.locked(partial(self.runtime.network_rm, ref))
        return {"id": net.id, "name": net.name}

    async def network_connect(self, req: rq.NetworkConnect) -> Any:
        fn = partial(self.runtime.network_connect, req.network, req.container, req.ip, req.aliases)
        c = await self.locked(fn)
        return {"id": c.id}

    async def network_disconnect(self, req: rq.NetworkDisconnect) -> Any:
        c = await self.locked(partial(self.runtime.network_disconnect, req.network, req.container))
        return {"id": c.id}

    async def container_create(self, req: rq.ContainerCreate) -> Any:
        c = await self.locked(partial(self.runtime.container_create, req))
        log.info("container created", extra={"fields": {"container": c.name, "id": c.id}})
        if req.start:
            try:
                await self.locked(partial(self.runtime.container_start, c.id))
            except ApiError:
                await self.locked(partial(self.runtime.container_rm, c.id, True))
                raise
        return {"id": c.id, "name": c.name}

    async def container_start(self, req: rq.ContainerStart) -> Any:
        c = await self.locked(partial(self.runtime.container_start, req.container))
        return {"id": c.id, "name": c.name}

    async def container_stop(self, req: rq.ContainerStop) -> Any:
        c = await self.locked(partial(self.runtime.container_stop, req.container, req.timeout))
        return {"id": c.id, "name": c.name}

    async def container_rm(self, req: rq.ContainerRm) -> Any:
        c = await self.locked(partial(self.runtime.container_rm, req.container, req.force))
        return {"id": c.id, "name": c.name}

    async def container_ls(self, req: rq.ContainerLs) -> Any:
        include_all = req.all
        now = time.time()
        rows = []
        for c in sorted(self.runtime.containers.values(), key=lambda c: c.created, reverse=True):
            if not include_all and c.status != Status.RUNNING:
                continue
            ages = {
                "started": now - _epoch(c.started_at),
                "finished": now - _epoch(c.finished_at),
            }
            rows.append(
                {
                    "id": c.id,
                    "image": c.image,
                    "command": views.command_text(c.cmd),
                    "created": views.human_duration(now - _epoch(c.created)) + " ago",
                    "status": views.status_text(c, ages),
                    "ports": "",
                    "names": c.name,
                    "state": str(c.status),
                }
            )
        return rows

    async def container_inspect(self, req: rq.ContainerInspect) -> Any:
        rt = self.runtime
        c = rt.container(req.container)
        ns = rt.container_netns(c)
        key = netns.path(ns) if ns else f"/proc/{os.getpid()}/ns/net"
        return views.container_doc(c, rt.networks, key)

    async def container_wait(self, req: rq.ContainerWait) -> Any:
        while True:
            c: Container = self.runtime.container(req.container)
            if c.status != Status.RUNNING:
                return {"StatusCode": c.exit_code or 0}
            await trio.sleep(POLL_INTERVAL / 2)

    async def container_top(self, req: rq.ContainerTop) -> Any:
        return await self.locked(partial(self.runtime.top, req.container))

    async def container_logs(self, req: rq.ContainerLogs) -> Any:
        c = self.runtime.container(req.container)
        return {"path": str(self.runtime.container_dir(c) / "output.log")}

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
            number = int(port) if port else 2377
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
            async with self.lock:
                await self._sync_planes()

    async def _follow_role(self) -> None:
        while True:
            await trio.sleep(ROLE_CHECK_INTERVAL)
            if self.swarm.in_swarm:
                await self.swarm.follow_role()

    async def swarm_init(self, req: rq.SwarmInit) -> Any:
        ip, port = self._advertise(req.advertise_addr)
        res = await self.swarm.init(ip, port)
        self.runtime.cluster = ClusterBridge(self)
        await self._start_control()
        log.info("swarm initialised", extra={"fields": {"node": res["node_id"]}})
        return res

    async def swarm_join(self, req: rq.SwarmJoin) -> Any:
        ip, _ = self._advertise(req.advertise_addr)
        res = await self.swarm.join(req.token, req.remote, ip)
        self.runtime.cluster = ClusterBridge(self)
        await self._start_control()
        async with self.lock:
            await self._sync_planes()
        log.info("joined swarm", extra={"fields": res})
        return res

    async def swarm_join_token(self, req: rq.SwarmJoinToken) -> Any:
        return await self.swarm.call("join_token", role=req.role)

    async def swarm_leave(self, req: rq.SwarmLeave) -> Any:
        await self.swarm.leave(req.force)
        self.runtime.cluster = None
        await self.control.stop()
        return {}

    async def gossip_members(self, req: rq.GossipMembers) -> Any:
        return self.control.members_view()

    async def gossip_endpoints(self, req: rq.GossipEndpoints) -> Any:
        """The endpoint table of one network as this host's gossip has it (all owners)."""
        g = self.control.gossip
        if g is None:
            raise InvalidArgument("gossip runs only in a swarm: this host is in none")
        try:
            net_id = self.runtime.network(req.network).id
        except NotFound:
            net_id = req.network
        rows = []
        for key, entry in sorted(g.entries(ENDPOINT_TABLE, net_id).items()):
            try:
                rec = EndpointRecord.from_bytes(entry.value)
            except BadEndpointRecord:
                continue
            rows.append(
                {
                    "key": key,
                    "name": rec.name,
                    "ip": rec.ip,
                    "mac": rec.mac,
                    "host": rec.host,
                    "owner": entry.owner,
                    "ltime": entry.ltime,
                }
            )
        return rows

    async def cluster_request(self, req: Request) -> Any:
        """Node management: answered by the managers, whichever host is asked."""
        return await self.swarm.call(req.OP, **req.to_args())

    async def host_kernel(self, req: rq.HostKernel) -> Any:
        """What is built under the hood: links (with their bridge), addresses, routes."""

        def snapshot() -> dict[str, Any]:
            dumped = links.dump()
            by_index = {link.index: link.ifname for link in dumped}
            return {
                "links": [
                    {
                        "ifname": link.ifname,
                        "kind": link.kind,
                        "master": by_index.get(link.master or 0, ""),
                        "state": link.state,
                        "mtu": link.mtu,
                        "mac": link.mac,
                    }
                    for link in dumped
                ],
                "addresses": [[name, str(addr)] for name, addr in links.addresses()],
                "routes": links.routes(),
            }

        return await trio.to_thread.run_sync(snapshot)


def _swarm_row(doc: dict[str, Any]) -> dict[str, str]:
    return {"id": doc["id"], "name": doc["name"], "driver": "overlay", "scope": "swarm"}


class ClusterBridge:
    """The runtime's way to swarm state (`runtime.ClusterHook`): it runs in the runtime's
    worker thread and hops into trio for each call to the managers."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    @staticmethod
    def to_network(doc: dict[str, Any]) -> Network:
        return Network(
            id=doc["id"],
            name=doc["name"],
            driver=Driver.OVERLAY,
            created=iso_from_epoch(float(doc["created"])),
            scope="swarm",
            subnet=doc["subnet"],
            gateway=doc["gateway"],
            mtu=OVERLAY_MTU,
            labels=dict(doc.get("labels") or {}),
            attachable=bool(doc["attachable"]),
            vni=int(doc["vni"]),
        )

    def find_network(self, ref: str) -> Network | None:
        snap = trio.from_thread.run(self.agent.swarm.snapshot)
        docs = snap["networks"]
        exact = [d for d in docs if ref in (d["id"], d["name"])]
        prefix = [d for d in docs if d["id"].startswith(ref)] if ref else []
        found = exact or (prefix if len(prefix) == 1 else [])
        return self.to_network(found[0]) if found else None

    def allocate(self, net: Network, endpoint_id: str, ip: str | None) -> tuple[str, str]:
        call = partial(
            self.agent.swarm.call, "ip.allocate", network=net.id, endpoint_id=endpoint_id, ip=ip
        )
        res = trio.from_thread.run(call)
        return str(res["ip"]), str(res["mac"])

    def release(self, net: Network, endpoint_id: str) -> None:
        call = partial(self.agent.swarm.call, "ip.release", network=net.id, endpoint_id=endpoint_id)
        trio.from_thread.run(call)


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


def _epoch(iso: str | None) -> float:
    return time.time() if not iso else epoch_from_iso(iso)


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
    ns = p.parse_args(argv)
    paths = HostPaths(ns.host, ns.lab)
    make_private_dir(paths.state_dir)
    setup_logging(ns.log_file, ns.log_level)
    make_private_dir(paths.state_dir)  # again, now that its warnings reach the log
    agent = Agent(paths, underlay_address(ns.advertise_addr))
    trio.run(agent.run)
    return 0
