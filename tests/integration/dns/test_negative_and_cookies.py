"""dig as the oracle for what issue 20 added: SOA on negative answers, cookies, and counters."""

from __future__ import annotations

import socket
import struct

import trio

from overlaynet.dns.server import DnsServer
from overlaynet.host.nssocket import socket_in_netns
from tests.integration.dns.nshelp import Topology, dig


def _authority(out: str) -> list[list[str]]:
    """The records of dig's AUTHORITY SECTION, split into fields."""
    lines = out.split(";; AUTHORITY SECTION:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    return [line.split() for line in lines if line and not line.startswith(";")]


async def test_negative_answers_carry_the_soa_with_the_negative_ttl(
    server: DnsServer, topology: Topology
) -> None:
    server.table.negative_ttl = 9
    server.table.generation += 1  # as any table change does: prepared answers are rebuilt
    nxdomain = await dig(topology.alpine1, "nobody.alpine-net")
    assert "status: NXDOMAIN" in nxdomain
    ((owner, ttl, _in, rtype, *_names, minimum),) = _authority(nxdomain)
    assert (owner, ttl, rtype, minimum) == ("alpine-net.", "9", "SOA", "9")
    nodata = await dig(topology.alpine1, "+nocookie", "alpine2", "AAAA")
    assert "status: NOERROR" in nodata and "ANSWER: 0" in nodata
    ((owner, ttl, _in, rtype, *_names, minimum),) = _authority(nodata)
    assert (owner, ttl, rtype, minimum) == ("alpine2.", "9", "SOA", "9")


async def test_dig_accepts_our_server_cookie(server: DnsServer, topology: Topology) -> None:
    out = await dig(topology.alpine1, "+cookie", "alpine2")
    assert "status: NOERROR" in out and "172.18.0.3" in out
    cookie_line = next(line for line in out.splitlines() if line.startswith("; COOKIE:"))
    assert cookie_line.endswith("(good)"), cookie_line  # dig checked our echo of its cookie
    assert len(cookie_line.split()[2]) == 2 * (8 + 16)  # client cookie + RFC 9018 server cookie
    tcp = await dig(topology.alpine1, "+tcp", "+cookie", "alpine2")
    assert "(good)" in tcp and "172.18.0.3" in tcp


async def test_counters_sum_every_resolver(server: DnsServer, topology: Topology) -> None:
    before = server.counters()
    for _ in range(3):
        assert "172.18.0.3" in await dig(topology.alpine1, "+short", "alpine2")
    assert "172.18.0.2" in await dig(topology.alpine2, "+short", "alpine1")
    await dig(topology.alpine2, "nobody.alpine-net", "AAAA")

    def reset_mid_query() -> None:
        sock = socket_in_netns(topology.alpine1, socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(("127.0.0.11", 53))
        sock.send(b"\x00")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    await trio.to_thread.run_sync(reset_mid_query)
    await trio.sleep(0.2)
    after = server.counters()

    def grew(key: str) -> int:
        return after.get(key, 0) - before.get(key, 0)

    assert grew("queries_A") == 4
    assert grew("queries_AAAA") == 1
    assert grew("answers_NOERROR") == 4
    assert grew("answers_NXDOMAIN") == 1
    assert grew("tcp_error") == 1
    assert server.container_counters("alpine2")["queries_A"] >= 1
    # A removed container's counts stay in the totals.
    await server.remove_container("alpine2")
    assert server.counters()["queries_A"] == after["queries_A"]
