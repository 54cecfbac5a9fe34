"""Talking to swarm managers on tcp/2377 (trio): joining a swarm, then authenticated requests.

A node keeps its connections to a manager open and sends its requests on them in turn, one
request at a time per connection (the manager answers each before it reads the next); a second
request while one is out (a task runner's long-poll is out most of the time) takes another
connection. Issue 15: one connection per request cost an idle 60-host swarm's manager ~120
accepts/s. A connection goes back to the idle pool only after a whole answer was read from it, so
a timed-out or cancelled exchange never leaves a half-read frame for the next request: it is
closed. Every frame is still sealed, bound to the manager's address and checked as before.

A request on an idle connection the manager has closed meanwhile (its IDLE_TIMEOUT, a restart)
is sent again once on a new connection under the same request id: the manager answers a repeated
id of a write with its first answer, so a request that did arrive is never run twice.
"""

from __future__ import annotations

import copy
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from overlaynet.cluster import protocol, tokens
from overlaynet.cluster.protocol import Frame, FrameDecoder, FrameKind, MalformedFrame
from overlaynet.cluster.state import MANAGER_PORT, ClusterError, ErrorKind, Role
from overlaynet.cluster.tokens import BadToken, RandomBytes

# Per manager: a LAN round trip is well under a millisecond and a request is one SQLite commit;
# 2 s leaves room for a busy manager yet lets a client move on to the next one quickly.
CALL_TIMEOUT = 2.0
# `swarm join` is typed by a person who waits; give a slow first connection more time.
JOIN_TIMEOUT = 5.0
_RECV_BYTES = 65536
# An idle connection is used again only this long after its last answer: well under the
# manager's IDLE_TIMEOUT (10 s), after which it closes it, so a request rarely meets a connection
# being closed under it (and is sent again on a new one if it does).
KEEP_IDLE = 5.0
# Idle connections kept per manager: a task runner's long-poll and one other request out at once
# is the common most; more requests at once open more connections, closed after their answer.
# The manager caps connections per source address (MAX_PER_SOURCE, 32).
IDLE_PER_MANAGER = 2


