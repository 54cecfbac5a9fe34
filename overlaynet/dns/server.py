"""The embedded DNS server: 127.0.0.11:53 over UDP and TCP inside each container's namespace.

The sockets are created in the container's namespace (see `host.nssocket`) and served from the
agent's trio nursery; all answering is `ContainerAnswerer`'s, this module only moves bytes.
Garbage never stops a loop: any failure on one message is counted and the message dropped.

The answering side (`answer`, and dnslib behind it: ~1.4 MiB, issue 15) is imported with the
first container served, so an agent with no container never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import struct
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import trio

from overlaynet.boundary import contained
from overlaynet.dns import message as m
from overlaynet.dns import upstream
from overlaynet.dns.records import DnsTable
from overlaynet.host.nssocket import socket_in_netns

if TYPE_CHECKING:
    from overlaynet.dns.answer import ContainerAnswerer, Forward

#: Docker's embedded DNS address; every container's resolv.conf names it.
RESOLVER_ADDRESS = ("127.0.0.11", 53)
#: Datagrams handled per wake-up before yielding to other containers' tasks.
UDP_BATCH = 64
#: Forwards in flight per container; beyond it the client gets SERVFAIL at once (a flood of
#: unknown names must not pile up tasks and sockets).
MAX_FORWARDS = 64
#: TCP connections per container at once (RFC 7766 §6.2.2 lets a server limit them).
MAX_TCP_CONNECTIONS = 32
#: RFC 7766 §6.2.3: idle connections are closed after "on the order of seconds".
TCP_IDLE_TIMEOUT = 10.0
#: A UDP read bigger than any query we accept (RFC 6891 allows up to 65535 octets).
MAX_DATAGRAM = 65535
#: Kernel receive buffer for a container's UDP socket, to ride out bursts (bytes).
UDP_RCVBUF = 1 << 20
_LENGTH = struct.Struct("!H")
log = logging.getLogger("overlaynet.dns")

_Reply = Callable[[bytes], Awaitable[None]]
"""Sends one answer back to the client that asked, over the transport it asked on."""


@dataclass
class ContainerResolver:
    """One container's resolver: its answerer, its two sockets and what they have seen."""

    container_id: str
    answerer: ContainerAnswerer
    udp: socket.socket
    tcp: socket.socket
    stats: Counter[str] = field(default_factory=Counter)
    forwards: int = 0
    tcp_connections: int = 0
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    stopped: trio.Event = field(default_factory=trio.Event)

    def counters(self) -> Counter[str]:
        """What this resolver has seen: the answerer's counts (queries by type, answers by
        rcode, malformed by reason) and the shell's (forwarded, dropped, TCP and socket errors,
        upstream timeouts)."""
        return self.answerer.counters() + self.stats


