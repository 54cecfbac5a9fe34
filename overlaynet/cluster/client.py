"""Talking to swarm managers on tcp/2377 (trio): joining a swarm, then authenticated requests.

One TCP connection per request: requests are rare (a container start, a CLI command) and a fresh
connection never carries a half-read frame from a timed-out exchange into the next one.
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
from overlaynet.cluster.protocol import FrameDecoder, FrameKind, MalformedFrame
from overlaynet.cluster.state import MANAGER_PORT, ClusterError, ErrorKind, Role
from overlaynet.cluster.tokens import BadToken, RandomBytes

# Per manager: a LAN round trip is well under a millisecond and a request is one SQLite commit;
# 2 s leaves room for a busy manager yet lets a client move on to the next one quickly.
CALL_TIMEOUT = 2.0
# `swarm join` is typed by a person who waits; give a slow first connection more time.
JOIN_TIMEOUT = 5.0
_RECV_BYTES = 65536


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


async def _exchange(
    addr: str, make_frame: Sealer, key: bytes, rid: str, *, now: Callable[[], float]
) -> Any:
    """Connect to `addr`, send the frame sealed for it, and return the result of its response."""
    host, port = split_addr(addr)
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        # Bound to the address really reached (a name resolves to one of several): the manager
        # compares it with its own socket's.
        await stream.send_all(make_frame(protocol.peer_name(stream.socket.getpeername())))
        decoder = FrameDecoder()
        while True:
            chunk = await stream.receive_some(_RECV_BYTES)
            if not chunk:
                raise MalformedFrame("the manager closed the connection without answering")
            decoder.receive_data(chunk)
            frame = decoder.next_frame()
            if frame is not None:
                return protocol.open_response(frame, key, rid, now=now())


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
    ) -> None:
        self.managers = list(managers)
        self.node_id = node_id
        self.timeout = timeout
        self._key = protocol.derive_node_key(credential, node_id)
        self._clock = clock
        self._rand = rand

    def towards(self, managers: Sequence[str]) -> ManagerClient:
        """The same node's client, sent to other managers (a follower to the Raft leader)."""
        other = copy.copy(self)
        other.managers = list(managers)
        return other

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
                    return await _exchange(addr, sealed, self._key, rid, now=self._clock)
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