@dataclass(frozen=True)
class JoinResult:
    """What a joined node keeps: who it is, its key, its managers and the gossip keyring."""

    node_id: str
    credential: bytes
    role: Role
    cluster_id: str
    # "ip:port" of every manager, the leader first.
    managers: tuple[str, ...]
    # Advertise addresses of the nodes already in the swarm: gossip's seeds.
    peers: tuple[str, ...]
    gossip_key: bytes

    def to_doc(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "credential": self.credential.hex(),
            "role": self.role.value,
            "cluster_id": self.cluster_id,
            "managers": list(self.managers),
            "peers": list(self.peers),
            "gossip_key": self.gossip_key.hex(),
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> JoinResult:
        return cls(
            node_id=str(doc["node_id"]),
            credential=bytes.fromhex(doc["credential"]),
            role=Role(doc["role"]),
            cluster_id=str(doc["cluster_id"]),
            managers=tuple(doc["managers"]),
            peers=tuple(doc["peers"]),
            gossip_key=bytes.fromhex(doc["gossip_key"]),
        )


def split_addr(addr: str, default_port: int = MANAGER_PORT) -> tuple[str, int]:
    """`ip[:port]` to (ip, port), or a ClusterError that says what is wrong with it."""
    host, sep, port_text = addr.rpartition(":")
    if not sep:
        host, port_text = addr, str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not host or not 0 < port < 65536:
        raise ClusterError(
            ErrorKind.INVALID, f"invalid manager address {addr!r}: expected IP[:PORT]"
        )
    return host, port


# Seals a frame for the manager at "ip:port" (the address actually connected to).
Sealer = Callable[[str], bytes]


class _Connection:
    """One open connection to a manager: the stream, the address it reached, when it last
    answered."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        # Bound into every frame (a name resolves to one of several addresses): the manager
        # compares it with its own socket's.
        self.peer = protocol.peer_name(stream.socket.getpeername())
        self.idle_since = time.monotonic()

    def close(self) -> None:
        """Close at once, without a checkpoint (also from a cancelled exchange)."""
        self.stream.socket.close()


class _Closed(Exception):
    """The manager closed a connection used again before answering on it (IDLE_TIMEOUT, a
    restart): the request is sent once more on a new connection."""


class ConnectionPool:
    """Idle connections to managers by "ip:port", shared by the clients of one node."""

    def __init__(self) -> None:
        self._idle: dict[str, list[_Connection]] = {}
        self.opened = 0

    def take(self, addr: str) -> _Connection | None:
        idle = self._idle.get(addr, [])
        while idle:
            conn = idle.pop()
            if time.monotonic() - conn.idle_since < KEEP_IDLE:
                return conn
            conn.close()
        return None

    def give(self, addr: str, conn: _Connection) -> None:
        idle = self._idle.setdefault(addr, [])
        conn.idle_since = time.monotonic()
        if len(idle) >= IDLE_PER_MANAGER:
            conn.close()
            return
        idle.append(conn)

    def idle_count(self, addr: str) -> int:
        return len(self._idle.get(addr, []))

    def close(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()


async def _connect(addr: str) -> _Connection:
    host, port = split_addr(addr)
    return _Connection(await trio.open_tcp_stream(host, port))


async def _ask(conn: _Connection, make_frame: Sealer) -> Frame:
    """Send the frame sealed for `conn`'s manager and read the one frame it answers with.
    _Closed when the manager closed the connection before answering."""
    await conn.stream.send_all(make_frame(conn.peer))
    decoder = FrameDecoder()
    while True:
        chunk = await conn.stream.receive_some(_RECV_BYTES)
        if not chunk:
            raise _Closed("the manager closed the connection without answering")
        decoder.receive_data(chunk)
        frame = decoder.next_frame()
        if frame is not None:
            return frame


async def _exchange(
    addr: str,
    make_frame: Sealer,
    key: bytes,
    rid: str,
    *,
    now: Callable[[], float],
    pool: ConnectionPool | None = None,
) -> Any:
    """The result of the request sealed by `make_frame`, sent to `addr` on an idle connection of
    `pool` or a new one (without a pool: a connection of its own, closed after)."""
    conn = pool.take(addr) if pool is not None else None
    reused = conn is not None
    if conn is None:
        conn = await _connect(addr)
        if pool is not None:
            pool.opened += 1
    keep = False
    try:
        try:
            frame = await _ask(conn, make_frame)
        except (_Closed, trio.BrokenResourceError, ConnectionResetError, BrokenPipeError) as e:
            if not reused or pool is None:
                if isinstance(e, _Closed):
                    raise MalformedFrame(str(e)) from None
                raise
            # The idle connection was closed under us: once more on a new one, same request id
            # (a new nonce: `make_frame` seals afresh).
            conn.close()
            conn = await _connect(addr)
            pool.opened += 1
            try:
                frame = await _ask(conn, make_frame)
            except _Closed as again:
                raise MalformedFrame(str(again)) from None
        # A sealed response (a result or a refusal) leaves the connection open on the
        # manager's side; after an ERROR frame it closes it.
        keep = frame.kind is FrameKind.RESPONSE
        return protocol.open_response(frame, key, rid, now=now())
    except MalformedFrame:
        keep = False
        raise
    finally:
        if keep and pool is not None:
            pool.give(addr, conn)
        else:
            conn.close()


def _describe(exc: BaseException) -> str:
    """A short reason; trio reports failed connects as a group of per-address errors."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup) and cause.exceptions:
        exc = cause.exceptions[0]
    if isinstance(exc, trio.TooSlowError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


class ManagerClient:
    """Requests from one joined node, tried against its managers in order."""

    def __init__(
        self,
        managers: Sequence[str],
        node_id: str,
        credential: bytes,
        *,
        timeout: float = CALL_TIMEOUT,
        clock: Callable[[], float] = time.time,
        rand: RandomBytes = secrets.token_bytes,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.managers = list(managers)
        self.node_id = node_id
        self.timeout = timeout
        self._key = protocol.derive_node_key(credential, node_id)
        self._clock = clock
        self._rand = rand
        # Kept open between requests (see the module docstring); `close` ends them.
        self.pool = ConnectionPool() if pool is None else pool

    def towards(self, managers: Sequence[str]) -> ManagerClient:
        """The same node's client, sent to other managers (a follower to the Raft leader);
        it shares this one's connections."""
        other = copy.copy(self)
        other.managers = list(managers)
        return other

    def close(self) -> None:
        """Close the idle connections (the node left, or its managers changed)."""
        self.pool.close()

    async def call(self, op: str, **args: Any) -> Any:
        """The result of `op`; a refusal raises ClusterError with the manager's message."""
        return await self.call_with_rid(op, args, protocol.new_rid(self._rand))

    async def call_with_rid(self, op: str, args: dict[str, Any], rid: str) -> Any:
        """`call` under a given request id (a follower forwards a write under the client's).

        A manager that cannot be reached, times out or says it is unavailable is skipped for the
        next one. Retrying elsewhere is safe: every attempt carries the same request id, and the
        leader answers a repeated id with its first answer instead of running it again.
        """
        failures: list[str] = []
        for addr in self.managers:

            def sealed(to: str) -> bytes:
                data, _ = protocol.seal_request(
                    FrameKind.REQUEST,
                    self.node_id,
                    self._key,
                    op,
                    args,
                    to=to,
                    now=self._clock(),
                    rand=self._rand,
                    rid=rid,
                )
                return data

            try:
                with trio.fail_after(self.timeout):
                    return await _exchange(
                        addr, sealed, self._key, rid, now=self._clock, pool=self.pool
                    )
            except ClusterError as e:
                if e.kind is not ErrorKind.UNAVAILABLE:
                    raise
                failures.append(f"{addr}: {e.message}")
            except (OSError, trio.TooSlowError, trio.BrokenResourceError, MalformedFrame) as e:
                failures.append(f"{addr}: {_describe(e)}")
        tried = "; ".join(failures) or "no manager addresses known"
        raise ClusterError(ErrorKind.UNAVAILABLE, f"no swarm manager answered ({tried})")

    @staticmethod
    async def join(
        addr: str,
        token: str,
        hostname: str,
        advertise_addr: str,
        *,
        timeout: float = JOIN_TIMEOUT,
        clock: Callable[[], float] = time.time,
        rand: RandomBytes = secrets.token_bytes,
    ) -> JoinResult:
        """Join the swarm the manager at `addr` (ip[:2377]) runs, as the token's role."""
        try:
            parsed = tokens.parse_token(token)
        except BadToken as e:
            raise ClusterError(ErrorKind.INVALID, str(e)) from None
        key = protocol.token_key(parsed)
        args = {"hostname": hostname, "addr": advertise_addr}
        rid = protocol.new_rid(rand)

        def sealed(to: str) -> bytes:
            data, _ = protocol.seal_request(
                FrameKind.JOIN,
                parsed.digest,
                key,
                "join",
                args,
                to=to,
                now=clock(),
                rand=rand,
                rid=rid,
            )
            return data

        try:
            with trio.fail_after(timeout):
                doc = await _exchange(addr, sealed, key, rid, now=clock)
        except (OSError, trio.TooSlowError, trio.BrokenResourceError, MalformedFrame) as e:
            raise ClusterError(
                ErrorKind.UNAVAILABLE,
                f"cannot reach a swarm manager at {addr}: {_describe(e)} "
                "(check the address and that the manager's port is reachable)",
            ) from None
        try:
            return JoinResult.from_doc(doc)
        except (KeyError, ValueError, TypeError):
            raise ClusterError(
                ErrorKind.UNAVAILABLE, f"the manager at {addr} sent an incomplete join answer"
            ) from None
