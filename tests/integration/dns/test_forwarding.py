"""Forwarding unknown names to upstream resolvers that the test runs in its own namespace."""

from __future__ import annotations

import socket
import struct

import trio
from dnslib import QTYPE, RR, A, DNSRecord

from overlaynet.dns.records import DnsTable, Upstream
from overlaynet.dns.server import DnsServer
from overlaynet.host.nssocket import socket_in_netns
from tests.integration.dns.nshelp import PREFIX, Topology, dig, run_with_resolver, sh

#: The fake upstream's answer: a documentation address (RFC 5737), never contacted.
UPSTREAM_ANSWER = "192.0.2.77"


def _upstream_reply(data: bytes) -> bytes:
    query = DNSRecord.parse(data)
    reply = query.reply()
    if query.q.qtype == QTYPE.A and str(query.q.qname).startswith("www."):
        reply.add_answer(RR(query.q.qname, QTYPE.A, rdata=A(UPSTREAM_ANSWER), ttl=30))
    else:
        reply.header.rcode = 3  # NXDOMAIN
    return bytes(reply.pack())


async def _serve_upstream(netns: str, port: int, *, task_status: trio.TaskStatus[None]) -> None:
    udp = await trio.to_thread.run_sync(
        lambda: socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM, bind=("127.0.0.1", port))
    )
    tcp = await trio.to_thread.run_sync(
        lambda: socket_in_netns(
            netns, socket.AF_INET, socket.SOCK_STREAM, bind=("127.0.0.1", port), listen=8
        )
    )
    usock = trio.socket.from_stdlib_socket(udp)
    tsock = trio.socket.from_stdlib_socket(tcp)

    async def udp_loop() -> None:
        while True:
            data, peer = await usock.recvfrom(65535)
            await usock.sendto(_upstream_reply(data), peer)

    async def tcp_loop() -> None:
        while True:
            conn, _ = await tsock.accept()
            with conn:
                head = await conn.recv(2)
                (length,) = struct.unpack("!H", head)
                data = b""
                while len(data) < length:
                    data += await conn.recv(length - len(data))
                out = _upstream_reply(data)
                await conn.send(struct.pack("!H", len(out)) + out)

    with usock, tsock:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(udp_loop)
            nursery.start_soon(tcp_loop)
            task_status.started()


async def _forwarding_server(
    nursery: trio.Nursery, table: DnsTable, topology: Topology, netns_factory: list[str]
) -> DnsServer:
    upstream_ns = PREFIX + "up"
    sh("ip", "netns", "add", upstream_ns)
    netns_factory.append(upstream_ns)
    sh("ip", "-n", upstream_ns, "link", "set", "lo", "up")
    await nursery.start(_serve_upstream, upstream_ns, 5353)
    # First upstream: nothing listens there (port unreachable), so the second one must answer.
    table.set_upstreams([Upstream("127.0.0.1", 5300), Upstream("127.0.0.1", 5353)])
    dns = DnsServer(table, upstream_netns=upstream_ns, upstream_timeout=1.0)
    await nursery.start(dns.run)
    await dns.add_container("alpine1", topology.alpine1)
    await dns.add_container("alpine3", topology.alpine3)
    return dns


async def test_unknown_names_are_forwarded_over_udp_and_tcp(
    nursery: trio.Nursery, table: DnsTable, topology: Topology, netns_factory: list[str]
) -> None:
    dns = await _forwarding_server(nursery, table, topology, netns_factory)
    assert (await dig(topology.alpine1, "+short", "www.example.test")).split() == [UPSTREAM_ANSWER]
    assert (await dig(topology.alpine1, "+short", "+tcp", "www.example.test")).split() == [
        UPSTREAM_ANSWER
    ]
    nx = await dig(topology.alpine1, "nothing.example.test")
    assert "status: NXDOMAIN" in nx
    counts = dns.counters()
    assert counts["forwarded"] == 3
    assert counts["answers_NOERROR"] == 2 and counts["answers_NXDOMAIN"] == 1
    # Local names still come from the table, not from upstream.
    assert (await dig(topology.alpine1, "+short", "alpine2")).split() == ["172.18.0.3"]


async def test_default_bridge_container_reaches_upstream_names_but_not_peers(
    nursery: trio.Nursery, table: DnsTable, topology: Topology, netns_factory: list[str]
) -> None:
    await _forwarding_server(nursery, table, topology, netns_factory)
    rc = topology.resolv_conf
    web = await run_with_resolver(topology.alpine3, rc, "getent hosts www.example.test")
    assert web.stdout.decode().split()[0] == UPSTREAM_ANSWER
    peer = await run_with_resolver(topology.alpine3, rc, "getent hosts alpine1")
    assert peer.returncode != 0


async def test_servfail_when_no_upstream_answers(
    nursery: trio.Nursery, table: DnsTable, topology: Topology, netns_factory: list[str]
) -> None:
    upstream_ns = PREFIX + "up"
    sh("ip", "netns", "add", upstream_ns)
    netns_factory.append(upstream_ns)
    sh("ip", "-n", upstream_ns, "link", "set", "lo", "up")
    # One upstream swallows queries and never answers (the timeout path), one port is closed.
    silent = await trio.to_thread.run_sync(
        lambda: socket_in_netns(upstream_ns, bind=("127.0.0.1", 53))
    )
    with silent:
        silent.settimeout(5)
        table.set_upstreams([Upstream("127.0.0.1", 53), Upstream("127.0.0.1", 54)])
        dns = DnsServer(table, upstream_netns=upstream_ns, upstream_timeout=0.5)
        await nursery.start(dns.run)
        await dns.add_container("alpine1", topology.alpine1)
        out = await dig(topology.alpine1, "+nocookie", "www.example.test")
        assert "status: SERVFAIL" in out
        assert silent.recv(512)  # the silent upstream was asked
        counts = dns.counters()
        assert counts["forwarded"] == 1
        assert counts["upstream_timeouts"] == 1  # the silent one
        assert counts["upstream_errors"] == 1  # the closed port (ICMP unreachable)
        assert counts["forward_failed"] == 1
        assert counts["answers_SERVFAIL"] == 1
