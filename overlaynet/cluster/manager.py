"""A swarm manager (trio): serves cluster management on tcp/2377 from the persisted state.

One leader holds the state: the node that ran `swarm init`. Every write is one synchronous step
on it (state command, then one SQLite commit, then the answer), so two clients can never be handed
the same address. A promoted manager is a follower: it copies the leader's state by fetching its
change log every second, answers reads from the copy and forwards writes to the leader.

Services: the leader runs one orchestration pass (ClusterState.orchestrate: reconcile, task
addresses, placement, releases) after every write, every worker report and every
ORCHESTRATE_INTERVAL (or at once on `kick()`), with gossip's Ready/Down from `node_status`; its
changes are persisted and replicated like any command's. Followers never run passes.

There is no leader election. When the leader's host dies, followers keep answering reads (and
workers keep using the networks and addresses they have), but joins and writes fail with a clear
"leader unreachable" error until the leader comes back; its state is on its disk.

Hostile peers: a connection must deliver each whole frame by a deadline (not per byte), one
address holds at most MAX_PER_SOURCE connections, and AUTH_RESERVE slots are kept for addresses
that have authenticated (or are nodes'). Sealed frames name the manager they are for; the leader
runs each write once per (node, request id) and remembers the answer in its store, so retries
and replays, even after a restart, change nothing. Every rejection is counted by `Rejection`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import trio

from overlaynet.cluster import protocol, service_views
from overlaynet.cluster.client import JoinResult, ManagerClient
from overlaynet.cluster.protocol import (
    AuthenticationFailed,
    Frame,
    FrameDecoder,
    FrameKind,
    MalformedFrame,
    MisdirectedFrame,
    ReplayedFrame,
    ReplayGuard,
    StaleFrame,
)
from overlaynet.cluster.services import (
    RestartPolicy,
    ServiceSpec,
    parse_constraint,
    parse_publish,
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
from overlaynet.cluster.store import Answered, ClusterStore
from overlaynet.cluster.tasks import TaskStateError
from overlaynet.cluster.tokens import RandomBytes

log = logging.getLogger(__name__)

# Open connections at once: a swarm has tens of nodes, each with at most a few requests in flight.
MAX_CONNECTIONS = 256
# Slots only sources that have authenticated (or are nodes' addresses) may take, so that a flood
# of strangers leaves the swarm's own nodes a way in: a quarter, as nginx's and HAProxy's
# examples keep a share of workers for trusted clients.
AUTH_RESERVE = 64
# Connections from one source address at once. A node runs a handful of requests in parallel and
# a follower forwards its workers' writes, so 32 is generous; a stranger needs many addresses to
# take the unauthenticated slots (256 - 64 = 192 = 6 addresses' worth).
MAX_PER_SOURCE = 32
# A client sends its whole request right after connecting (one frame of at most 64 KiB on a
# LAN): the first frame must be complete this long after the connection is accepted. A deadline
# for the frame, not per byte, so a byte every few seconds does not keep a slot (slowloris;
# Apache's mod_reqtimeout works the same way).
FIRST_FRAME_TIMEOUT = 5.0
# Any later frame on the same connection must be complete this long after the previous answer.
IDLE_TIMEOUT = 10.0
# Source addresses remembered as having authenticated (for AUTH_RESERVE); the oldest go first.
TRUSTED_SOURCES_MAX = 4096
# Changes the leader keeps for followers; one further behind gets a full snapshot instead.
CHANGE_LOG_MAX = 10_000
# How often a follower fetches the leader's changes: its reads are at most this stale.
SYNC_INTERVAL = 1.0
_RECV_BYTES = 65536
# Requests are small (the largest is a network.create with labels); only answers carry snapshots,
# so a peer cannot make the manager buffer more than this per connection.
MAX_REQUEST_BYTES = 1 << 16
# How long the answer to a write is remembered by (sender, request id). A frame is accepted for
# MAX_CLOCK_SKEW either side of its timestamp, so after twice that its request id cannot arrive
# again, not even replayed.
REQUEST_MEMORY = 2 * protocol.MAX_CLOCK_SKEW

# The leader runs an orchestration pass after every write and every worker report, and also this
# often: gossip's Down (and Ready again) reaches the managers only through node_status, so a Down
# node's tasks move at most this long after gossip's dead time (sooner when the agent calls
# `kick`). A pass that finds nothing to do writes nothing.
ORCHESTRATE_INTERVAL = 1.0
# Arguments `service.create` takes (any other is refused, so a typo is not silently ignored).
SERVICE_CREATE_ARGS = frozenset(
    {
        "name",
        "image",
        "command",
        "env",
        "replicas",
        "mode",
        "networks",
        "endpoint_mode",
        "publish",
        "constraints",
        "restart_condition",
        "restart_delay",
        "restart_max_attempts",
    }
)

# What a worker's credential may do: what its agent needs to attach containers and run its
# service tasks, and leave.
WORKER_OPS = frozenset(
    {"state.snapshot", "ip.allocate", "ip.release", "leave", "task.report", "task.assigned"}
)
# Requests that change the state: followers forward these to the leader, which runs each request
# id once.
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
        "join.admit",
        "gossip.rotate",
        "gossip.retire",
        "service.create",
        "service.scale",
        "service.rm",
        "task.report",
    }
)
# Read requests that only the leader can answer (it alone has the change log).
LEADER_OPS = frozenset({"replica.fetch"})


class Rejection(StrEnum):
    """Why a manager turned a peer or a request away; each is a counter `rejected_<reason>`."""

    BAD_TOKEN = "bad_token"  # a join under a wrong secret or another swarm's token
    AUTH_FAILED = "auth_failed"  # a sealed frame that does not open under its sender's key
    UNKNOWN_NODE = "unknown_node"  # not a member (never joined, left, or removed: revoked)
    STALE = "stale"  # timestamp outside the clock window
    REPLAY = "replay"  # a nonce already accepted
    MISDIRECTED = "misdirected"  # sealed for another manager
    MALFORMED = "malformed"  # not a frame, or a frame that breaks the protocol
    REFUSED = "refused"  # an authenticated request the cluster state refused
    OVER_CAP_TOTAL = "over_cap_total"  # MAX_CONNECTIONS reached
    OVER_CAP_SOURCE = "over_cap_source"  # MAX_PER_SOURCE reached for that address
    OVER_CAP_UNAUTHENTICATED = "over_cap_unauthenticated"  # only AUTH_RESERVE slots were left
    FIRST_FRAME_TIMEOUT = "first_frame_timeout"  # no whole frame within FIRST_FRAME_TIMEOUT
    IDLE_TIMEOUT = "idle_timeout"  # no further frame within IDLE_TIMEOUT


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
    ingress_subnet: str | None = None,
) -> InitResult:
    """`swarm init [--ingress-subnet CIDR]`: create the swarm in `store` with this host as its
    leader."""
    state = store.load()
    node = state.init(
        hostname=hostname,
        addr=advertise_addr,
        now=time.time() if now is None else now,
        rand=rand,
        manager_port=port,
        ingress_subnet=ingress_subnet,
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


def _int(args: dict[str, Any], name: str) -> int | None:
    """An optional integer; JSON's true/false and 1.0 are not integers here."""
    value = args.get(name)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise ClusterError(ErrorKind.INVALID, f"argument {name!r} must be an integer")
    return value


