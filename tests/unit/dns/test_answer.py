"""Conformance of the answering core (RFC 1035/2308/6891/7766/8906) on a Docker-like table."""

from __future__ import annotations

import random
import struct

from dnslib import QTYPE, RCODE, DNSRecord

from overlaynet.dns.answer import ContainerAnswerer, Forward, Transport
from overlaynet.dns.records import DnsTable, NameRecord, RecordKind, Upstream
from tests.unit.dns.dnshelp import addresses, ip, parse, query


def test_container_name_resolves_on_shared_network(answerer: ContainerAnswerer) -> None:
    reply = parse(answerer.answer(query("alpine2")))
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.aa == 1
    assert addresses(reply) == ["172.18.0.3"]


def test_short_id_and_network_suffix_resolve(answerer: ContainerAnswerer) -> None:
    assert addresses(parse(answerer.answer(query("0123456789ab")))) == ["172.18.0.3"]
    assert addresses(parse(answerer.answer(query("alpine2.alpine-net")))) == ["172.18.0.3"]


def test_names_match_case_insensitively_and_question_case_is_echoed(
    answerer: ContainerAnswerer,
) -> None:
    reply = parse(answerer.answer(query("ALPine2")))
    assert addresses(reply) == ["172.18.0.3"]
    assert str(reply.q.qname) == "ALPine2."


def test_alias_answers_every_address_in_shuffled_orders(answerer: ContainerAnswerer) -> None:
    firsts = set()
    for _ in range(50):
        got = addresses(parse(answerer.answer(query("web"))))
        assert sorted(got) == ["172.18.0.2", "172.18.0.3"]
        firsts.add(got[0])
    assert firsts == {"172.18.0.2", "172.18.0.3"}


def test_name_on_unshared_network_is_not_answered_locally(table: DnsTable) -> None:
    answerer = ContainerAnswerer(table, "alpine1", random.Random(1))
    assert parse(answerer.answer(query("hidden"))).header.rcode == RCODE.SERVFAIL
    table.set_upstreams([("192.0.2.53", 53)])
    outcome = answerer.answer(query("hidden"))
    assert isinstance(outcome, Forward)
    assert parse(outcome.servfail).header.rcode == RCODE.SERVFAIL


def test_default_bridge_has_no_name_resolution(table: DnsTable) -> None:
    answerer = ContainerAnswerer(table, "alpine3", random.Random(1))
    reply = parse(answerer.answer(query("alpine3")))
    assert reply.header.rcode == RCODE.SERVFAIL
    assert addresses(reply) == []


def test_unknown_name_without_upstream_gets_immediate_servfail(
    answerer: ContainerAnswerer,
) -> None:
    reply = parse(answerer.answer(query("example.com")))
    assert reply.header.rcode == RCODE.SERVFAIL
    assert reply.header.id == 0x1234


def test_unknown_name_goes_upstream_when_there_is_one(
    table: DnsTable, answerer: ContainerAnswerer
) -> None:
    table.set_upstreams([Upstream("192.0.2.53")])
    data = query("example.com", edns=1232)
    outcome = answerer.answer(data, Transport.TCP)
    assert isinstance(outcome, Forward)
    assert outcome.query == data
    assert outcome.transport is Transport.TCP


def test_at_most_three_upstreams_are_kept(table: DnsTable) -> None:
    table.set_upstreams([(f"192.0.2.{i}", 53) for i in range(1, 6)])
    assert [u.address for u in table.upstreams] == ["192.0.2.1", "192.0.2.2", "192.0.2.3"]


def test_ptr_answers_for_known_address(answerer: ContainerAnswerer) -> None:
    reply = parse(answerer.answer(query("2.0.18.172.in-addr.arpa", "PTR")))
    assert reply.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in reply.rr] == ["alpine1.alpine-net."]


def test_ptr_prefers_container_name_over_alias_and_id(answerer: ContainerAnswerer) -> None:
    reply = parse(answerer.answer(query("3.0.18.172.in-addr.arpa", "PTR")))
    assert [str(rr.rdata) for rr in reply.rr] == ["alpine2.alpine-net."]


def test_ptr_for_unknown_address_is_not_answered_locally(answerer: ContainerAnswerer) -> None:
    assert parse(answerer.answer(query("9.0.18.172.in-addr.arpa", "PTR"))).header.rcode == (
        RCODE.SERVFAIL
    )


def test_existing_name_other_type_is_nodata(answerer: ContainerAnswerer) -> None:
    for qtype in ("AAAA", "MX", "TXT", "TYPE65280"):
        reply = parse(answerer.answer(query("alpine2", qtype)))
        assert reply.header.rcode == RCODE.NOERROR, qtype
        assert reply.rr == []


def test_any_query_gets_the_addresses(answerer: ContainerAnswerer) -> None:
    assert addresses(parse(answerer.answer(query("alpine2", "ANY")))) == ["172.18.0.3"]


def test_missing_name_below_a_network_is_nxdomain(answerer: ContainerAnswerer) -> None:
    reply = parse(answerer.answer(query("nobody.alpine-net")))
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert reply.header.aa == 1


def test_malformed_query_with_readable_header_gets_formerr(answerer: ContainerAnswerer) -> None:
    data = query("alpine2")[:-3]  # question cut short
    reply = answerer.answer(data)
    assert isinstance(reply, bytes)
    rid, flags = struct.unpack("!HH", reply[:4])
    assert rid == 0x1234
    assert flags & 0x8000 and flags & 0xF == RCODE.FORMERR


def test_trailing_bytes_get_formerr(answerer: ContainerAnswerer) -> None:
    assert parse(answerer.answer(query("alpine2") + b"\x00")).header.rcode == RCODE.FORMERR


