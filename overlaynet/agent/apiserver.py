"""The agent's local API server: a Unix socket, one request line per connection, typed dispatch.

A client's request can fail; it can never stop the agent. Connections are capped (the rest wait
in the listen backlog), each request line must arrive whole within a deadline, and a request
whose client has hung up is cancelled instead of running for nobody.

Attach mechanism: a client may send open file descriptors with its request line (SCM_RIGHTS,
at most `MAX_FDS`); the handler gets them with the request (`exec` runs its command on the
client's stdin, stdout and stderr), and they are closed here when the request ends.
"""

from __future__ import annotations

import array
import errno
import logging
import os
import select
import socket as stdsocket
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import trio

from overlaynet import api
from overlaynet.api import Request
from overlaynet.boundary import contained
from overlaynet.errors import InvalidArgument

log = logging.getLogger(__name__)

# One CLI command holds one connection; 64 at once is far beyond any use by hand or script,
# and bounds what a local flood can pin (issue 18: 400 idle connections held 448 MB).
MAX_CONNECTIONS = 64
# Connections past the cap wait here instead of failing with EAGAIN (issue 18: at a backlog of
# 64, 20 of 1000 concurrent clients did). The kernel caps it at net.core.somaxconn.
LISTEN_BACKLOG = 4096
# The whole request line must arrive within this (not per byte: a trickle cannot hold a slot).
# The CLI sends its line at once; ten seconds covers any loaded machine.
REQUEST_DEADLINE = 10.0
READ_CHUNK = 65536
# stdin, stdout and stderr: what `exec` attaches; more is refused (and closed).
MAX_FDS = 3

Handler = Callable[[Request, tuple[int, ...]], Awaitable[bytes]]


def bind_unix(path: Path) -> trio.socket.SocketType:
    """Listen on `path` (0660); a socket left by a dead agent is replaced, a live one refused."""
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
    sock.listen(LISTEN_BACKLOG)
    return sock


class ApiServer:
    """Serves typed requests to `handle`; `requests` maps op names to request classes."""

    def __init__(
        self,
        listener: trio.socket.SocketType,
        requests: Mapping[str, type[Request]],
        handle: Handler,
        counters: Counter[str],
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.listener = listener
        self.requests = requests
        self.handle = handle
        self.counters = counters
        self._slots = trio.Semaphore(max_connections)
        self.active = 0
        self.peak = 0

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await self._slots.acquire()
                try:
                    conn, _ = await self.listener.accept()
                except OSError as e:
                    self._slots.release()
                    if e.errno in (errno.EMFILE, errno.ENFILE):
                        self.counters["accept_no_fds"] += 1
                        await trio.sleep(0.1)
                        continue
                    raise
                except BaseException:
                    self._slots.release()
                    raise
                nursery.start_soon(self._connection, trio.SocketStream(conn))

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        fds: list[int] = []
        try:
            with contained(self.counters, "connection_errors", log, "API connection"):
                async with stream:
                    try:
                        line = await self._read_line(stream, fds)
                        reply = await self._answer(stream, line, tuple(fds))
                        if reply is not None:
                            await stream.send_all(reply)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self.counters["client_gone"] += 1
        finally:
            for fd in fds:
                os.close(fd)
            self.active -= 1
            self._slots.release()

    async def _read_line(self, stream: trio.SocketStream, fds: list[int]) -> bytes:
        """The request line; file descriptors sent with it are appended to `fds`."""
        buf = bytearray()
        sock = stream.socket
        with trio.move_on_after(REQUEST_DEADLINE) as deadline:
            while b"\n" not in buf and len(buf) <= api.MAX_REQUEST_BYTES:
                chunk, ancillary, _flags, _addr = await sock.recvmsg(
                    READ_CHUNK, stdsocket.CMSG_SPACE(MAX_FDS * array.array("i").itemsize)
                )
                fds.extend(_received_fds(ancillary))
                if not chunk:
                    break
                buf += chunk
        if deadline.cancelled_caught:
            self.counters["request_deadline"] += 1
        line = bytes(buf.split(b"\n", 1)[0])
        del buf  # a large partial request is not kept while the request runs
        return line

    async def _answer(
        self, stream: trio.SocketStream, line: bytes, fds: tuple[int, ...]
    ) -> bytes | None:
        """The reply, or None when the client hung up first (the request is then cancelled)."""
        reply: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def serve() -> None:
                reply.append(await self.dispatch(line, fds))
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                # After its line a client only waits; end of stream with the peer gone (not a
                # half-close, which still reads the reply) means nobody will read the answer.
                while await stream.receive_some(READ_CHUNK):
                    pass
                if _peer_gone(stream):
                    self.counters["requests_cancelled_client_gone"] += 1
                    nursery.cancel_scope.cancel()
                else:
                    await trio.sleep_forever()

            nursery.start_soon(serve)
            nursery.start_soon(watch)
        return reply[0] if reply else None

    async def dispatch(self, line: bytes, fds: tuple[int, ...] = ()) -> bytes:
        """One request line in, one response line out; nothing a client sends escapes this."""
        try:
            op, args = api.decode_request(line)
        except api.MalformedRequest as e:
            self.counters["malformed_requests"] += 1
            log.warning("malformed request", extra={"fields": {"error": str(e)}})
            return api.encode_error("invalid", f"malformed request: {e}")
        cls = self.requests.get(op)
        if cls is None:
            self.counters["unknown_ops"] += 1
            return api.encode_error("invalid", f"unknown operation {op!r}")
        self.counters[f"op:{op}"] += 1
        try:
            req = api.decode_args(cls, args)
        except InvalidArgument as e:
            self.counters["bad_arguments"] += 1
            return api.encode_error(e.kind, str(e))
        if len(fds) > MAX_FDS:
            self.counters["bad_arguments"] += 1
            return api.encode_error("invalid", f"at most {MAX_FDS} file descriptors per request")
        return await self.handle(req, fds)


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == stdsocket.SOL_SOCKET and kind == stdsocket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _peer_gone(stream: trio.SocketStream) -> bool:
    """POLLHUP on a Unix stream socket: the peer closed both directions (not SHUT_WR only)."""
    poller = select.poll()
    poller.register(stream.socket.fileno(), select.POLLHUP)
    return bool(poller.poll(0))
