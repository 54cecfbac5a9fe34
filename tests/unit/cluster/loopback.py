"""A swarm leader served on 127.0.0.1 for tests: the harness the loopback tests share.

No root needed; every server binds a free high port.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
import trio.testing

from overlaynet.cluster import protocol
from overlaynet.cluster.client import JoinResult, ManagerClient
from overlaynet.cluster.manager import InitResult, ManagerServer
from overlaynet.cluster.state import Role
from overlaynet.cluster.store import ClusterStore

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


@dataclass
class Swarm:
    """A leader serving on loopback, and what `swarm init` printed."""

    tmp: Path
    nursery: trio.Nursery
    init: InitResult
    addr: str
    port: int
    server: ManagerServer
    scope: trio.CancelScope
    status: dict[str, str] = field(default_factory=dict)

    def client(
        self, node_id: str, credential: bytes, managers: list[str] | None = None
    ) -> ManagerClient:
        return ManagerClient(managers or [self.addr], node_id, credential, timeout=5.0)

    @property
    def leader_client(self) -> ManagerClient:
        return self.client(self.init.node_id, self.init.credential)

    async def join(self, hostname: str, addr: str, role: Role = Role.WORKER) -> JoinResult:
        token = self.init.manager_token if role is Role.MANAGER else self.init.worker_token
        return await ManagerClient.join(self.addr, token, hostname, addr)

    async def stop(self) -> None:
        self.scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        self.server.store.close()

    async def restart(self) -> None:
        store = ClusterStore(self.tmp / "leader.db")
        self.server, self.scope = await serve(self.nursery, store, self.port, self.status.get)


async def serve(
    nursery: trio.Nursery,
    store: ClusterStore,
    port: int,
    status: Callable[[str], str | None] | None = None,
    upstream: ManagerClient | None = None,
) -> tuple[ManagerServer, trio.CancelScope]:
    def node_status(node_id: str) -> str:
        return (status(node_id) if status else None) or "Ready"

    server = ManagerServer(store, HOST, port, node_status=node_status, upstream=upstream)
    scope = trio.CancelScope()

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await server.run(task_status=task_status)

    await nursery.start(run)
    return server, scope


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Send bytes as they are; the bytes of the first frame back (or all until EOF)."""
    stream = await trio.open_tcp_stream(HOST, port)
    decoder = protocol.FrameDecoder()
    async with stream:
        await stream.send_all(data)
        out = b""
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                out += chunk
                decoder.receive_data(chunk)
                if decoder.next_frame() is not None:
                    break
        return out


class _TappedStream:
    """A client's stream whose outgoing bytes are also written down."""

    def __init__(self, stream: trio.SocketStream, sent: list[bytes]) -> None:
        self._stream = stream
        self._sent = sent

    @property
    def socket(self) -> trio.socket.SocketType:
        return self._stream.socket

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self._sent.append(bytes(data))
        await self._stream.send_all(data)

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> _TappedStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class Wiretap:
    """What the cluster client sends, byte for byte, as a capture on the underlay would show it.

    Installed as the `trio` the client module sees (only its TCP connect is changed), so the
    manager and the test's own raw connections are untouched.
    """

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)

    async def open_tcp_stream(self, host: str, port: int) -> _TappedStream:
        return _TappedStream(await trio.open_tcp_stream(host, port), self.sent)

    def last(self) -> bytes:
        """The last frame a client sent (each request is one frame on its own connection)."""
        return self.sent[-1]


async def connect_from(source: str, port: int) -> trio.SocketStream:
    """A TCP connection to the manager from another loopback address (127.0.0.0/8 is all ours),
    so a test can stand for several hosts."""
    sock = trio.socket.socket()
    try:
        await sock.bind((source, 0))
        await sock.connect((HOST, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def eventually(check: Callable[[], bool], *, within: float = 10.0) -> None:
    """Wait until `check()` holds; fail after `within` seconds (a bound, not a speed claim)."""
    with trio.fail_after(within):
        while not check():
            await trio.sleep(0.02)


def frames_from(sent: list[bytes], sender: str) -> list[bytes]:
    """The frames in `sent` whose clear header names `sender` (a node id), whole and in order."""
    out = []
    for data in sent:
        decoder = protocol.FrameDecoder()
        decoder.receive_data(data)
        frame = decoder.next_frame()
        if frame is not None and frame.sender == sender:
            out.append(data)
    return out


def open_frame(data: bytes) -> protocol.Frame:
    decoder = protocol.FrameDecoder()
    decoder.receive_data(data)
    frame = decoder.next_frame()
    assert frame is not None
    return frame