def test_two_questions_get_formerr(answerer: ContainerAnswerer) -> None:
    q = DNSRecord.question("alpine2")
    q.add_question(DNSRecord.question("alpine1").q)
    assert parse(answerer.answer(bytes(q.pack()))).header.rcode == RCODE.FORMERR


def test_two_opt_records_get_formerr(answerer: ContainerAnswerer) -> None:
    data = bytearray(query("alpine2", edns=1232))
    data[11] = 2
    data += data[-11:]
    assert parse(answerer.answer(bytes(data))).header.rcode == RCODE.FORMERR


def test_short_datagram_and_responses_are_dropped(answerer: ContainerAnswerer) -> None:
    assert answerer.answer(b"\x12\x34\x01") is None
    response = bytearray(query("alpine2"))
    response[2] |= 0x80
    assert answerer.answer(bytes(response)) is None


def test_unknown_opcode_gets_notimp(answerer: ContainerAnswerer) -> None:
    for opcode in (1, 2, 5, 15):
        data = bytearray(query("alpine2"))
        data[2] = (data[2] & 0x87) | (opcode << 3)
        reply = parse(answerer.answer(bytes(data)))
        assert reply.header.rcode == RCODE.NOTIMP, opcode
        assert reply.header.opcode == opcode


def test_unreadable_unknown_opcode_still_gets_notimp(answerer: ContainerAnswerer) -> None:
    reply = answerer.answer(b"\x00\x07\x78\x00" + b"\x00" * 8 + b"\xff")
    assert isinstance(reply, bytes)
    assert reply[3] & 0xF == RCODE.NOTIMP


def test_edns_query_gets_opt_and_plain_query_does_not(answerer: ContainerAnswerer) -> None:
    with_edns = parse(answerer.answer(query("alpine2", edns=4096)))
    assert [rr.rtype for rr in with_edns.ar] == [QTYPE.OPT]
    assert with_edns.ar[0].edns_ver == 0
    assert parse(answerer.answer(query("alpine2"))).ar == []


def test_unknown_edns_version_gets_badvers(answerer: ContainerAnswerer) -> None:
    reply = parse(answerer.answer(query("alpine2", edns=1232, version=1)))
    opt = reply.ar[0]
    assert (opt.ttl >> 24) << 4 | reply.header.rcode == 16  # BADVERS, RFC 6891 §6.1.3
    assert opt.edns_ver == 0
    assert reply.rr == []


def _crowded_table(table: DnsTable) -> None:
    for i in range(60):
        table.add_record(NameRecord("net-alpine", "crowd", ip(f"172.18.1.{i}"), RecordKind.ALIAS))


def test_udp_answer_too_big_for_client_is_truncated(
    table: DnsTable, answerer: ContainerAnswerer
) -> None:
    _crowded_table(table)  # 60 A records: ~980 octets
    reply = parse(answerer.answer(query("crowd")))
    assert reply.header.tc == 1
    assert reply.rr == []
    small_edns = parse(answerer.answer(query("crowd", edns=600)))
    assert small_edns.header.tc == 1
    assert [rr.rtype for rr in small_edns.ar] == [QTYPE.OPT]


def test_answer_fits_in_the_clients_edns_size(table: DnsTable, answerer: ContainerAnswerer) -> None:
    _crowded_table(table)
    reply = parse(answerer.answer(query("crowd", edns=4096)))
    assert reply.header.tc == 0
    assert len(addresses(reply)) == 60


def test_tcp_answer_is_complete(table: DnsTable, answerer: ContainerAnswerer) -> None:
    _crowded_table(table)
    reply = parse(answerer.answer(query("crowd"), Transport.TCP))
    assert reply.header.tc == 0
    assert len(addresses(reply)) == 60


def test_answer_names_are_compressed(answerer: ContainerAnswerer) -> None:
    data = query("web")
    reply = answerer.answer(data)
    assert isinstance(reply, bytes)
    question_end = len(data)
    # Each answer starts with a pointer to the question name at offset 12 (RFC 1035 §4.1.4).
    assert reply[question_end : question_end + 2] == b"\xc0\x0c"
    assert len(reply) == question_end + 2 * (2 + 10 + 4)


def test_ttl_is_configurable(table: DnsTable) -> None:
    table.ttl = 1
    answerer = ContainerAnswerer(table, "alpine1", random.Random(1))
    assert [rr.ttl for rr in parse(answerer.answer(query("alpine2"))).rr] == [1]


def test_prepared_answer_gets_the_new_id(answerer: ContainerAnswerer) -> None:
    answerer.answer(query("alpine2", id=1))
    reply = parse(answerer.answer(query("alpine2", id=0xBEEF)))
    assert reply.header.id == 0xBEEF
    assert addresses(reply) == ["172.18.0.3"]


def test_table_update_replaces_prepared_answers(
    table: DnsTable, answerer: ContainerAnswerer
) -> None:
    assert addresses(parse(answerer.answer(query("alpine2")))) == ["172.18.0.3"]
    table.remove_record(NameRecord("net-alpine", "alpine2", ip("172.18.0.3")))
    table.add_record(NameRecord("net-alpine", "alpine2", ip("172.18.0.9")))
    assert addresses(parse(answerer.answer(query("alpine2")))) == ["172.18.0.9"]
    table.detach("alpine1", "net-alpine")
    assert parse(answerer.answer(query("alpine2"))).header.rcode == RCODE.SERVFAIL


def test_rd_and_cd_are_copied_and_ra_is_set(answerer: ContainerAnswerer) -> None:
    data = bytearray(query("alpine2"))
    data[2] &= ~0x01  # RD off
    data[3] |= 0x10  # CD on
    reply = parse(answerer.answer(bytes(data)))
    assert (reply.header.rd, reply.header.cd, reply.header.ra) == (0, 1, 1)
