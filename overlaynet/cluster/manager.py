"""A swarm manager (trio): serves cluster management on tcp/2377 from the persisted state.

One leader holds the state: the node that ran `swarm init`. Every write is one synchronous step
on it (state command, then one SQLite commit, then the answer), so two clients can never be handed
the same address. A promoted manager is a follower: it copies the leader's state by fetching its
change log every second, answers reads from the copy and forwards writes to the leader.

There is no leader election. When the leader's host dies, followers keep answering reads (and
workers keep using the networks and addresses they have), but joins and writes fail with a clear
"leader unreachable" error until the leader comes back; its state is on its disk.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from overlaynet.cluster import protocol
from overlaynet.cluster.client import JoinResult, ManagerClient
from overlaynet.cluster.protocol import (
    AuthenticationFailed,
    Frame,
    FrameDecoder,
    FrameKind,
    MalformedFrame,
    ReplayGuard,
    StaleFrame,
)
from overlaynet.cluster.state import (
    MANAGER_PORT,
    Change,
    ClusterError,
    ClusterState,
    ErrorKind,
    Node,
    Role,
    allocation_doc,
    network_doc,
    node_doc,
)
from overlaynet.cluster.store import ClusterStore
from overlaynet.cluster.tokens import RandomBytes

log = logging.getLogger(__name__)

# A client sends its request right after connecting; a connection silent this long is dropped.
IDLE_TIMEOUT = 10.0
# Open connections at once: a swarm has tens of nodes, each with at most a few requests in flight.
MAX_CONNECTIONS = 256
# Changes the leader keeps for followers; one further behind gets a full snapshot instead.
CHANGE_LOG_MAX = 10_000
# How often a follower fetches the leader's changes: its reads are at most this stale.
SYNC_INTERVAL = 1.0
_RECV_BYTES = 65536
# Requests are small (the largest is a network.create with labels); only answers carry snapshots,
# so a peer cannot make the manager buffer more than this per connection.
MAX_REQUEST_BYTES = 1 << 16

# What a worker's credential may do: what its agent needs to attach containers, and leave.
WORKER_OPS = frozenset({"state.snapshot", "ip.allocate", "ip.release", "leave"})
# Requests that change the state: followers forward these to the leader.
WRITE_OPS = frozenset(
    {
        "leave",
        "node.update",
        "node.promote",
        "node.demote",
        "node.rm",
        "network.create",
        "network.rm",
        "ip.allocate",
        "ip.release",
        "ip.release_node",
        "join.admit",
    }
)
# Read requests that only the leader can answer (it alone has the change log).
LEADER_OPS = frozenset({"replica.fetch"})

NodeStatus = Callable[[str], str]


@dataclass(frozen=True)
class InitResult:
    node_id: str
    credential: bytes
    worker_token: str
    manager_token: str
    gossip_key: bytes
    manager_addr: str
    cluster_id: str

    def as_join_result(self) -> JoinResult:
        """What the leader keeps about itself, in the same shape a joined node keeps."""
        return JoinResult(
            node_id=self.node_id,
            credential=self.credential,
            role=Role.MANAGER,
            cluster_id=self.cluster_id,
            managers=(self.manager_addr,),
            peers=(),
            gossip_key=self.gossip_key,
        )


def init_swarm(
    store: ClusterStore,
    *,
    hostname: str,
    advertise_addr: str,
    port: int = MANAGER_PORT,
    now: float | None = None,
    rand: RandomBytes = secrets.token_bytes,
) -> InitResult:
    """`swarm init`: create the swarm in `store` with this host as its leader."""
    state = store.load()
    node = state.init(
        hostname=hostname,
        addr=advertise_addr,
        now=time.time() if now is None else now,
        rand=rand,
        manager_port=port,
    )
    store.save(state)
    cluster = state.require_cluster()
    return InitResult(
        node_id=node.id,
        credential=state.credentials[node.id],
        worker_token=cluster.token(Role.WORKER),
        manager_token=cluster.token(Role.MANAGER),
        gossip_key=bytes.fromhex(cluster.gossip_key),
        manager_addr=str(node.manager_addr),
        cluster_id=cluster.id,
    )


def _arg(args: dict[str, Any], name: str) -> str:
    value = args.get(name)
    if not isinstance(value, str) or not value:
        raise ClusterError(ErrorKind.INVALID, f"missing argument {name!r}")
    return value


def _opt(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is not None and not isinstance(value, str):
        raise ClusterError(ErrorKind.INVALID, f"argument {name!r} must be a string")
    return value


def _flag(args: dict[str, Any], name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise ClusterError(ErrorKind.INVALID, f"argument {name!r} must be true or false")
    return value


class ManagerServer:
    """The cluster management server of one manager node."""

    def __init__(
        self,
        store: ClusterStore,
        advertise_addr: str,
        port: int = MANAGER_PORT,
        *,
        node_status: NodeStatus | None = None,
        upstream: ManagerClient | None = None,
        clock: Callable[[], float] = time.time,
        rand: RandomBytes = secrets.token_bytes,
        sync_interval: float = SYNC_INTERVAL,
    ) -> None:
        """`upstream` makes this a follower: the leader's client with this node's credential."""
        self.store = store
        self.state = store.load()
        self.advertise_addr = advertise_addr
        self.port = port
        self.upstream = upstream
        self.stats: Counter[str] = Counter()
        self._node_status = node_status
        self._clock = clock
        self._rand = rand
        self._sync_interval = sync_interval
        self._guard = ReplayGuard()
        self._keys: dict[tuple[str, bytes], bytes] = {}
        self._log: deque[Change] = deque(maxlen=CHANGE_LOG_MAX)
        self._log_start = self.state.index
        self._open = 0
        self._sync_lock = trio.Lock()

    @property
    def is_leader(self) -> bool:
        return self.upstream is None

    # ----- serving -----

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started` gets the bound port (for port 0)."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.advertise_addr)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            if self.upstream is not None:
                nursery.start_soon(self._sync_loop)
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started(self.port)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        if self._open >= MAX_CONNECTIONS:
            self.stats["connections_refused"] += 1
            await stream.aclose()
            return
        self._open += 1
        try:
            await self._converse(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.stats["connection_errors"] += 1
        finally:
            self._open -= 1
            await stream.aclose()

    async def _converse(self, stream: trio.SocketStream) -> None:
        decoder = FrameDecoder(MAX_REQUEST_BYTES)
        while True:
            data = b""
            with trio.move_on_after(IDLE_TIMEOUT) as idle:
                data = await stream.receive_some(_RECV_BYTES)
            if idle.cancelled_caught:
                self.stats["idle_closed"] += 1
                return
            if not data:
                return
            decoder.receive_data(data)
            try:
                while (frame := decoder.next_frame()) is not None:
                    reply, keep_open = await self._answer(frame)
                    await stream.send_all(reply)
                    if not keep_open:
                        return
            except MalformedFrame as e:
                self.stats["malformed"] += 1
                await stream.send_all(
                    protocol.encode_error(ErrorKind.INVALID, f"malformed frame: {e}")
                )
                return

    async def _answer(self, frame: Frame) -> tuple[bytes, bool]:
        """The reply to one frame, and whether the connection may carry more."""
        try:
            if frame.kind is FrameKind.JOIN:
                return await self._answer_join(frame), True
            if frame.kind is FrameKind.REQUEST:
                return await self._answer_request(frame), True
            raise MalformedFrame(f"a manager does not accept {frame.kind.name} frames")
        except AuthenticationFailed as e:
            self.stats["auth_failed"] += 1
            return protocol.encode_error(ErrorKind.FORBIDDEN, str(e)), False
        except StaleFrame as e:
            self.stats["stale"] += 1
            return protocol.encode_error(ErrorKind.FORBIDDEN, str(e)), False
        except ClusterError as e:
            # Only refusals before a key is known get here; they go back in clear.
            self.stats["refused_unauthenticated"] += 1
            return protocol.encode_error(e.kind, e.message), False

    async def _answer_join(self, frame: Frame) -> bytes:
        cluster = self.state.cluster
        if cluster is None:
            raise ClusterError(ErrorKind.UNAVAILABLE, self._not_ready())
        if frame.sender != cluster.digest:
            self.stats["join_wrong_swarm"] += 1
            raise ClusterError(
                ErrorKind.INVALID, "invalid join token: it belongs to a different swarm"
            )
        for role in (Role.WORKER, Role.MANAGER):
            key = protocol.derive_join_key(cluster.digest, cluster.secret_for(role))
            try:
                msg = protocol.open_sealed(frame, key, now=self._clock(), guard=self._guard)
            except AuthenticationFailed:
                continue
            break
        else:
            self.stats["join_bad_secret"] += 1
            raise ClusterError(
                ErrorKind.INVALID,
                "invalid join token: its secret matches neither this swarm's worker nor its "
                "manager token (print the current one with `swarm join-token worker`)",
            )
        request = protocol.request_from(msg)
        try:
            if request.op != "join":
                raise ClusterError(ErrorKind.INVALID, f"a join frame cannot carry {request.op}")
            args = {**request.args, "role": role.value}
            if self.upstream is not None:
                result = await self._forward("join.admit", None, args)
            else:
                result = self._admit(args)
            self.stats["joined"] += 1
            return protocol.seal_result(
                key, request.rid, result, now=self._clock(), rand=self._rand
            )
        except ClusterError as e:
            return protocol.seal_refusal(key, request.rid, e, now=self._clock(), rand=self._rand)

    async def _answer_request(self, frame: Frame) -> bytes:
        node_id = frame.sender
        credential = self.state.credentials.get(node_id)
        if credential is None and self.upstream is not None:
            # A node that joined through the leader a moment ago: this copy may lag behind.
            with contextlib.suppress(ClusterError):
                await self.sync_once()
            credential = self.state.credentials.get(node_id)
        if credential is None:
            self.stats["unknown_node"] += 1
            raise ClusterError(
                ErrorKind.FORBIDDEN,
                f"node {node_id} is not a member of this swarm (was it removed?): "
                "run `swarm leave --force` on it and join again",
            )
        key = self._node_key(node_id, credential)
        msg = protocol.open_sealed(frame, key, now=self._clock(), guard=self._guard)
        request = protocol.request_from(msg)
        try:
            result = await self.call_local(node_id, request.op, **request.args)
            self.stats["requests"] += 1
            return protocol.seal_result(
                key, request.rid, result, now=self._clock(), rand=self._rand
            )
        except ClusterError as e:
            self.stats["refusals"] += 1
            return protocol.seal_refusal(key, request.rid, e, now=self._clock(), rand=self._rand)

    def _node_key(self, node_id: str, credential: bytes) -> bytes:
        key = self._keys.get((node_id, credential))
        if key is None:
            if len(self._keys) > 4 * MAX_CONNECTIONS:
                self._keys.clear()
            key = self._keys[(node_id, credential)] = protocol.derive_node_key(credential, node_id)
        return key

    # ----- requests -----

    async def call_local(self, node_id: str, op: str, **args: Any) -> Any:
        """Run `op` as node `node_id` (the local agent's path, and every remote request's)."""
        try:
            return await self._dispatch(node_id, op, args)
        except ClusterError:
            raise
        except Exception as e:
            # A bug must cost one request, never the server.
            self.stats["internal_errors"] += 1
            log.exception("cluster request %s failed", op)
            raise ClusterError(ErrorKind.UNAVAILABLE, f"internal error in {op}: {e}") from None

    async def _dispatch(self, node_id: str, op: str, args: dict[str, Any]) -> Any:
        handler = _HANDLERS.get(op)
        if handler is None:
            raise ClusterError(ErrorKind.INVALID, f"unknown cluster operation {op!r}")
        if self.state.cluster is None:
            raise ClusterError(ErrorKind.UNAVAILABLE, self._not_ready())
        caller = self.state.nodes.get(node_id)
        if caller is None:
            raise ClusterError(ErrorKind.FORBIDDEN, f"node {node_id} is not in the swarm")
        acting = caller
        on_behalf = args.pop("_as", None)
        if on_behalf is not None:
            # A follower forwarding a write: managers may act for the node that asked them.
            if caller.role is not Role.MANAGER:
                raise ClusterError(ErrorKind.FORBIDDEN, "only managers may forward requests")
            acting = self.state.nodes.get(str(on_behalf)) or caller
            if str(on_behalf) not in self.state.nodes:
                raise ClusterError(ErrorKind.NOT_FOUND, f"node {on_behalf} is not in the swarm")
        if acting.role is not Role.MANAGER and op not in WORKER_OPS:
            raise ClusterError(ErrorKind.FORBIDDEN, self._worker_refusal(acting, op))
        if self.upstream is not None and (op in WRITE_OPS or op in LEADER_OPS):
            return await self._forward(op, acting.id, args)
        result = handler(self, acting, args)
        self._persist()
        return result

    def _worker_refusal(self, node: Node, op: str) -> str:
        managers = self.state.managers()
        where = f"{managers[0].hostname} at {managers[0].manager_addr}" if managers else "a manager"
        return (
            f"{node.hostname} is a worker node and {op} needs a swarm manager: "
            f"run it against {where}, or promote this node with `node promote` on a manager"
        )

    def _not_ready(self) -> str:
        if self.upstream is not None:
            return "this manager has not copied the swarm state from its leader yet: retry"
        return "this node is not a swarm manager"

    def _persist(self) -> None:
        changes = self.state.take_changes()
        if not changes:
            return
        try:
            self.store.apply(changes, self.state.index)
        except Exception:
            # Memory must not run ahead of the disk: go back to what was committed.
            self.state = self.store.load()
            self._log.clear()
            self._log_start = self.state.index
            raise
        if len(self._log) + len(changes) > CHANGE_LOG_MAX:
            self._log_start += len(self._log) + len(changes) - CHANGE_LOG_MAX
        self._log.extend(changes)

    async def _forward(self, op: str, node_id: str | None, args: dict[str, Any]) -> Any:
        assert self.upstream is not None
        extra = {} if node_id is None else {"_as": node_id}
        try:
            result = await self.upstream.call(op, **args, **extra)
        except ClusterError as e:
            if e.kind is ErrorKind.UNAVAILABLE:
                raise ClusterError(
                    ErrorKind.UNAVAILABLE,
                    f"the swarm's leader is unreachable, so {op} cannot be done now "
                    f"(overlaynet has no leader election): {e.message}",
                ) from None
            raise
        # Read your own writes: copy the leader's change before answering.
        await self.sync_once()
        return result

    # ----- followers -----

    async def _sync_loop(self) -> None:
        while True:
            try:
                await self.sync_once()
            except ClusterError as e:
                self.stats["sync_failed"] += 1
                log.debug("sync with the leader failed: %s", e)
            await trio.sleep(self._sync_interval)

    async def sync_once(self) -> None:
        """Fetch and apply the leader's changes since this copy's index."""
        assert self.upstream is not None
        # The sync loop and a forwarded write may both fetch: one at a time, or the same changes
        # would be applied twice.
        async with self._sync_lock:
            await self._fetch_and_apply(self.upstream)

    async def _fetch_and_apply(self, upstream: ManagerClient) -> None:
        reply = await upstream.call("replica.fetch", since=self.state.index)
        if "snapshot" in reply:
            records = [Change(c[0], c[1], c[2]) for c in reply["snapshot"]]
            self.store.replace(records, int(reply["index"]))
            self.state = ClusterState.from_records(records, int(reply["index"]))
            self.stats["sync_snapshots"] += 1
            return
        changes = [Change(c[0], c[1], c[2]) for c in reply["changes"]]
        if not changes:
            return
        for change in changes:
            self.state.apply(change)
        self.store.apply(changes, self.state.index)
        self.stats["sync_changes"] += len(changes)

    # ----- views -----

    def status_of(self, node: Node) -> str:
        """Ready/Down from gossip (via node_status), Unknown without it."""
        return "Unknown" if self._node_status is None else self._node_status(node.id)

    def node_view(self, node: Node, caller: Node) -> dict[str, Any]:
        status = self.status_of(node)
        manager_status = node.manager_status.value if node.manager_status else ""
        if manager_status and status == "Down":
            manager_status = "Unreachable"
        return {
            **node_doc(node),
            "status": status,
            "manager_status": manager_status,
            "self": node.id == caller.id,
        }

    def _network_view(self, net_ref: str) -> dict[str, Any]:
        network = self.state.find_network(net_ref)
        endpoints = [
            {"endpoint_id": a.endpoint_id, "ip": a.ip, "node_id": a.node_id}
            for a in self.state.allocations_on(network.id)
        ]
        return {**network_doc(network), "endpoints": endpoints}

    # ----- handlers: (server, acting node, args) -> JSON-able result -----

    def _admit(self, args: dict[str, Any]) -> dict[str, Any]:
        role = Role(_arg(args, "role"))
        existing_peers = [n.addr for n in self.state.nodes.values()]
        node, credential = self.state.join_node(
            hostname=_arg(args, "hostname"),
            addr=_arg(args, "addr"),
            role=role,
            now=self._clock(),
            rand=self._rand,
        )
        self._persist()
        cluster = self.state.require_cluster()
        return {
            "node_id": node.id,
            "credential": credential.hex(),
            "role": role.value,
            "cluster_id": cluster.id,
            "managers": [str(m.manager_addr) for m in self.state.managers()],
            "peers": existing_peers,
            "gossip_key": cluster.gossip_key,
        }

    def _h_join_admit(self, acting: Node, args: dict[str, Any]) -> Any:
        return self._admit(args)

    def _h_leave(self, acting: Node, args: dict[str, Any]) -> Any:
        node = self.state.remove_node(acting.id, force=_flag(args, "force"))
        return {"node_id": node.id}

    def _h_node_ls(self, acting: Node, args: dict[str, Any]) -> Any:
        nodes = sorted(self.state.nodes.values(), key=lambda n: (n.hostname, n.id))
        return [self.node_view(n, acting) for n in nodes]

    def _h_node_inspect(self, acting: Node, args: dict[str, Any]) -> Any:
        return self.node_view(self.state.find_node(_arg(args, "node")), acting)

    def _h_node_update(self, acting: Node, args: dict[str, Any]) -> Any:
        node = self.state.update_node(
            _arg(args, "node"), now=self._clock(), availability=_opt(args, "availability")
        )
        return self.node_view(node, acting)

    def _h_node_promote(self, acting: Node, args: dict[str, Any]) -> Any:
        return self.node_view(self.state.promote(_arg(args, "node"), now=self._clock()), acting)

    def _h_node_demote(self, acting: Node, args: dict[str, Any]) -> Any:
        return self.node_view(self.state.demote(_arg(args, "node"), now=self._clock()), acting)

    def _h_node_rm(self, acting: Node, args: dict[str, Any]) -> Any:
        force = _flag(args, "force")
        node = self.state.find_node(_arg(args, "node"))
        if not force and self.status_of(node) == "Ready":
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"node {node.hostname} is not down and can't be removed: "
                "run `swarm leave` on it, or use --force",
            )
        return {"node_id": self.state.remove_node(node.id, force=force).id}

    def _h_network_create(self, acting: Node, args: dict[str, Any]) -> Any:
        labels = args.get("labels") or {}
        vni = args.get("vni")
        if not isinstance(labels, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
        ):
            raise ClusterError(ErrorKind.INVALID, "labels must map strings to strings")
        if vni is not None and (not isinstance(vni, int) or isinstance(vni, bool)):
            raise ClusterError(ErrorKind.INVALID, "vni must be an integer")
        network = self.state.create_network(
            _arg(args, "name"),
            now=self._clock(),
            rand=self._rand,
            subnet=_opt(args, "subnet"),
            gateway=_opt(args, "gateway"),
            attachable=_flag(args, "attachable"),
            labels=labels,
            vni=vni,
        )
        return network_doc(network)

    def _h_network_rm(self, acting: Node, args: dict[str, Any]) -> Any:
        return network_doc(self.state.remove_network(_arg(args, "network")))

    def _h_network_ls(self, acting: Node, args: dict[str, Any]) -> Any:
        nets = sorted(self.state.networks.values(), key=lambda n: (n.name, n.id))
        return [network_doc(n) for n in nets]

    def _h_network_inspect(self, acting: Node, args: dict[str, Any]) -> Any:
        return self._network_view(_arg(args, "network"))

    def _h_ip_allocate(self, acting: Node, args: dict[str, Any]) -> Any:
        alloc = self.state.allocate_address(
            _arg(args, "network"), _arg(args, "endpoint_id"), acting.id, _opt(args, "ip")
        )
        return allocation_doc(alloc, self.state.networks[alloc.network_id])

    def _h_ip_release(self, acting: Node, args: dict[str, Any]) -> Any:
        # Workers release only their own endpoints; managers may clean up anyone's.
        owner = None if acting.role is Role.MANAGER else acting.id
        alloc = self.state.release_address(_arg(args, "network"), _arg(args, "endpoint_id"), owner)
        return {"released": alloc is not None, "ip": None if alloc is None else alloc.ip}

    def _h_ip_release_node(self, acting: Node, args: dict[str, Any]) -> Any:
        return {"released": len(self.state.release_node(_arg(args, "node")))}

    def _h_state_snapshot(self, acting: Node, args: dict[str, Any]) -> Any:
        nets = sorted(self.state.networks.values(), key=lambda n: (n.name, n.id))
        mine = [
            allocation_doc(a, self.state.networks[a.network_id])
            for a in self.state.allocations_of_node(acting.id)
        ]
        return {
            "cluster_id": self.state.require_cluster().id,
            "index": self.state.index,
            "node": self.node_view(acting, acting),
            "managers": [str(m.manager_addr) for m in self.state.managers()],
            "networks": [network_doc(n) for n in nets],
            "allocations": mine,
        }

    def _h_join_token(self, acting: Node, args: dict[str, Any]) -> Any:
        try:
            role = Role(_arg(args, "role"))
        except ValueError:
            raise ClusterError(ErrorKind.INVALID, "join-token takes worker or manager") from None
        leader = self.state.leader
        return {
            "role": role.value,
            "token": self.state.require_cluster().token(role),
            "manager_addr": leader.manager_addr if leader else None,
        }

    def _h_replica_fetch(self, acting: Node, args: dict[str, Any]) -> Any:
        since = args.get("since")
        if not isinstance(since, int) or isinstance(since, bool):
            raise ClusterError(ErrorKind.INVALID, "replica.fetch needs an integer since")
        index = self.state.index
        if self._log_start <= since <= index:
            changes = list(self._log)[since - self._log_start :]
            return {"index": index, "changes": [[c.kind, c.key, c.doc] for c in changes]}
        records = self.state.records()
        return {"index": index, "snapshot": [[c.kind, c.key, c.doc] for c in records]}


_Handler = Callable[[ManagerServer, Node, dict[str, Any]], Any]
_HANDLERS: dict[str, _Handler] = {
    "join.admit": ManagerServer._h_join_admit,
    "leave": ManagerServer._h_leave,
    "node.ls": ManagerServer._h_node_ls,
    "node.inspect": ManagerServer._h_node_inspect,
    "node.update": ManagerServer._h_node_update,
    "node.promote": ManagerServer._h_node_promote,
    "node.demote": ManagerServer._h_node_demote,
    "node.rm": ManagerServer._h_node_rm,
    "network.create": ManagerServer._h_network_create,
    "network.rm": ManagerServer._h_network_rm,
    "network.ls": ManagerServer._h_network_ls,
    "network.inspect": ManagerServer._h_network_inspect,
    "ip.allocate": ManagerServer._h_ip_allocate,
    "ip.release": ManagerServer._h_ip_release,
    "ip.release_node": ManagerServer._h_ip_release_node,
    "state.snapshot": ManagerServer._h_state_snapshot,
    "join_token": ManagerServer._h_join_token,
    "replica.fetch": ManagerServer._h_replica_fetch,
}
