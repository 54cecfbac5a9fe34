"""Forwarding names not known locally to the host's resolvers, one after the other.

The checks are pure (`upstream_query`, `is_reply_to`, `client_reply`); `forward` is the thin trio
shell: a fresh socket and a fresh random ID per attempt (RFC 5452 §9.2), the client's transport,
a 2 s budget per upstream, and the prepared SERVFAIL when none answers usefully.

dnslib and the answering modules are imported where a reply is checked or forwarded: the agent
imports this module for `upstreams_from_resolv_conf` before it serves any container (issue 15).
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import struct
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from overlaynet.dns import message as m
from overlaynet.dns.records import MAX_UPSTREAMS, Upstream
from overlaynet.host.nssocket import socket_in_netns

if TYPE_CHECKING:
    from overlaynet.dns.answer import Forward

#: Per upstream, as the issue asks (libnetwork's external DNS timeout is of this order).
UPSTREAM_TIMEOUT = 2.0
#: For all upstreams together: answer (SERVFAIL at worst) before glibc's own 5 s timeout
#: (RES_TIMEOUT) fires, so a stub gives up at once instead of retrying the same dead path.
FORWARD_BUDGET = 4.5
#: Rcodes that say "ask someone else" rather than "this is the answer" (RFC 1035 §4.1.1).
_TRY_NEXT = frozenset({m.Rcode.SERVFAIL, m.Rcode.REFUSED, m.Rcode.NOTIMP})
_LENGTH = struct.Struct("!H")
#: Docker's embedded resolver address, never an upstream of itself.
RESOLVER_IP = "127.0.0.11"


def upstreams_from_resolv_conf(text: str) -> list[Upstream]:
    """The host's IPv4 nameservers from resolv.conf(5) text, at most `MAX_UPSTREAMS`.

    Our own resolver address is skipped (forwarding to it would loop); IPv6 ones are skipped
    because forwarding is IPv4 for now.
    """
    found: list[Upstream] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[0] != "nameserver":
            continue
        try:
            address = ipaddress.ip_address(fields[1])
        except ValueError:
            continue
        if address.version != 4 or str(address) == RESOLVER_IP:
            continue
        found.append(Upstream(str(address)))
    return found[:MAX_UPSTREAMS]


def upstream_query(query: bytes, new_id: int) -> bytes:
    """The client's query under our own ID, so a spoofer must guess it (RFC 5452 §9.2)."""
    return _LENGTH.pack(new_id) + query[2:]


def _question(data: bytes) -> tuple[tuple[bytes, ...], int, int]:
    from dnslib import DNSBuffer, DNSQuestion

    question = DNSBuffer(data)
    question.offset = m.HEADER_LEN
    try:
        parsed = DNSQuestion.parse(question)
    except Exception as exc:  # dnslib's errors, as in `parse.parse_query`
        raise m.MalformedDns("dns_unparseable", str(exc)) from None
    return tuple(label.lower() for label in parsed.qname.label), parsed.qtype, parsed.qclass


def is_reply_to(sent: bytes, reply: bytes) -> bool:
    """Is `reply` the upstream's response to `sent`: same ID, QR set, same question?"""
    from overlaynet.dns.parse import read_header

    try:
        reply_id, flags = read_header(reply)
        if reply_id != read_header(sent)[0] or not flags & m.FLAG_QR:
            return False
        if reply[4:6] != b"\x00\x01":  # RFC 9619: one question
            return False
        return _question(reply) == _question(sent)
    except m.MalformedDns:
        return False


def wants_next_upstream(reply: bytes) -> bool:
    return (reply[3] & 0xF) in _TRY_NEXT


def client_reply(reply: bytes, client_id: int) -> bytes:
    """The upstream's reply under the client's ID again."""
    return _LENGTH.pack(client_id) + reply[2:]


async def _open(kind: socket.SocketKind, netns: str | None) -> trio.socket.SocketType:
    if netns is None:
        return trio.socket.socket(socket.AF_INET, kind)
    raw = await trio.to_thread.run_sync(partial(socket_in_netns, netns, socket.AF_INET, kind))
    return trio.socket.from_stdlib_socket(raw)


async def _ask_udp(sock: trio.socket.SocketType, upstream: Upstream, sent: bytes) -> bytes:
    await sock.connect((upstream.address, upstream.port))
    await sock.send(sent)
    while True:
        reply = await sock.recv(m.TCP_LIMIT)
        if is_reply_to(sent, reply):
            return reply


async def _ask_tcp(sock: trio.socket.SocketType, upstream: Upstream, sent: bytes) -> bytes:
    await sock.connect((upstream.address, upstream.port))
    stream = trio.SocketStream(sock)
    await stream.send_all(_LENGTH.pack(len(sent)) + sent)
    buf = b""
    while True:
        if len(buf) >= 2 and len(buf) >= 2 + _LENGTH.unpack_from(buf)[0]:
            (length,) = _LENGTH.unpack_from(buf)
            reply = buf[2 : 2 + length]
            if is_reply_to(sent, reply):
                return reply
            buf = buf[2 + length :]
            continue
        chunk = await stream.receive_some(m.TCP_LIMIT)
        if not chunk:
            raise OSError("upstream closed the connection")
        buf += chunk


async def forward(
    request: Forward,
    upstreams: Sequence[Upstream],
    *,
    netns: str | None = None,
    timeout: float = UPSTREAM_TIMEOUT,
    budget: float = FORWARD_BUDGET,
    stats: Counter[str] | None = None,
) -> bytes:
    """Ask each upstream in turn; return the first useful reply under the client's ID, else
    the prepared SERVFAIL. Never raises for network trouble: every failure means "next".

    `netns` is where the forwarding sockets live: None for the agent's own namespace, where
    the host's resolvers are reachable (a container's namespace often cannot reach them).
    `stats` counts what went wrong: `upstream_timeouts` (an upstream that did not answer in
    time), `upstream_errors` (a socket error), `upstream_refusals` (SERVFAIL, REFUSED or
    NOTIMP), and `forward_failed` when no upstream answered usefully.
    """
    from overlaynet.dns.answer import Transport

    counts: Counter[str] = stats if stats is not None else Counter()
    client_id = request.client_id
    kind = socket.SOCK_DGRAM if request.transport is Transport.UDP else socket.SOCK_STREAM
    ask = _ask_udp if request.transport is Transport.UDP else _ask_tcp
    with trio.move_on_after(budget) as whole:
        for upstream in upstreams:
            sent = upstream_query(request.query, secrets.randbits(16))
            reply = None
            with trio.move_on_after(timeout) as attempt:
                try:
                    sock = await _open(kind, netns)
                    with sock:
                        reply = await ask(sock, upstream, sent)
                except OSError:
                    counts["upstream_errors"] += 1
                    continue
            if reply is None:
                if attempt.cancelled_caught:
                    counts["upstream_timeouts"] += 1
                continue
            if not wants_next_upstream(reply):
                return client_reply(reply, client_id)
            counts["upstream_refusals"] += 1
    if whole.cancelled_caught:
        counts["upstream_timeouts"] += 1
    counts["forward_failed"] += 1
    return request.servfail
