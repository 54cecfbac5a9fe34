"""Negative answers (RFC 2308): an SOA in the authority section, with the negative TTL."""

from __future__ import annotations

import random

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from overlaynet.dns.answer import ContainerAnswerer, Forward
from overlaynet.dns.records import DnsTable, NameRecord, Upstream
from tests.unit.dns.dnshelp import ip, parse, query

NEGATIVE_CASES = [
    ("nobody.alpine-net", "A", RCODE.NXDOMAIN, "alpine-net."),
    ("nobody.alpine-net", "AAAA", RCODE.NXDOMAIN, "alpine-net."),
    ("NoBody.Alpine-Net", "MX", RCODE.NXDOMAIN, "alpine-net."),
    ("alpine2", "AAAA", RCODE.NOERROR, "alpine2."),
    ("alpine2", "MX", RCODE.NOERROR, "alpine2."),
    ("alpine2", "TXT", RCODE.NOERROR, "alpine2."),
    ("alpine2", "PTR", RCODE.NOERROR, "alpine2."),
    ("alpine2", "TYPE65280", RCODE.NOERROR, "alpine2."),
    ("alpine2.alpine-net", "AAAA", RCODE.NOERROR, "alpine-net."),
    ("web", "SRV", RCODE.NOERROR, "web."),
]


def _soa_of(reply: DNSRecord) -> tuple[int, int]:
    """The single SOA's TTL and MINIMUM; fails unless the authority section is exactly one SOA."""
    assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA], reply
    soa = reply.auth[0]
    return soa.ttl, soa.rdata.times[4]


@pytest.mark.parametrize(("name", "qtype", "rcode", "zone"), NEGATIVE_CASES)
@pytest.mark.parametrize("edns", [None, 1232])
def test_every_negative_answer_carries_the_zones_soa_with_the_negative_ttl(
    table: DnsTable, name: str, qtype: str, rcode: int, zone: str, edns: int | None
) -> None:
    table.negative_ttl = 17
    answerer = ContainerAnswerer(table, "alpine1", random.Random(1))
    for _ in range(2):  # the fresh answer, then the prepared one
        reply = parse(answerer.answer(query(name, qtype, edns=edns)))
        assert reply.header.rcode == rcode
        assert reply.header.aa == 1
        assert reply.rr == []
        assert _soa_of(reply) == (17, 17)  # RFC 2308 §5: min(TTL, MINIMUM) is the negative TTL
        assert str(reply.auth[0].rname).lower() == zone


def test_soa_serial_follows_the_table(table: DnsTable) -> None:
    answerer = ContainerAnswerer(table, "alpine1", random.Random(1))
    before = parse(answerer.answer(query("nobody.alpine-net"))).auth[0].rdata.times[0]
    table.add_record(NameRecord("net-alpine", "late", ip("172.18.0.9")))
    after = parse(answerer.answer(query("nobody.alpine-net"))).auth[0].rdata.times[0]
    assert after != before


def test_positive_answers_and_servfail_carry_no_soa(answerer: ContainerAnswerer) -> None:
    assert parse(answerer.answer(query("alpine2"))).auth == []
    assert parse(answerer.answer(query("2.0.18.172.in-addr.arpa", "PTR"))).auth == []
    servfail = parse(answerer.answer(query("example.com")))
    assert servfail.header.rcode == RCODE.SERVFAIL and servfail.auth == []


def test_aaaa_for_outside_names_is_forwarded_like_a(table: DnsTable) -> None:
    table.set_upstreams([Upstream("192.0.2.53")])
    answerer = ContainerAnswerer(table, "alpine1", random.Random(1))
    for qtype in ("A", "AAAA"):
        data = query("www.example.com", qtype, id=0x77)
        outcome = answerer.answer(data)
        assert isinstance(outcome, Forward), qtype
        assert outcome.query == data and outcome.client_id == 0x77


def test_a_dotted_container_name_never_shadows_the_network_qualified_name(
    table: DnsTable,
) -> None:
    # Reliability issue 18: a container named `alpine2.alpine-net` must not take over the
    # name of `alpine2` on `alpine-net`.
    table.add_record(NameRecord("net-alpine", "alpine2.alpine-net", ip("172.18.0.66")))
    table.add_record(NameRecord("net-alpine", "f3.alpine-net", ip("172.18.0.67")))
    answerer = ContainerAnswerer(table, "alpine1", random.Random(1))
    shadowed = parse(answerer.answer(query("alpine2.alpine-net")))
    assert [str(rr.rdata) for rr in shadowed.rr] == ["172.18.0.3"]
    # Without a qualified meaning, the dotted name is the container's, as in Docker.
    literal = parse(answerer.answer(query("f3.alpine-net")))
    assert [str(rr.rdata) for rr in literal.rr] == ["172.18.0.67"]
