"""The embedded DNS in real namespaces, checked with ping, getent and dig as containers run them."""

from __future__ import annotations

import random
import socket
import struct

import trio
from dnslib import RCODE, DNSRecord

from overlaynet.dns.server import DnsServer
from overlaynet.host.nssocket import socket_in_netns
from tests.integration.dns.nshelp import Topology, dig, run_with_resolver


async def test_ping_by_name_works_on_a_user_bridge(server: DnsServer, topology: Topology) -> None:
    done = await run_with_resolver(topology.alpine1, topology.resolv_conf, "ping -c 1 -W 2 alpine2")
    assert done.returncode == 0, done.stderr.decode()
    assert "172.18.0.3" in done.stdout.decode()


async def test_getent_resolves_container_name_and_alias(
    server: DnsServer, topology: Topology
) -> None:
    for name in ("alpine2", "db", "alpine2.alpine-net"):
        done = await run_with_resolver(
            topology.alpine1, topology.resolv_conf, f"getent hosts {name}"
        )
        assert done.returncode == 0, (name, done.stderr.decode())
        assert done.stdout.decode().split()[0] == "172.18.0.3", name


async def test_name_does_not_resolve_from_another_network(
    server: DnsServer, topology: Topology
) -> None:
    # Docker's tutorial: alpine3 on the default bridge gets "bad address" for alpine1.
    done = await run_with_resolver(topology.alpine3, topology.resolv_conf, "getent hosts alpine1")
    assert done.returncode != 0
    assert done.stdout == b""
    ping = await run_with_resolver(topology.alpine3, topology.resolv_conf, "ping -c 1 -W 1 alpine1")
    assert ping.returncode != 0
    assert b"alpine1" in ping.stderr  # ping's "name resolution" error names the host


async def test_ptr_answers_with_name_and_network(server: DnsServer, topology: Topology) -> None:
    assert (await dig(topology.alpine1, "+short", "-x", "172.18.0.3")).split() == [
        "alpine2.alpine-net."
    ]
    done = await run_with_resolver(
        topology.alpine1, topology.resolv_conf, "getent hosts 172.18.0.3"
    )
    assert "alpine2.alpine-net" in done.stdout.decode()


async def test_dig_conformance_cases(server: DnsServer, topology: Topology) -> None:
    c = topology.alpine1
    plain = await dig(c, "+noedns", "alpine2")
    assert "status: NOERROR" in plain and "OPT PSEUDOSECTION" not in plain
    edns = await dig(c, "+edns=0", "alpine2")
    assert "OPT PSEUDOSECTION" in edns and "udp: 1232" in edns
    nodata = await dig(c, "alpine2", "AAAA")
    assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata
    unknown_type = await dig(c, "alpine2", "TYPE65280")
    assert "status: NOERROR" in unknown_type and "ANSWER: 0" in unknown_type
    nxdomain = await dig(c, "nobody.alpine-net")
    assert "status: NXDOMAIN" in nxdomain
    badvers = await dig(c, "+edns=1", "+noednsnegotiation", "alpine2")
    assert "status: BADVERS" in badvers
    notimp = await dig(c, "+opcode=15", "alpine2")
    assert "status: NOTIMP" in notimp


async def test_big_answer_is_truncated_over_udp_and_complete_over_tcp(
    server: DnsServer, topology: Topology
) -> None:
    c = topology.alpine1
    truncated = await dig(c, "+ignore", "+bufsize=512", "crowd")
    assert " tc" in truncated.split("flags:")[1].split(";")[0]
    assert "ANSWER: 0" in truncated
    fits = await dig(c, "+ignore", "+bufsize=4096", "crowd")
    assert "ANSWER: 60" in fits
    tcp = await dig(c, "+tcp", "+bufsize=512", "crowd")
    assert "ANSWER: 60" in tcp
    retried = await dig(c, "+bufsize=512", "crowd")  # dig retries over TCP by itself
    assert "ANSWER: 60" in retried and "(TCP)" in retried


def _ask(sock: socket.socket, data: bytes) -> bytes:
    sock.send(data)
    return sock.recv(65535)