def _str_map(args: dict[str, Any], name: str) -> dict[str, str]:
    """An optional object of strings to strings (labels); absent is empty, anything else is an
    error (never `or {}`: a 0, "" or [] is a mistake to report, not an empty map)."""
    value = args.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ClusterError(ErrorKind.INVALID, f"argument {name!r} must map strings to strings")
    return value


def _str_list(args: dict[str, Any], name: str) -> list[str]:
    """An optional list of strings; absent is empty, anything else (a lone string too) is an
    error."""
    value = args.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ClusterError(ErrorKind.INVALID, f"argument {name!r} must be a list of strings")
    return value


def _number(args: dict[str, Any], name: str) -> float | None:
    """An optional number of seconds (an integer or a float, never true/false)."""
    value = args.get(name)
    if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
        raise ClusterError(ErrorKind.INVALID, f"argument {name!r} must be a number")
    return None if value is None else float(value)


def spec_from_args(args: dict[str, Any]) -> ServiceSpec:
    """A `service.create` request's arguments as a validated spec (ClusterError if not)."""
    unknown = sorted(set(args) - SERVICE_CREATE_ARGS)
    if unknown:
        raise ClusterError(ErrorKind.INVALID, f"unknown argument {unknown[0]!r} for service.create")
    restart: dict[str, Any] = {}
    condition = _opt(args, "restart_condition")
    if condition is not None:
        restart["condition"] = condition
    delay = _number(args, "restart_delay")
    if delay is not None:
        restart["delay"] = delay
    attempts = _int(args, "restart_max_attempts")
    if attempts is not None:
        restart["max_attempts"] = attempts
    fields: dict[str, Any] = {
        "name": _arg(args, "name"),
        "image": _arg(args, "image"),
        "command": tuple(_str_list(args, "command")),
        "env": tuple(_str_list(args, "env")),
        "replicas": _int(args, "replicas"),
        "networks": tuple(_str_list(args, "networks")),
        "ports": tuple(parse_publish(p) for p in _str_list(args, "publish")),
        "constraints": tuple(parse_constraint(c) for c in _str_list(args, "constraints")),
        "restart": RestartPolicy(**restart),
    }
    for name in ("mode", "endpoint_mode"):
        value = _opt(args, name)
        if value is not None:
            fields[name] = value
    return ServiceSpec(**fields)