class DnsServer:
    """Serves every container's resolver; `run` in the agent's nursery, then add containers.

    `upstream_netns` is where forwarding sockets are opened (None: the agent's own namespace).
    """

    def __init__(
        self,
        table: DnsTable,
        *,
        upstream_netns: str | None = None,
        address: tuple[str, int] = RESOLVER_ADDRESS,
        rng: random.Random | None = None,
        upstream_timeout: float = upstream.UPSTREAM_TIMEOUT,
    ) -> None:
        self.table = table
        self.upstream_netns = upstream_netns
        self.address = address
        self.upstream_timeout = upstream_timeout
        self._rng = rng if rng is not None else random.Random(os.urandom(16))
        self._nursery: trio.Nursery | None = None
        self.containers: dict[str, ContainerResolver] = {}
        #: Counters of resolvers already removed, so the totals never go backwards.
        self._retired: Counter[str] = Counter()

    def counters(self) -> dict[str, int]:
        """Every resolver's counters summed, including those of containers since removed: for
        the agent's `info` and the metrics export. Keys: `queries_<TYPE>`, `answers_<RCODE>`,
        `forwarded`, `upstream_timeouts`, `forward_failed`, `malformed` (and `malformed_<why>`),
        `dropped`, `tcp_error`, and the socket errors."""
        total = Counter(self._retired)
        for resolver in self.containers.values():
            total.update(resolver.counters())
        return dict(total)

    def container_counters(self, container_id: str) -> dict[str, int]:
        """One container's resolver counters (empty when it is not served)."""
        resolver = self.containers.get(container_id)
        return {} if resolver is None else dict(resolver.counters())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the per-container tasks until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None

    async def add_container(self, container_id: str, netns: str | int) -> ContainerResolver:
        """Bind the resolver address (UDP and TCP) in `netns` and start answering there.

        `netns` is a name under /run/netns, a pid, or a path such as /proc/PID/ns/net. A
        container already served is restarted on the new namespace.
        """
        if self._nursery is None:
            raise RuntimeError("DnsServer.run() is not running")
        if container_id in self.containers:
            await self.remove_container(container_id)
        udp = await trio.to_thread.run_sync(
            partial(socket_in_netns, netns, socket.AF_INET, socket.SOCK_DGRAM, bind=self.address)
        )
        try:
            tcp = await trio.to_thread.run_sync(
                partial(
                    socket_in_netns,
                    netns,
                    socket.AF_INET,
                    socket.SOCK_STREAM,
                    bind=self.address,
                    listen=MAX_TCP_CONNECTIONS,
                    reuse_address=True,
                )
            )
        except BaseException:
            udp.close()
            raise
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
        udp.setblocking(False)
        from overlaynet.dns.answer import ContainerAnswerer

        answerer = ContainerAnswerer(self.table, container_id, self._rng)
        resolver = ContainerResolver(container_id, answerer, udp, tcp)
        self.containers[container_id] = resolver
        await self._nursery.start(self._serve, resolver)
        return resolver

    async def remove_container(self, container_id: str) -> None:
        """Stop answering for the container and close its sockets (idempotent)."""
        resolver = self.containers.pop(container_id, None)
        if resolver is None:
            return
        resolver.scope.cancel()
        await resolver.stopped.wait()
        self._retired.update(resolver.counters())

    async def _serve(
        self, resolver: ContainerResolver, *, task_status: trio.TaskStatus[None]
    ) -> None:
        tcp = trio.socket.from_stdlib_socket(resolver.tcp)
        try:
            with resolver.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_udp, resolver, nursery)
                    nursery.start_soon(self._serve_tcp, resolver, tcp, nursery)
                    task_status.started()
        finally:
            resolver.udp.close()
            tcp.close()
            resolver.stopped.set()

    # -- UDP ------------------------------------------------------------------------------

    async def _serve_udp(self, resolver: ContainerResolver, nursery: trio.Nursery) -> None:
        # The hot loop: plain non-blocking calls on the stdlib socket, draining a batch per
        # wake-up; trio is only asked to wait when the socket is empty.
        from overlaynet.dns.answer import Transport

        sock = resolver.udp
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        answer = resolver.answerer.answer
        stats = resolver.stats
        udp = Transport.UDP
        while True:
            await trio.lowlevel.wait_readable(sock)
            for _ in range(UDP_BATCH):
                try:
                    data, peer = recvfrom(MAX_DATAGRAM)
                except BlockingIOError:
                    break
                except OSError:
                    stats["udp_recv_error"] += 1
                    continue
                try:
                    out = answer(data, udp)
                except Exception:
                    stats["answer_error"] += 1
                    continue
                if out is None:
                    stats["dropped"] += 1
                elif isinstance(out, bytes):
                    try:
                        sendto(out, peer)
                    except OSError:
                        stats["udp_send_error"] += 1
                else:
                    self._start_forward(
                        resolver, nursery, out, partial(self._reply_udp, sock, peer)
                    )
            else:
                await trio.lowlevel.checkpoint()

    @staticmethod
    async def _reply_udp(sock: socket.socket, peer: tuple[str, int], data: bytes) -> None:
        with contextlib.suppress(OSError):
            sock.sendto(data, peer)

    # -- forwarding -------------------------------------------------------------------------

    def _start_forward(
        self,
        resolver: ContainerResolver,
        nursery: trio.Nursery,
        request: Forward,
        reply: _Reply,
    ) -> None:
        if resolver.forwards >= MAX_FORWARDS:
            resolver.stats["forward_overflow"] += 1
            resolver.answerer.count("answers_SERVFAIL")
            nursery.start_soon(reply, request.servfail)
            return
        resolver.forwards += 1
        resolver.stats["forwarded"] += 1
        nursery.start_soon(self._forward, resolver, request, reply)

    async def _forward(self, resolver: ContainerResolver, request: Forward, reply: _Reply) -> None:
        from overlaynet.dns.answer import rcode_name, rcode_of

        try:
            with contained(resolver.stats, "forward_error", log, "DNS forward"):
                answer = await upstream.forward(
                    request,
                    self.table.upstreams,
                    netns=self.upstream_netns,
                    timeout=self.upstream_timeout,
                    stats=resolver.stats,
                )
                resolver.answerer.count("answers_" + rcode_name(rcode_of(answer)))
                await reply(answer)
        finally:
            resolver.forwards -= 1

    # -- TCP (RFC 7766) -----------------------------------------------------------------------

    async def _serve_tcp(
        self, resolver: ContainerResolver, listener: trio.socket.SocketType, nursery: trio.Nursery
    ) -> None:
        while True:
            try:
                conn, _peer = await listener.accept()
            except OSError:
                resolver.stats["tcp_accept_error"] += 1
                await trio.sleep(0.01)
                continue
            if resolver.tcp_connections >= MAX_TCP_CONNECTIONS:
                resolver.stats["tcp_overflow"] += 1
                conn.close()
                continue
            resolver.tcp_connections += 1
            nursery.start_soon(self._serve_connection, resolver, conn)

    async def _serve_connection(
        self, resolver: ContainerResolver, conn: trio.socket.SocketType
    ) -> None:
        stream = trio.SocketStream(conn)
        send_lock = trio.Lock()

        async def send(data: bytes) -> None:
            async with send_lock:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await stream.send_all(_LENGTH.pack(len(data)) + data)

        try:
            # One client's connection ends here whatever happens in it (a reset while a
            # forward is pending arrives wrapped in an exception group): never the resolver.
            with contained(resolver.stats, "tcp_error", log, "DNS TCP connection"):
                async with stream, trio.open_nursery() as pending:
                    await self._tcp_pipeline(resolver, stream, pending, send)
        finally:
            resolver.tcp_connections -= 1

    async def _tcp_pipeline(
        self,
        resolver: ContainerResolver,
        stream: trio.SocketStream,
        pending: trio.Nursery,
        send: _Reply,
    ) -> None:
        from overlaynet.dns.answer import Transport

        buf = b""
        while True:
            while len(buf) >= 2 and len(buf) >= 2 + _LENGTH.unpack_from(buf)[0]:
                (length,) = _LENGTH.unpack_from(buf)
                data, buf = buf[2 : 2 + length], buf[2 + length :]
                try:
                    out = resolver.answerer.answer(data, Transport.TCP)
                except Exception:
                    resolver.stats["answer_error"] += 1
                    continue
                if out is None:
                    resolver.stats["dropped"] += 1
                elif isinstance(out, bytes):
                    await send(out)
                else:
                    self._start_forward(resolver, pending, out, send)
            with trio.move_on_after(TCP_IDLE_TIMEOUT) as idle:
                chunk = await stream.receive_some(m.TCP_LIMIT)
            if idle.cancelled_caught:
                resolver.stats["tcp_idle_closed"] += 1
                return
            if not chunk:
                return
            buf += chunk
