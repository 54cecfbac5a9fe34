"""A swarm manager (trio): serves cluster management on tcp/2377 from the persisted state.

One leader holds the state: the node that ran `swarm init`. Every write is one synchronous step
on it (state command, then one SQLite commit, then the answer), so two clients can never be handed
the same address. A promoted manager is a follower: it copies the leader's state by fetching its
change log every second, answers reads from the copy and forwards writes to the leader.

Services: the leader runs one orchestration pass (ClusterState.orchestrate: reconcile, task
addresses, placement, releases) after every write, every worker report and every
ORCHESTRATE_INTERVAL (or at once on `kick()`), with gossip's Ready/Down from `node_status`; its
changes are persisted and replicated like any command's. Followers never run passes.

With `replica` (the agent's managers, issue 14) the managers run Raft instead (PySyncObj:
raft.py; what the log carries and how it is applied: replication.py, raft_replica.py): whoever
Raft elects is the leader, runs the writes, the orchestration pass and key rotation, and answers
a write once its changes are committed; every manager applies committed entries to its own
state and store; followers forward writes to the Raft leader. Without a quorum writes fail with
one line naming it and reads keep answering from the local copy. Without `replica` (the unit
tests' managers) the old scheme holds: no election, a follower copies the leader's change log.

Hostile peers: a connection must deliver each whole frame by a deadline (not per byte), one
address holds at most MAX_PER_SOURCE connections, and AUTH_RESERVE slots are kept for addresses
that have authenticated (or are nodes'). Sealed frames name the manager they are for; the leader
runs each write once per (node, request id) and remembers the answer in its store, so retries
and replays, even after a restart, change nothing. Every rejection is counted by `Rejection`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import trio

from overlaynet.cluster import keyrotation, protocol, raft, service_views
from overlaynet.cluster import requests as rq
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
from overlaynet.cluster.raft_replica import RaftReplica
from overlaynet.cluster.state import (
    MANAGER_PORT,
    Change,
    ClusterError,
    ClusterState,
    ErrorKind,
    Node,
    Role,
    allocation_doc,
    member_network_doc,
    network_doc,
    node_doc,
)
from overlaynet.cluster.store import Answered, ClusterStore
from overlaynet.cluster.tasks import TaskStateError
from overlaynet.cluster.tokens import RandomBytes
from overlaynet.cluster.update import DrainWatch

log = logging.getLogger(__name__)

# Open connections at once. Nodes keep their connections open (client.py: a long-poll's and an
# idle one, IDLE_PER_MANAGER, so ~2 per node), and labs run 150 nodes: 768 leaves room for 250
# nodes' and the strangers' share below. Each idle one is a task blocked in receive (no timer
# wake-ups) and a descriptor (agents run with thousands).
MAX_CONNECTIONS = 768
# Slots only sources that have authenticated (or are nodes' addresses) may take, so that a flood
# of strangers leaves the swarm's own nodes a way in; strangers keep the 192 slots they had
# before nodes kept connections open (768 - 576).
AUTH_RESERVE = 576
# Connections from one source address at once. A node runs a handful of requests in parallel and
# a follower forwards its workers' writes, so 32 is generous; a stranger needs many addresses to
# take the unauthenticated slots (192 = 6 addresses' worth).
MAX_PER_SOURCE = 32
# A client sends its whole request right after connecting (one frame of at most 64 KiB on a
# LAN): the first frame must be complete this long after the connection is accepted. A deadline
# for the frame, not per byte, so a byte every few seconds does not keep a slot (slowloris;
# Apache's mod_reqtimeout works the same way).
FIRST_FRAME_TIMEOUT = 5.0
# Any later frame on the same connection must be complete this long after the previous answer
# (the client reuses an idle connection for KEEP_IDLE, 5 s, at most).
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
# task.assigned's long-poll: an answer is held while the state stays at the index the worker
# already has, for at most this long. Under the client's CALL_TIMEOUT (2 s), so a held call is
# never taken for a dead manager; a worker then asks about every 1.5 s instead of every 0.5 s.
ASSIGNED_HOLD = 1.5
# How long a request keeps trying to reach a Raft leader while the one it knew fails and another
# is elected (an election takes raft.ELECTION_MAX; the client waits CALL_TIMEOUT, 2 s).
LEADER_CHANGE_WAIT = 1.8
# How often a request waiting for a leader change looks at Raft's status again.
ASSIGNED_RECHECK = 0.01
# A held task.assigned is woken by every change of the state (`_state_moved`); it also looks
# again this often, so a change made past the hooks still reaches the worker within this. Not
# ASSIGNED_RECHECK: every idle worker holds one, and 100 waiters each waking every 10 ms kept a
# manager's loop busy enough that Raft commits missed COMMIT_TIMEOUT (issue 15).
ASSIGNED_FALLBACK = 0.5


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
        replica: Callable[[ManagerServer], RaftReplica] | None = None,
    ) -> None:
        """`upstream` makes this a follower: the leader's client with this node's credential.
        With `replica` (built for this server) Raft decides who leads, and `upstream` is only
        this node's identity for forwarding writes to the Raft leader."""
        self.store = store
        self.state = store.load()
        self.advertise_addr = advertise_addr
        self.port = port
        self.upstream = upstream
        self.stats: Counter[str] = Counter()
        self._node_status = node_status
        self._drain = DrainWatch()
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
        # Gossip key rotation (the leader): each node's last report of its keys' fingerprints,
        # and what decide() remembers between calls. In memory: nodes report every few seconds.
        self._key_reports: dict[str, tuple[str, ...]] = {}
        self._key_watch = keyrotation.Watch()
        # Set (and replaced) whenever the state may have moved: wakes held task.assigned calls.
        self._moved = trio.Event()
        self.replica = None if replica is None else replica(self)
        if self.replica is not None:
            self.replica.on_applied = self._state_moved

    @property
    def is_leader(self) -> bool:
        if self.replica is not None:
            return self.replica.is_leader
        return self.upstream is None

    @property
    def _follower(self) -> bool:
        """Writes go elsewhere: to the Raft leader, or (without Raft) to `upstream`."""
        if self.replica is not None:
            return not self.replica.is_leader
        return self.upstream is not None

    def set_state(self, state: ClusterState) -> None:
        self.state = state
        self._state_moved()

    def _state_moved(self) -> None:
        """Wake the requests waiting for the state to move (task.assigned's long-polls)."""
        self._moved.set()
        self._moved = trio.Event()

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
        if self.replica is not None:
            try:
                await self._run_replica(listeners, task_status)
            finally:
                self.replica.close()
            return
        async with trio.open_nursery() as nursery:
            if self.upstream is not None:
                nursery.start_soon(self._sync_loop)
            else:
                nursery.start_soon(self._orchestrate_loop)
            await nursery.start(trio.serve_listeners, self._serve_connection, listeners)
            task_status.started(self.port)

    async def _run_replica(
        self, listeners: list[trio.SocketListener], task_status: trio.TaskStatus[int]
    ) -> None:
        assert self.replica is not None
        await self.replica.start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._orchestrate_loop)
            nursery.start_soon(self.replica.maintain)
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
            admit = rq.decode(rq.JoinAdmit.OP, {**request.args, "role": role.value})
            assert isinstance(admit, rq.JoinAdmit)
            forwarded: Any = _HERE
            if self.replica is not None:
                forwarded = await self._via_raft_leader(
                    admit.OP, None, admit.to_args(), request.rid
                )
            elif self._follower:
                forwarded = await self._forward(admit.OP, None, admit.to_args(), request.rid)
            if forwarded is not _HERE:
                result = forwarded
            else:
                key_of_request = f"{frame.sender}/{request.rid}"
                before = self._last_submitted()
                try:
                    result = self._idempotent(key_of_request, lambda: self._admit(admit))
                finally:
                    await self._settle(before)
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
        if credential is None and self.replica is not None:
            # A node that joined through the leader a moment ago: its entry may be on its way.
            await self.replica.caught_up(self.replica.applied_index, 1.0)
            credential = self.state.credentials.get(node_id)
        elif credential is None and self.upstream is not None:
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
        if self.state.is_revoked(node_id):
            # Counted as unknown_node (its docstring: "removed: revoked") and, to tell the two
            # apart, as the counter `revoked_frames`.
            self.stats["revoked_frames"] += 1
            raise _Turnaway(
                Rejection.UNKNOWN_NODE,
                ErrorKind.FORBIDDEN,
                f"node {node_id}'s credential was revoked by a manager (`node ca revoke`): "
                "the managers refuse it; run `swarm leave --force` on it and join again",
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
        cls = rq.REQUESTS.get(op)
        if cls is None:
            raise ClusterError(ErrorKind.INVALID, f"unknown cluster operation {op!r}")
        if self.state.cluster is None:
            raise ClusterError(ErrorKind.UNAVAILABLE, self._not_ready())
        caller = self.state.nodes.get(node_id)
        if caller is None:
            raise ClusterError(ErrorKind.FORBIDDEN, f"node {node_id} is not in the swarm")
        if self.state.is_revoked(node_id):
            raise ClusterError(ErrorKind.FORBIDDEN, f"node {node_id}'s credential is revoked")
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
            if self.state.is_revoked(on_behalf):
                raise ClusterError(ErrorKind.FORBIDDEN, f"node {on_behalf}'s credential is revoked")
        if acting.role is not Role.MANAGER and not cls.WORKER:
            raise ClusterError(ErrorKind.FORBIDDEN, self._worker_refusal(acting, op))
        # Decoded and checked once, here: handlers get a typed request, never raw arguments.
        request = rq.decode(op, args)
        write = request.is_write()
        if self.replica is not None and (write or request.LEADER):
            forwarded = await self._via_raft_leader(op, acting.id, request.to_args(), rid)
            if forwarded is not _HERE:
                return forwarded
        elif self._follower and (write or request.LEADER):
            return await self._forward(op, acting.id, request.to_args(), rid)
        if isinstance(request, rq.TaskAssigned) and request.index is not None:
            await self._until_moved(request.index, acting.id)
        if write:
            # A leader elected a moment ago: the state names it before a write can rely on it
            # (node demote/rm protect the leader).
            self.follow_raft_leader()
        handler = _HANDLERS[type(request)]
        # Writes run once per (node, request id): the key is the acting node's, so a write
        # forwarded by a follower and the same request retried here are the same request.
        key = f"{acting.id}/{rid}" if write and rid is not None else None
        before = self._last_submitted()
        try:
            result = self._idempotent(key, lambda: handler(self, acting, request))
        finally:
            if write:
                # Answered once committed: a refusal too, so a retry finds it remembered.
                await self._settle(before)
        if write:
            self.orchestrate_now()
        return result

    def _last_submitted(self) -> str | None:
        return None if self.replica is None else self.replica.last_submitted

    async def _settle(self, before: str | None) -> None:
        """Raft: wait for the entry this request submitted, if it submitted one (`before` is
        the last entry submitted before it ran: no new one, nothing to wait for)."""
        if self.replica is not None and self.replica.last_submitted != before:
            await self.replica.settle(self.replica.last_submitted)

    async def _via_raft_leader(
        self, op: str, node_id: str | None, args: dict[str, Any], rid: str | None
    ) -> Any:
        """Raft: `_HERE` when this manager leads, else the Raft leader's answer. Waits briefly
        for an election, and tries the next leader when the one it knew has just died; with
        no leader in sight, the quorum line."""
        replica = self.replica
        assert replica is not None
        rid = rid or protocol.new_rid(self._rand)
        failure: ClusterError | None = None
        with trio.move_on_after(LEADER_CHANGE_WAIT):
            while True:
                leader = await replica.wait_leader()
                if leader is None:
                    break
                if leader == replica.raft.self_addr:
                    return _HERE
                try:
                    return await self._forward(op, node_id, args, rid)
                except ClusterError as e:
                    if e.kind is not ErrorKind.UNAVAILABLE:
                        raise
                    failure = e
                # The leader it knew did not answer: wait for Raft to notice and elect another.
                while replica.status().leader == leader:
                    await trio.sleep(ASSIGNED_RECHECK)
        if failure is None or replica.status().leader is None:
            # A forward that came back UNAVAILABLE may have reached the leader, which may have
            # logged the write before its quorum went (its own timeout says so): Raft may
            # still commit it, so the line must not say it was not made.
            raise ClusterError(
                ErrorKind.UNAVAILABLE,
                replica.status().quorum_message(in_flight=failure is not None),
            )
        raise failure

    async def _until_moved(self, index: int, node_id: str) -> None:
        """task.assigned's long-poll: wait while the state is still at the caller's `index`, or
        has moved in ways that leave the caller's answer as it was (nothing new for it), at
        most ASSIGNED_HOLD. Without that second part every node joining a swarm answered every
        held worker, which asked again at once: N requests per join, N^2 to form a swarm."""
        self.stats["assigned_held"] += 1
        if self.state.index != index:
            return
        seen = _without_index(service_views.assigned_tasks(self.state, node_id))
        with trio.move_on_after(ASSIGNED_HOLD):
            while True:
                moved = self._moved
                with trio.move_on_after(ASSIGNED_FALLBACK):
                    await moved.wait()
                if self.state.index == index:
                    continue
                if _without_index(service_views.assigned_tasks(self.state, node_id)) != seen:
                    return
                index = self.state.index
                self.stats["assigned_held_unchanged"] += 1

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
        if self.replica is not None:
            return "this manager has not received the swarm state through Raft yet: retry"
        if self.upstream is not None:
            return "this manager has not copied the swarm state from its leader yet: retry"
        return "this node is not a swarm manager"

    def _rollback(self) -> None:
        """Memory must not run ahead of the disk: go back to what was committed."""
        if self.replica is not None:
            self.replica.rollback()
            return
        self.state = self.store.load()
        self._log.clear()
        self._log_start = self.state.index
        self._state_moved()

    def _persist(self, answered: Answered | None = None) -> None:
        changes = self.state.take_changes()
        if not changes and answered is None:
            return
        if changes:
            self._state_moved()
        if self.replica is not None:
            # Committed (and written to the store) when Raft applies it, on every manager.
            self.replica.submit(changes, self.state.index, answered)
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
        if self.replica is not None:
            return await self._forward_to_raft_leader(op, {**args, **extra}, rid)
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

    async def _forward_to_raft_leader(self, op: str, args: dict[str, Any], rid: str | None) -> Any:
        assert self.replica is not None and self.upstream is not None
        leader = self.replica.status().leader
        if leader is None:
            raise ClusterError(ErrorKind.UNAVAILABLE, self.replica.status().quorum_message())
        client = self.upstream.towards([self.replica.manager_addr_of(leader)])
        since = self.replica.applied_index
        try:
            result = await client.call_with_rid(op, args, rid or protocol.new_rid(self._rand))
        except ClusterError as e:
            if e.kind is ErrorKind.UNAVAILABLE:
                raise ClusterError(
                    ErrorKind.UNAVAILABLE,
                    f"the swarm's Raft leader could not do {op} now: {e.message}",
                ) from None
            raise
        # Read your own writes: the leader answered once committed; wait for it to arrive here.
        await self.replica.caught_up(since, 1.0)
        return result

    def raft_info(self) -> dict[str, Any] | None:
        """Raft's term, commit index, leader and members (None without Raft)."""
        return None if self.replica is None else self.replica.info()

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

    def follow_raft_leader(self) -> bool:
        """On the Raft leader: make the state name this manager as the leader (the node that
        cannot be demoted or removed, and MANAGER STATUS in the records), committed like any
        command; whether anything changed."""
        if self.replica is None or not self.is_leader or self.state.cluster is None:
            return False
        me = next((n for n in self.state.managers() if n.addr == self.advertise_addr), None)
        if me is None:
            return False
        try:
            changed = self.state.follow_leader(me.id, now=self._clock())
            self._persist()
        except Exception:
            self.stats["follow_leader_errors"] += 1
            log.exception("recording the Raft leader in the state failed")
            self._rollback()
            return False
        if changed:
            self.stats["leader_recorded"] += 1
        return changed

    async def _orchestrate_loop(self) -> None:
        while True:
            self.follow_raft_leader()
            self.orchestrate_now()
            self.advance_key_rotation()
            self.rotate_data_keys()
            with trio.move_on_after(ORCHESTRATE_INTERVAL):
                await self._kick.wait()
            self._kick = trio.Event()

    def key_rotation(self) -> keyrotation.Rotation | None:
        cluster = self.state.cluster
        if cluster is None:
            return None
        return keyrotation.Rotation(
            stage=cluster.gossip_rotation,
            primary=cluster.gossip_key,
            pending=cluster.pending_gossip_key,
            again=cluster.gossip_rotation_again,
        )

    def rotate_data_keys(self) -> list[str]:
        """The leader's rotation of encrypted networks' data keys (issue 18), committed like
        any command; the ids of the networks whose key changed."""
        if not self.is_leader or self.state.cluster is None:
            return []
        try:
            changed = self.state.rotate_data_keys(now=self._clock(), rand=self._rand)
            self._persist()
        except Exception:
            self.stats["data_key_rotation_errors"] += 1
            log.exception("data key rotation failed")
            self._rollback()
            return []
        if changed:
            self.stats["data_key_rotations"] += len(changed)
        return [n.id for n in changed]

    def advance_key_rotation(self) -> keyrotation.KeyStep:
        """Take the gossip key rotation's next step if every live node is ready for it (the
        leader only; keyrotation.decide), committed like any command."""
        rotation = self.key_rotation()
        if not self.is_leader or rotation is None:
            return keyrotation.KeyStep.WAIT
        for gone in set(self._key_reports) - set(self.state.nodes):
            del self._key_reports[gone]
        live = [
            n.id
            for n in self.state.nodes.values()
            if self.status_of(n) != "Down" and not self.state.is_revoked(n.id)
        ]
        step, self._key_watch = keyrotation.decide(
            rotation, live, self._key_reports, self._key_watch, self._clock()
        )
        if step is keyrotation.KeyStep.WAIT:
            return step
        try:
            if step is keyrotation.KeyStep.USE:
                self.state.use_staged_gossip_key()
            elif step is keyrotation.KeyStep.RETIRE:
                self.state.finish_gossip_rotation()
            else:
                self.state.stage_gossip_key(rand=self._rand)
            self._persist()
        except Exception:
            self.stats["key_rotation_errors"] += 1
            log.exception("gossip key rotation step %s failed", step)
            self._rollback()
            return keyrotation.KeyStep.WAIT
        self.stats[f"key_rotation_{step.value}"] += 1
        log.info("gossip key rotation: %s", step.value)
        return step

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
            self.set_state(ClusterState.from_records(records, int(reply["index"])))
            self.stats["sync_snapshots"] += 1
            return
        changes = [Change(c[0], c[1], c[2]) for c in reply["changes"]]
        if not changes:
            return
        for change in changes:
            self.state.apply(change)
        self._state_moved()
        self.store.apply(changes, self.state.index)
        self.stats["sync_changes"] += len(changes)

    # ----- views -----

    def status_of(self, node: Node) -> str:
        """Ready/Down from gossip (via node_status), Unknown without it."""
        return "Unknown" if self._node_status is None else self._node_status(node.id)

    def node_view(self, node: Node, caller: Node) -> dict[str, Any]:
        status = self.status_of(node)
        manager_status = node.manager_status.value if node.manager_status else ""
        if manager_status and self.replica is not None:
            manager_status = self.replica.manager_status(node)
        if manager_status and status == "Down":
            manager_status = "Unreachable"
        view = {
            **node_doc(node),
            "status": status,
            "manager_status": manager_status,
            "self": node.id == caller.id,
        }
        if manager_status and self.replica is not None:
            view["raft"] = self.replica.info()
        return view

    def _h_node_ca(self, acting: Node, req: rq.NodeCa) -> Any:
        rows = []
        for node in sorted(self.state.nodes.values(), key=lambda n: (n.hostname, n.id)):
            key = self.state.credentials.get(node.id)
            facts = self.state.credential_facts.get(node.id)
            rows.append(
                {
                    "id": node.id,
                    "hostname": node.hostname,
                    "role": node.role.value,
                    # A digest of the key, never the key: enough to tell two credentials apart.
                    "fingerprint": "" if key is None else hashlib.sha256(key).hexdigest(),
                    "issued": None if facts is None else facts.issued,
                    "revoked": None if facts is None else facts.revoked,
                    "status": "revoked" if self.state.is_revoked(node.id) else "active",
                }
            )
        return rows

    def _h_node_revoke(self, acting: Node, req: rq.NodeRevoke) -> Any:
        already = self.state.is_revoked(self.state.find_node(req.node).id)
        node = self.state.revoke_credential(req.node, now=self._clock())
        if not already:
            # Its gossip key goes too, as on `node rm`: a staged rotation that does not wait
            # for the revoked node (it cannot report), which then loses gossip and goes Down.
            self.state.stage_gossip_key(rand=self._rand)
        return {"node_id": node.id}

    def _network_view(self, net_ref: str) -> dict[str, Any]:
        network = self.state.find_network(net_ref)
        endpoints = [
            {"endpoint_id": a.endpoint_id, "ip": a.ip, "node_id": a.node_id}
            for a in self.state.allocations_on(network.id)
        ]
        return {**network_doc(network), "endpoints": endpoints}

    # ----- handlers: (server, acting node, typed request) -> JSON-able result -----

    def _admit(self, req: rq.JoinAdmit) -> dict[str, Any]:
        role = Role(req.role)
        existing_peers = [n.addr for n in self.state.nodes.values()]
        node, credential = self.state.join_node(
            hostname=req.hostname,
            addr=req.addr,
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

    def _h_join_admit(self, acting: Node, req: rq.JoinAdmit) -> Any:
        return self._admit(req)

    def _h_leave(self, acting: Node, req: rq.Leave) -> Any:
        # The node is asking, so it is alive: it may not take its addresses with it while its
        # containers still use them (Docker refuses too).
        node = self.state.remove_node(acting.id, force=req.force, alive=True)
        return {"node_id": node.id}

    def _h_node_ls(self, acting: Node, req: rq.NodeLs) -> Any:
        nodes = sorted(self.state.nodes.values(), key=lambda n: (n.hostname, n.id))
        return [self.node_view(n, acting) for n in nodes]

    def _h_node_inspect(self, acting: Node, req: rq.NodeInspect) -> Any:
        return self.node_view(self.state.find_node(req.node), acting)

    def _h_node_update(self, acting: Node, req: rq.NodeUpdate) -> Any:
        node = self.state.update_node(
            req.node,
            now=self._clock(),
            availability=req.availability,
            label_add=req.label_add,
            label_rm=req.label_rm,
        )
        return self.node_view(node, acting)

    def _h_node_promote(self, acting: Node, req: rq.NodePromote) -> Any:
        return self.node_view(self.state.promote(req.node, now=self._clock()), acting)

    def _h_node_demote(self, acting: Node, req: rq.NodeDemote) -> Any:
        return self.node_view(self.state.demote(req.node, now=self._clock()), acting)

    def _h_node_rm(self, acting: Node, req: rq.NodeRm) -> Any:
        node = self.state.find_node(req.node)
        # Only gossip's "Down" counts as dead: "Unknown" may well be running containers.
        alive = self.status_of(node) != "Down"
        if not req.force and alive:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"node {node.hostname} is not down and can't be removed: "
                "run `swarm leave` on it, or use --force",
            )
        removed = self.state.remove_node(node.id, force=req.force, alive=alive)
        # Revoke its gossip key too (issue 18): a staged rotation, so no live member misses a
        # beat, taken step by step by the leader as nodes report (advance_key_rotation).
        self.state.stage_gossip_key(rand=self._rand)
        return {"node_id": removed.id}

    def _h_network_create(self, acting: Node, req: rq.NetworkCreate) -> Any:
        network = self.state.create_network(
            req.name,
            now=self._clock(),
            rand=self._rand,
            subnet=req.subnet,
            gateway=req.gateway,
            attachable=req.attachable,
            labels=req.labels,
            vni=req.vni,
            encrypted=req.encrypted,
            **({} if req.key_period is None else {"key_period": req.key_period}),
        )
        return network_doc(network)

    def _h_network_rm(self, acting: Node, req: rq.NetworkRm) -> Any:
        return network_doc(self.state.remove_network(req.network))

    def _h_network_ls(self, acting: Node, req: rq.NetworkLs) -> Any:
        nets = sorted(self.state.networks.values(), key=lambda n: (n.name, n.id))
        return [network_doc(n) for n in nets]

    def _h_network_inspect(self, acting: Node, req: rq.NetworkInspect) -> Any:
        return self._network_view(req.network)

    def _h_ip_allocate(self, acting: Node, req: rq.IpAllocate) -> Any:
        alloc = self.state.allocate_address(req.network, req.endpoint_id, acting.id, req.ip)
        return allocation_doc(alloc, self.state.networks[alloc.network_id])

    def _h_ip_release(self, acting: Node, req: rq.IpRelease) -> Any:
        # Only the owner knows its endpoint is gone (managers included: a follower forwards
        # as the node that asked). A dead node's addresses go with `node rm`.
        alloc = self.state.release_address(req.network, req.endpoint_id, acting.id)
        return {"released": alloc is not None, "ip": None if alloc is None else alloc.ip}

    def _h_state_snapshot(self, acting: Node, req: rq.StateSnapshot) -> Any:
        nets = sorted(self.state.networks.values(), key=lambda n: (n.name, n.id))
        mine = [
            allocation_doc(a, self.state.networks[a.network_id])
            for a in self.state.allocations_of_node(acting.id)
        ]
        return {
            "cluster_id": self.state.require_cluster().id,
            "index": self.state.index,
            "node": self.node_view(acting, acting),
            "managers": self._manager_addrs(),
            # With the data keys of encrypted networks: only members ask (authenticated).
            "networks": [member_network_doc(n) for n in nets],
            "allocations": mine,
            # Gossip keys to accept, the one to send with first (rotation, see gossip.rotate).
            "gossip_keyring": self.state.require_cluster().gossip_keyring,
            **self._raft_key_for(acting),
        }

    def _manager_addrs(self) -> list[str]:
        """Every manager's cluster address, the leader first (Raft's, when it runs)."""
        addrs = [str(m.manager_addr) for m in self.state.managers()]
        if self.replica is not None:
            leader = self.replica.status().leader
            if leader is not None:
                first = self.replica.manager_addr_of(leader)
                addrs = [first, *(a for a in addrs if a != first)]
        return addrs

    def _raft_key_for(self, acting: Node) -> dict[str, Any]:
        """A manager (a promoted one first of all) needs the Raft password before it can join
        the Raft cluster and so receive the state it is derived from."""
        if self.replica is None or acting.role is not Role.MANAGER:
            return {}
        cluster = self.state.require_cluster()
        return {
            "raft_key": raft.raft_password(cluster.root_key, cluster.raft_epoch),
            # What a new member starts with (swarm.py): the Raft cluster as it stands.
            "raft_members": self.replica.status().members,
        }

    def _h_join_token(self, acting: Node, req: rq.JoinToken) -> Any:
        role = Role(req.role)
        if req.rotate:
            self.state.rotate_join_token(role, rand=self._rand)
        leader = self.state.leader
        return {
            "role": role.value,
            "token": self.state.require_cluster().token(role),
            "manager_addr": leader.manager_addr if leader else None,
        }

    def _h_gossip_rotate(self, acting: Node, req: rq.GossipRotate) -> Any:
        return {"gossip_keyring": self.state.rotate_gossip_key(rand=self._rand).gossip_keyring}

    def _h_gossip_retire(self, acting: Node, req: rq.GossipRetire) -> Any:
        return {"gossip_keyring": self.state.retire_gossip_keys().gossip_keyring}

    def _h_gossip_report(self, acting: Node, req: rq.GossipReport) -> Any:
        self._key_reports[acting.id] = req.key_fingerprints
        self.advance_key_rotation()
        cluster = self.state.require_cluster()
        return {"gossip_keyring": cluster.gossip_keyring, "stage": cluster.gossip_rotation.value}

    def _h_service_create(self, acting: Node, req: rq.ServiceCreate) -> Any:
        service = self.state.create_service(req.spec(), now=self._clock(), rand=self._rand)
        return service_views.service_inspect(self.state, service)

    def _h_service_ls(self, acting: Node, req: rq.ServiceLs) -> Any:
        services = sorted(self.state.services.values(), key=lambda s: (s.spec.name, s.id))
        return [service_views.service_row(self.state, s) for s in services]

    def _h_service_ps(self, acting: Node, req: rq.ServicePs) -> Any:
        service = self.state.find_service(req.service)
        return service_views.task_rows(self.state, service)

    def _h_service_inspect(self, acting: Node, req: rq.ServiceInspect) -> Any:
        service = self.state.find_service(req.service)
        return service_views.service_inspect(self.state, service)

    def _h_service_scale(self, acting: Node, req: rq.ServiceScale) -> Any:
        service = self.state.update_service(req.service, now=self._clock(), replicas=req.replicas)
        return {"id": service.id, "name": service.spec.name, "replicas": service.spec.replicas}

    def _h_service_update(self, acting: Node, req: rq.ServiceUpdate) -> Any:
        service = self.state.change_service(
            req.service, req.new_spec, now=self._clock(), force=req.force
        )
        return service_views.service_inspect(self.state, service)

    def _h_service_rollback(self, acting: Node, req: rq.ServiceRollback) -> Any:
        service = self.state.rollback_service(req.service, now=self._clock())
        return service_views.service_inspect(self.state, service)

    def _h_service_rm(self, acting: Node, req: rq.ServiceRm) -> Any:
        service = self.state.remove_service(req.service, now=self._clock())
        return {"id": service.id, "name": service.spec.name}

    def _h_task_report(self, acting: Node, req: rq.TaskReport) -> Any:
        try:
            task = self.state.report_task(
                acting.id,
                req.task_id,
                req.state,
                now=self._clock(),
                container_id=req.container_id,
                error=req.error,
                exit_code=req.exit_code,
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

    def _h_task_assigned(self, acting: Node, req: rq.TaskAssigned) -> Any:
        doc = service_views.assigned_tasks(self.state, acting.id)
        # A task being stopped says whether every Ready node has dropped it from its DNS and
        # load balancers (update.DrainWatch); its worker stops the process only then.
        index = doc["index"]
        self._drain.answered(acting.id, index)
        leaving = [e for e in doc["tasks"] if e["desired_state"] != "running"]
        if leaving:
            # Every node's status, only when there is a drain to judge: O(nodes) per answer
            # was most of an idle worker's task.assigned on a 150-host swarm (issue 15).
            ready = [n for n, status in self.node_statuses().items() if status == "Ready"]
            for entry in leaving:
                entry["drained"] = self._drain.drained(entry["id"], index, ready)
        self._drain.forget(
            t.id for t in self.state.tasks.values() if not t.live and not t.state.final
        )
        return doc

    def _h_replica_fetch(self, acting: Node, req: rq.ReplicaFetch) -> Any:
        since, index = req.since, self.state.index
        if self._log_start <= since <= index:
            changes = list(self._log)[since - self._log_start :]
            return {"index": index, "changes": [[c.kind, c.key, c.doc] for c in changes]}
        records = self.state.records()
        return {"index": index, "snapshot": [[c.kind, c.key, c.doc] for c in records]}


# `_via_raft_leader`'s answer when this manager is the Raft leader: run the request here.
_HERE = object()


def _without_index(doc: dict[str, Any]) -> dict[str, Any]:
    """A task.assigned answer without the state index it was read at."""
    return {k: v for k, v in doc.items() if k != "index"}


# Every request class has its handler (checked at import, not at a peer's first call).
_Handler = Callable[[ManagerServer, Node, Any], Any]
_HANDLERS: dict[type[rq.ManagerRequest], _Handler] = {
    rq.JoinAdmit: ManagerServer._h_join_admit,
    rq.Leave: ManagerServer._h_leave,
    rq.NodeLs: ManagerServer._h_node_ls,
    rq.NodeInspect: ManagerServer._h_node_inspect,
    rq.NodeUpdate: ManagerServer._h_node_update,
    rq.NodePromote: ManagerServer._h_node_promote,
    rq.NodeDemote: ManagerServer._h_node_demote,
    rq.NodeRm: ManagerServer._h_node_rm,
    rq.NodeCa: ManagerServer._h_node_ca,
    rq.NodeRevoke: ManagerServer._h_node_revoke,
    rq.NetworkCreate: ManagerServer._h_network_create,
    rq.NetworkRm: ManagerServer._h_network_rm,
    rq.NetworkLs: ManagerServer._h_network_ls,
    rq.NetworkInspect: ManagerServer._h_network_inspect,
    rq.IpAllocate: ManagerServer._h_ip_allocate,
    rq.IpRelease: ManagerServer._h_ip_release,
    rq.StateSnapshot: ManagerServer._h_state_snapshot,
    rq.JoinToken: ManagerServer._h_join_token,
    rq.GossipRotate: ManagerServer._h_gossip_rotate,
    rq.GossipRetire: ManagerServer._h_gossip_retire,
    rq.GossipReport: ManagerServer._h_gossip_report,
    rq.ReplicaFetch: ManagerServer._h_replica_fetch,
    rq.ServiceCreate: ManagerServer._h_service_create,
    rq.ServiceLs: ManagerServer._h_service_ls,
    rq.ServicePs: ManagerServer._h_service_ps,
    rq.ServiceInspect: ManagerServer._h_service_inspect,
    rq.ServiceScale: ManagerServer._h_service_scale,
    rq.ServiceUpdate: ManagerServer._h_service_update,
    rq.ServiceRollback: ManagerServer._h_service_rollback,
    rq.ServiceRm: ManagerServer._h_service_rm,
    rq.TaskReport: ManagerServer._h_task_report,
    rq.TaskAssigned: ManagerServer._h_task_assigned,
}
assert set(_HANDLERS) == set(rq.REQUESTS.values()), "every manager request has a handler"