def _role(args: dict[str, Any]) -> Role:
    try:
        return Role(_arg(args, "role"))
    except ValueError:
        raise ClusterError(ErrorKind.INVALID, "role must be worker or manager") from None


def _is_write(op: str, args: dict[str, Any]) -> bool:
    return op in WRITE_OPS or (op == "join_token" and args.get("rotate") is True)


def _refusal_doc(e: ClusterError) -> dict[str, Any]:
    return {"kind": e.kind.value, "error": e.message}


class _Turnaway(ClusterError):
    """A refusal before the peer is known: answered in clear and counted under `reason`."""

    def __init__(self, reason: Rejection, kind: ErrorKind, message: str) -> None:
        super().__init__(kind, message)
        self.reason = reason


@dataclass
class _Connection:
    source: str
    # "ip:port" this connection reached: a sealed frame must be addressed to it.
    local: str
    # From an address that authenticated before (or a node's): it may use AUTH_RESERVE slots.
    trusted: bool = field(default=False)


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
        self._unauthenticated = 0
        self._per_source: Counter[str] = Counter()
        self._trusted_sources: OrderedDict[str, None] = OrderedDict()
        self._sync_lock = trio.Lock()
        self._kick = trio.Event()

    @property
    def is_leader(self) -> bool:
        return self.upstream is None

    def rejections(self) -> dict[str, int]:
        """Every rejection reason with its count, zeros included (for the agent's `info`)."""
        return {r.value: self.stats[f"rejected_{r.value}"] for r in Rejection}

    def connections(self) -> dict[str, int]:
        return {"open": self._open, "unauthenticated": self._unauthenticated}

    def _reject(self, reason: Rejection) -> None:
        self.stats[f"rejected_{reason.value}"] += 1

    # ----- serving -----

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; `task_status.started` gets the bound port (for port 0)."""
        listeners = await trio.open_tcp_listeners(self.port, host=self.advertise_addr)
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            if self.upstream is not None:
                nursery.start_soon(self._sync_loop)
            else:
                nursery.start_soon(self._orchestrate_loop)
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started(self.port)

    def _is_trusted(self, source: str) -> bool:
        if source in self._trusted_sources:
            return True
        return any(n.addr == source for n in self.state.nodes.values())

    def _trust(self, conn: _Connection) -> None:
        """The connection's peer authenticated: its address may use the reserve from now on."""
        self._trusted_sources[conn.source] = None
        self._trusted_sources.move_to_end(conn.source)
        while len(self._trusted_sources) > TRUSTED_SOURCES_MAX:
            self._trusted_sources.popitem(last=False)
        if not conn.trusted:
            conn.trusted = True
            self._unauthenticated -= 1

    def _over_cap(self, source: str, trusted: bool) -> Rejection | None:
        if self._open >= MAX_CONNECTIONS:
            return Rejection.OVER_CAP_TOTAL
        if self._per_source[source] >= MAX_PER_SOURCE:
            return Rejection.OVER_CAP_SOURCE
        if not trusted and self._unauthenticated >= MAX_CONNECTIONS - AUTH_RESERVE:
            return Rejection.OVER_CAP_UNAUTHENTICATED
        return None

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        try:
            source = str(stream.socket.getpeername()[0])
            local = protocol.peer_name(stream.socket.getsockname())
        except OSError:
            self.stats["connection_errors"] += 1
            await stream.aclose()
            return
        conn = _Connection(source, local, self._is_trusted(source))
        reason = self._over_cap(source, conn.trusted)
        if reason is not None:
            self._reject(reason)
            # One small clear frame into an empty send buffer: it never blocks for long, and a
            # client moves on to its next manager instead of guessing.
            with trio.move_on_after(1.0), contextlib.suppress(trio.BrokenResourceError, OSError):
                await stream.send_all(
                    protocol.encode_error(
                        ErrorKind.UNAVAILABLE, f"this manager is at its connection limit ({reason})"
                    )
                )
            await stream.aclose()
            return
        self.stats["accepted"] += 1
        self._open += 1
        self._per_source[source] += 1
        if not conn.trusted:
            self._unauthenticated += 1
        try:
            await self._converse(stream, conn)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.stats["connection_errors"] += 1
        except Exception:
            # One peer's connection may end, never the server (serve_listeners would re-raise).
            self.stats["internal_errors"] += 1
            log.exception("cluster connection from %s failed", source)
        finally:
            self._open -= 1
            self._per_source[source] -= 1
            if self._per_source[source] <= 0:
                del self._per_source[source]
            if not conn.trusted:
                self._unauthenticated -= 1
            await stream.aclose()

    async def _converse(self, stream: trio.SocketStream, conn: _Connection) -> None:
        decoder = FrameDecoder(MAX_REQUEST_BYTES)
        first = True
        while True:
            frame: Frame | None = None
            try:
                # A deadline for the whole frame: trickling bytes does not extend it.
                with trio.move_on_after(FIRST_FRAME_TIMEOUT if first else IDLE_TIMEOUT) as wait:
                    frame = await self._next_frame(stream, decoder)
            except MalformedFrame as e:
                self._reject(Rejection.MALFORMED)
                await stream.send_all(
                    protocol.encode_error(ErrorKind.INVALID, f"malformed frame: {e}")
                )
                return
            if wait.cancelled_caught:
                self._reject(Rejection.FIRST_FRAME_TIMEOUT if first else Rejection.IDLE_TIMEOUT)
                return
            if frame is None:
                return
            first = False
            reply, keep_open = await self._answer(frame, conn)
            # A peer that does not read its answer does not hold the slot for ever either.
            with trio.move_on_after(IDLE_TIMEOUT) as sending:
                await stream.send_all(reply)
            if sending.cancelled_caught:
                self.stats["send_timeout"] += 1
                return
            if not keep_open:
                return

    @staticmethod
    async def _next_frame(stream: trio.SocketStream, decoder: FrameDecoder) -> Frame | None:
        """The next whole frame, or None at the end of the stream."""
        while (frame := decoder.next_frame()) is None:
            data = await stream.receive_some(_RECV_BYTES)
            if not data:
                return None
            decoder.receive_data(data)
        return frame

    def _addresses(self, conn: _Connection) -> set[str]:
        """What a frame for this manager may say in `to`: its advertised and its socket's."""
        return {f"{self.advertise_addr}:{self.port}", conn.local}

    async def _answer(self, frame: Frame, conn: _Connection) -> tuple[bytes, bool]:
        """The reply to one frame, and whether the connection may carry more."""
        try:
            if frame.kind is FrameKind.JOIN:
                return await self._answer_join(frame, conn), True
            if frame.kind is FrameKind.REQUEST:
                return await self._answer_request(frame, conn), True
            raise MalformedFrame(f"a manager does not accept {frame.kind.name} frames")
        except _Turnaway as e:
            self._reject(e.reason)
            return protocol.encode_error(e.kind, e.message), False
        except ClusterError as e:
            # Only refusals before a key is known get here; they go back in clear.
            self._reject(Rejection.REFUSED)
            return protocol.encode_error(e.kind, e.message), False
        except MisdirectedFrame as e:
            self._reject(Rejection.MISDIRECTED)
            return protocol.encode_error(ErrorKind.FORBIDDEN, str(e)), False
        except AuthenticationFailed as e:
            self._reject(Rejection.AUTH_FAILED)
            return protocol.encode_error(ErrorKind.FORBIDDEN, str(e)), False
        except ReplayedFrame as e:
            self._reject(Rejection.REPLAY)
            return protocol.encode_error(ErrorKind.FORBIDDEN, str(e)), False
        except StaleFrame as e:
            self._reject(Rejection.STALE)
            return protocol.encode_error(ErrorKind.FORBIDDEN, str(e)), False
        except MalformedFrame as e:
            self._reject(Rejection.MALFORMED)
            return protocol.encode_error(ErrorKind.INVALID, f"malformed frame: {e}"), False

    async def _answer_join(self, frame: Frame, conn: _Connection) -> bytes:
        cluster = self.state.cluster
        if cluster is None:
            raise ClusterError(ErrorKind.UNAVAILABLE, self._not_ready())
        if frame.sender != cluster.digest:
            raise _Turnaway(
                Rejection.BAD_TOKEN,
                ErrorKind.INVALID,
                "invalid join token: it belongs to a different swarm",
            )
        for role in (Role.WORKER, Role.MANAGER):
            key = protocol.derive_join_key(cluster.digest, cluster.secret_for(role))
            try:
                msg = protocol.open_sealed(frame, key, now=self._clock(), guard=self._guard)
            except AuthenticationFailed:
                continue
            break
        else:
            raise _Turnaway(
                Rejection.BAD_TOKEN,
                ErrorKind.INVALID,
                "invalid join token: its secret matches neither this swarm's worker nor its "
                "manager token (print the current one with `swarm join-token worker`)",
            )
        request = protocol.request_from(msg)
        protocol.check_recipient(request, self._addresses(conn))
        self._trust(conn)
        try:
            if request.op != "join":
                raise ClusterError(ErrorKind.INVALID, f"a join frame cannot carry {request.op}")
            args = {**request.args, "role": role.value}
            if self.upstream is not None:
                result = await self._forward("join.admit", None, args, request.rid)
            else:
                key_of_request = f"{frame.sender}/{request.rid}"
                result = self._idempotent(key_of_request, lambda: self._admit(args))
                self.orchestrate_now()
            self.stats["joined"] += 1
            return protocol.seal_result(
                key, request.rid, result, now=self._clock(), rand=self._rand
            )
        except ClusterError as e:
            self._reject(Rejection.REFUSED)
            return protocol.seal_refusal(key, request.rid, e, now=self._clock(), rand=self._rand)

    async def _answer_request(self, frame: Frame, conn: _Connection) -> bytes:
        node_id = frame.sender
        credential = self.state.credentials.get(node_id)
        if credential is None and self.upstream is not None:
            # A node that joined through the leader a moment ago: this copy may lag behind.
            with contextlib.suppress(ClusterError):
                await self.sync_once()
            credential = self.state.credentials.get(node_id)
        if credential is None:
            raise _Turnaway(
                Rejection.UNKNOWN_NODE,
                ErrorKind.FORBIDDEN,
                f"node {node_id} is not a member of this swarm (was it removed?): "
                "run `swarm leave --force` on it and join again",
            )
        key = self._node_key(node_id, credential)
        msg = protocol.open_sealed(frame, key, now=self._clock(), guard=self._guard)
        request = protocol.request_from(msg)
        protocol.check_recipient(request, self._addresses(conn))
        self._trust(conn)
        try:
            result = await self._call(node_id, request.op, request.args, request.rid)
            self.stats["requests"] += 1
            return protocol.seal_result(
                key, request.rid, result, now=self._clock(), rand=self._rand
            )
        except ClusterError as e:
            self._reject(Rejection.REFUSED)
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
        """Run `op` as node `node_id` (the local agent's path: nothing to replay, no rid)."""
        return await self._call(node_id, op, args, None)

    async def _call(self, node_id: str, op: str, args: dict[str, Any], rid: str | None) -> Any:
        try:
            return await self._dispatch(node_id, op, dict(args), rid)
        except ClusterError:
            raise
        except Exception as e:
            # A bug must cost one request, never the server.
            self.stats["internal_errors"] += 1
            log.exception("cluster request %s failed", op)
            raise ClusterError(ErrorKind.UNAVAILABLE, f"internal error in {op}: {e}") from None

    async def _dispatch(self, node_id: str, op: str, args: dict[str, Any], rid: str | None) -> Any:
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
            if not isinstance(on_behalf, str):
                raise ClusterError(ErrorKind.INVALID, "argument '_as' must be a node id")
            if on_behalf not in self.state.nodes:
                raise ClusterError(ErrorKind.NOT_FOUND, f"node {on_behalf} is not in the swarm")
            acting = self.state.nodes[on_behalf]
        if acting.role is not Role.MANAGER and op not in WORKER_OPS:
            raise ClusterError(ErrorKind.FORBIDDEN, self._worker_refusal(acting, op))
        write = _is_write(op, args)
        if self.upstream is not None and (write or op in LEADER_OPS):
            return await self._forward(op, acting.id, args, rid)
        # Writes run once per (node, request id): the key is the acting node's, so a write
        # forwarded by a follower and the same request retried here are the same request.
        key = f"{acting.id}/{rid}" if write and rid is not None else None
        result = self._idempotent(key, lambda: handler(self, acting, args))
        if write:
            self.orchestrate_now()
        return result

    def _idempotent(self, key: str | None, run: Callable[[], Any]) -> Any:
        """Run one command unless `key` already ran; persist its changes and its answer."""
        if key is not None:
            seen = self.store.answered(key)
            if seen is not None:
                self.stats["duplicate_requests"] += 1
                if seen.get("ok") is True:
                    return seen.get("result")
                raise ClusterError(str(seen.get("kind")), str(seen.get("error")))
        try:
            result = run()
        except ClusterError as e:
            # The state is as it was; the refusal is remembered too, so that a replay cannot
            # succeed later where the original failed.
            self._persist(self._answer_record(key, {"ok": False, **_refusal_doc(e)}))
            raise
        except Exception:
            self._rollback()
            raise
        self._persist(self._answer_record(key, {"ok": True, "result": result}))
        return result

    def _answer_record(self, key: str | None, doc: dict[str, Any]) -> Answered | None:
        if key is None:
            return None
        now = self._clock()
        return Answered(key, now, doc, forget_before=now - REQUEST_MEMORY)

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

    def _rollback(self) -> None:
        """Memory must not run ahead of the disk: go back to what was committed."""
        self.state = self.store.load()
        self._log.clear()
        self._log_start = self.state.index

    def _persist(self, answered: Answered | None = None) -> None:
        changes = self.state.take_changes()
        if not changes and answered is None:
            return
        try:
            self.store.apply(changes, self.state.index, answered)
        except Exception:
            self._rollback()
            raise
        if len(self._log) + len(changes) > CHANGE_LOG_MAX:
            self._log_start += len(self._log) + len(changes) - CHANGE_LOG_MAX
        self._log.extend(changes)

    async def _forward(
        self, op: str, node_id: str | None, args: dict[str, Any], rid: str | None
    ) -> Any:
        assert self.upstream is not None
        extra = {} if node_id is None else {"_as": node_id}
        try:
            result = await self.upstream.call_with_rid(
                op, {**args, **extra}, rid or protocol.new_rid(self._rand)
            )
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

    # ----- orchestration (the leader) -----

    def kick(self) -> None:
        """Run a pass now rather than at the next interval (e.g. gossip saw a node go Down)."""
        self._kick.set()

    def node_statuses(self) -> dict[str, str]:
        return {n.id: self.status_of(n) for n in self.state.nodes.values()}

    def orchestrate_now(self) -> bool:
        """One orchestration pass on the leader, committed as one transaction; whether it
        changed anything. A failing pass costs that pass, never the write before it."""
        if not self.is_leader or self.state.cluster is None:
            return False
        try:
            changed = self.state.orchestrate(
                self.node_statuses(), now=self._clock(), rand=self._rand
            )
            self._persist()
        except Exception:
            self.stats["orchestration_errors"] += 1
            log.exception("orchestration pass failed")
            self._rollback()
            return False
        if changed:
            self.stats["orchestration_passes_changed"] += 1
        return changed

    async def _orchestrate_loop(self) -> None:
        while True:
            self.orchestrate_now()
            with trio.move_on_after(ORCHESTRATE_INTERVAL):
                await self._kick.wait()
            self._kick = trio.Event()

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
        role = _role(args)
        existing_peers = [n.addr for n in self.state.nodes.values()]
        node, credential = self.state.join_node(
            hostname=_arg(args, "hostname"),
            addr=_arg(args, "addr"),
            role=role,
            now=self._clock(),
            rand=self._rand,
        )
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
        # The node is asking, so it is alive: it may not take its addresses with it while its
        # containers still use them (Docker refuses too).
        node = self.state.remove_node(acting.id, force=_flag(args, "force"), alive=True)
        return {"node_id": node.id}

    def _h_node_ls(self, acting: Node, args: dict[str, Any]) -> Any:
        nodes = sorted(self.state.nodes.values(), key=lambda n: (n.hostname, n.id))
        return [self.node_view(n, acting) for n in nodes]

    def _h_node_inspect(self, acting: Node, args: dict[str, Any]) -> Any:
        return self.node_view(self.state.find_node(_arg(args, "node")), acting)

    def _h_node_update(self, acting: Node, args: dict[str, Any]) -> Any:
        node = self.state.update_node(
            _arg(args, "node"),
            now=self._clock(),
            availability=_opt(args, "availability"),
            label_add=_str_map(args, "label_add"),
            label_rm=_str_list(args, "label_rm"),
        )
        return self.node_view(node, acting)

    def _h_node_promote(self, acting: Node, args: dict[str, Any]) -> Any:
        return self.node_view(self.state.promote(_arg(args, "node"), now=self._clock()), acting)

    def _h_node_demote(self, acting: Node, args: dict[str, Any]) -> Any:
        return self.node_view(self.state.demote(_arg(args, "node"), now=self._clock()), acting)

    def _h_node_rm(self, acting: Node, args: dict[str, Any]) -> Any:
        force = _flag(args, "force")
        node = self.state.find_node(_arg(args, "node"))
        # Only gossip's "Down" counts as dead: "Unknown" may well be running containers.
        alive = self.status_of(node) != "Down"
        if not force and alive:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"node {node.hostname} is not down and can't be removed: "
                "run `swarm leave` on it, or use --force",
            )
        removed = self.state.remove_node(node.id, force=force, alive=alive)
        return {"node_id": removed.id}

    def _h_network_create(self, acting: Node, args: dict[str, Any]) -> Any:
        labels = _str_map(args, "labels")
        vni = _int(args, "vni")
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
        # Only the owner knows its endpoint is gone (managers included: a follower forwards
        # as the node that asked). A dead node's addresses go with `node rm`.
        alloc = self.state.release_address(
            _arg(args, "network"), _arg(args, "endpoint_id"), acting.id
        )
        return {"released": alloc is not None, "ip": None if alloc is None else alloc.ip}

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
            # Gossip keys to accept, the one to send with first (rotation, see gossip.rotate).
            "gossip_keyring": self.state.require_cluster().gossip_keyring,
        }

    def _h_join_token(self, acting: Node, args: dict[str, Any]) -> Any:
        try:
            role = Role(_arg(args, "role"))
        except ValueError:
            raise ClusterError(ErrorKind.INVALID, "join-token takes worker or manager") from None
        if _flag(args, "rotate"):
            self.state.rotate_join_token(role, rand=self._rand)
        leader = self.state.leader
        return {
            "role": role.value,
            "token": self.state.require_cluster().token(role),
            "manager_addr": leader.manager_addr if leader else None,
        }

    def _h_gossip_rotate(self, acting: Node, args: dict[str, Any]) -> Any:
        return {"gossip_keyring": self.state.rotate_gossip_key(rand=self._rand).gossip_keyring}

    def _h_gossip_retire(self, acting: Node, args: dict[str, Any]) -> Any:
        return {"gossip_keyring": self.state.retire_gossip_keys().gossip_keyring}

    def _h_service_create(self, acting: Node, args: dict[str, Any]) -> Any:
        spec = spec_from_args(args)
        service = self.state.create_service(spec, now=self._clock(), rand=self._rand)
        return service_views.service_inspect(self.state, service)

    def _h_service_ls(self, acting: Node, args: dict[str, Any]) -> Any:
        services = sorted(self.state.services.values(), key=lambda s: (s.spec.name, s.id))
        return [service_views.service_row(self.state, s) for s in services]

    def _h_service_ps(self, acting: Node, args: dict[str, Any]) -> Any:
        service = self.state.find_service(_arg(args, "service"))
        return service_views.task_rows(self.state, service)

    def _h_service_inspect(self, acting: Node, args: dict[str, Any]) -> Any:
        service = self.state.find_service(_arg(args, "service"))
        return service_views.service_inspect(self.state, service)

    def _h_service_scale(self, acting: Node, args: dict[str, Any]) -> Any:
        replicas = _int(args, "replicas")
        if replicas is None:
            raise ClusterError(ErrorKind.INVALID, "missing argument 'replicas'")
        service = self.state.update_service(
            _arg(args, "service"), now=self._clock(), replicas=replicas
        )
        return {"id": service.id, "name": service.spec.name, "replicas": service.spec.replicas}

    def _h_service_rm(self, acting: Node, args: dict[str, Any]) -> Any:
        service = self.state.remove_service(_arg(args, "service"), now=self._clock())
        return {"id": service.id, "name": service.spec.name}

    def _h_task_report(self, acting: Node, args: dict[str, Any]) -> Any:
        task_id, state = _arg(args, "task_id"), _arg(args, "state")
        container_id, error = _opt(args, "container_id"), _opt(args, "error")
        exit_code = _int(args, "exit_code")
        try:
            task = self.state.report_task(
                acting.id,
                task_id,
                state,
                now=self._clock(),
                container_id=container_id,
                error=error,
                exit_code=exit_code,
            )
        except TaskStateError as e:
            # Stale, duplicated or reordered: the task is already further along.
            self.stats["task_reports_stale"] += 1
            return {"accepted": False, "reason": e.message}
        except ClusterError as e:
            if e.kind is not ErrorKind.NOT_FOUND:
                raise
            # A task the managers have already deleted (its service is gone): nothing to do.
            self.stats["task_reports_stale"] += 1
            return {"accepted": False, "reason": e.message}
        self.stats["task_reports"] += 1
        return {"accepted": True, "task_id": task.id, "state": task.state.value}

    def _h_task_assigned(self, acting: Node, args: dict[str, Any]) -> Any:
        return service_views.assigned_tasks(self.state, acting.id)

    def _h_replica_fetch(self, acting: Node, args: dict[str, Any]) -> Any:
        since = _int(args, "since")
        if since is None:
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
    "state.snapshot": ManagerServer._h_state_snapshot,
    "join_token": ManagerServer._h_join_token,
    "gossip.rotate": ManagerServer._h_gossip_rotate,
    "gossip.retire": ManagerServer._h_gossip_retire,
    "replica.fetch": ManagerServer._h_replica_fetch,
    "service.create": ManagerServer._h_service_create,
    "service.ls": ManagerServer._h_service_ls,
    "service.ps": ManagerServer._h_service_ps,
    "service.inspect": ManagerServer._h_service_inspect,
    "service.scale": ManagerServer._h_service_scale,
    "service.rm": ManagerServer._h_service_rm,
    "task.report": ManagerServer._h_task_report,
    "task.assigned": ManagerServer._h_task_assigned,
}