async def test_raw_malformed_query_gets_formerr_and_garbage_never_stops_the_server(
    server: DnsServer, topology: Topology
) -> None:
    def exchange() -> tuple[bytes, bytes]:
        sock = socket_in_netns(topology.alpine1, socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            sock.settimeout(3)
            sock.connect(("127.0.0.11", 53))
            good = bytes(DNSRecord.question("alpine2").pack())
            formerr = _ask(sock, good[:-2])  # question cut short: header still readable
            rng = random.Random(5)
            for _ in range(2000):
                size = rng.randrange(0, 600)
                sock.send(bytes(rng.getrandbits(8) for _ in range(size)))
                if rng.random() < 0.5:
                    mutated = bytearray(good)
                    mutated[rng.randrange(len(mutated))] = rng.getrandbits(8)
                    sock.send(bytes(mutated))
            # Drain whatever the garbage earned, then ask properly.
            sock.settimeout(0.5)
            try:
                while True:
                    sock.recv(65535)
            except TimeoutError:
                pass
            sock.settimeout(3)
            return formerr, _ask(sock, good)

    def tcp_garbage() -> None:
        sock = socket_in_netns(topology.alpine1, socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.connect(("127.0.0.11", 53))
            sock.sendall(b"\x00\x05hello\x00\x00\xff\xff" + b"\x13" * 300)

    formerr, after = await trio.to_thread.run_sync(exchange)
    assert DNSRecord.parse(formerr).header.rcode == RCODE.FORMERR
    await trio.to_thread.run_sync(tcp_garbage)
    reply = DNSRecord.parse(after)
    assert reply.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in reply.rr] == ["172.18.0.3"]
    assert "ANSWER: 1" in await dig(topology.alpine1, "+tcp", "alpine2")


async def test_removed_container_stops_being_served(server: DnsServer, topology: Topology) -> None:
    await server.remove_container("alpine1")
    out = await dig(topology.alpine1, "+time=1", "alpine2")
    assert "no servers could be reached" in out or "timed out" in out
    await server.add_container("alpine1", topology.alpine1)
    assert "172.18.0.3" in await dig(topology.alpine1, "+short", "alpine2")


async def test_tcp_answers_pipelined_queries_on_one_connection(
    server: DnsServer, topology: Topology
) -> None:
    # RFC 7766 §6.2.1.1: several queries may be sent before any answer arrives.
    def exchange() -> list[DNSRecord]:
        sock = socket_in_netns(topology.alpine1, socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.settimeout(3)
            sock.connect(("127.0.0.11", 53))
            wire = b""
            for i, name in enumerate(("alpine1", "alpine2", "db")):
                q = DNSRecord.question(name)
                q.header.id = 100 + i
                data = bytes(q.pack())
                wire += struct.pack("!H", len(data)) + data
            sock.sendall(wire)
            replies: list[DNSRecord] = []
            buf = b""
            while len(replies) < 3:
                buf += sock.recv(65535)
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                    (length,) = struct.unpack("!H", buf[:2])
                    replies.append(DNSRecord.parse(buf[2 : 2 + length]))
                    buf = buf[2 + length :]
            return replies

    replies = await trio.to_thread.run_sync(exchange)
    by_id = {r.header.id: [str(rr.rdata) for rr in r.rr] for r in replies}
    assert by_id == {100: ["172.18.0.2"], 101: ["172.18.0.3"], 102: ["172.18.0.3"]}


async def test_unknown_edns_options_and_flags_are_ignored(
    server: DnsServer, topology: Topology
) -> None:
    # RFC 6891 §6.1.2 / RFC 8906 §3.2.2-3.2.4: unknown options and flags do not change the answer.
    out = await dig(topology.alpine1, "+ednsopt=100:abcd", "+ednsflags=0x40", "alpine2")
    assert "status: NOERROR" in out and "172.18.0.3" in out
    flags_line = next(line for line in out.splitlines() if "EDNS: version" in line)
    assert "MBZ" not in flags_line  # unknown flags are not echoed back


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the kernel answers the server's next read with a RST."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_a_client_reset_mid_query_never_stops_the_resolver(
    server: DnsServer, topology: Topology
) -> None:
    # Reliability issue: one byte, then a reset, while the server waits for the rest of the
    # length prefix. The error arrives wrapped in the connection's nursery's exception group;
    # it must end that connection only (this test's nursery would fail otherwise).
    def hostile() -> None:
        for _ in range(20):
            sock = socket_in_netns(topology.alpine1, socket.AF_INET, socket.SOCK_STREAM)
            sock.connect(("127.0.0.11", 53))
            sock.send(b"\x00")
            _reset(sock)
        # A pipelined A + AAAA whose client goes away after the first answer.
        for _ in range(20):
            sock = socket_in_netns(topology.alpine1, socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(3)
            sock.connect(("127.0.0.11", 53))
            wire = b""
            for qtype in ("A", "AAAA"):
                data = bytes(DNSRecord.question("alpine2", qtype).pack())
                wire += struct.pack("!H", len(data)) + data
            sock.sendall(wire)
            sock.recv(2)
            _reset(sock)

    await trio.to_thread.run_sync(hostile)
    await trio.sleep(0.2)
    assert server.containers["alpine1"].stats["tcp_error"] >= 1
    assert "ANSWER: 1" in await dig(topology.alpine1, "+tcp", "alpine2")
    assert "172.18.0.3" in await dig(topology.alpine1, "+short", "alpine2")
