"""EDNS options through the slow path: cookies (RFC 7873), NSID and unknown options, DO."""

from __future__ import annotations

import random

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSRecord, EDNSOption

from overlaynet.dns import cookies
from overlaynet.dns.answer import ContainerAnswerer
from overlaynet.dns.parse import OPTION_COOKIE
from overlaynet.dns.records import DnsTable
from tests.unit.dns.dnshelp import addresses, parse

SECRET = b"k" * 16
CLIENT = bytes.fromhex("0102030405060708")


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _answerer(table: DnsTable, clock: Clock) -> ContainerAnswerer:
    return ContainerAnswerer(table, "alpine1", random.Random(1), clock=clock, cookie_secret=SECRET)


def _query(name: str, *options: tuple[int, bytes], qtype: str = "A", do: bool = False) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = 0x5151
    q.add_ar(
        EDNS0(
            udp_len=1232,
            flags="do" if do else "",
            opts=[EDNSOption(code, value) for code, value in options],
        )
    )
    return bytes(q.pack())


def _cookie(reply: DNSRecord) -> bytes:
    (opt,) = [rr for rr in reply.ar if rr.rtype == QTYPE.OPT]
    (value,) = [o.data for o in opt.rdata if o.code == OPTION_COOKIE]
    return bytes(value)


def test_client_cookie_gets_the_answer_and_a_server_cookie(table: DnsTable) -> None:
    answerer = _answerer(table, Clock(1_800_000_000))
    reply = parse(answerer.answer(_query("alpine2", (OPTION_COOKIE, CLIENT))))
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.id == 0x5151
    assert addresses(reply) == ["172.18.0.3"]
    cookie = _cookie(reply)
    assert cookie[:8] == CLIENT  # RFC 7873 §5.2.3: the client cookie comes back
    server = cookie[8:]
    assert len(server) == 16  # RFC 9018 §4: version, reserved, timestamp, hash
    assert server[0] == 1 and server[1:4] == b"\x00\x00\x00"
    assert int.from_bytes(server[4:8], "big") == 1_800_000_000
    assert server == cookies.server_cookie(CLIENT, SECRET, 1_800_000_000)


def test_full_cookie_is_answered_with_a_fresh_server_cookie(table: DnsTable) -> None:
    clock = Clock(1_800_000_000)
    answerer = _answerer(table, clock)
    first = _cookie(parse(answerer.answer(_query("alpine2", (OPTION_COOKIE, CLIENT)))))
    clock.now += 60
    again = parse(answerer.answer(_query("alpine2", (OPTION_COOKIE, first))))
    assert addresses(again) == ["172.18.0.3"]
    # Not a prepared answer: the timestamp moved on with the clock.
    assert _cookie(again)[:8] == CLIENT
    assert int.from_bytes(_cookie(again)[12:16], "big") == 1_800_000_060


def test_cookies_come_back_on_negative_answers_too(table: DnsTable) -> None:
    answerer = _answerer(table, Clock(1_800_000_000))
    reply = parse(answerer.answer(_query("nobody.alpine-net", (OPTION_COOKIE, CLIENT))))
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert [rr.rtype for rr in reply.auth] == [QTYPE.SOA]
    assert _cookie(reply)[:8] == CLIENT


def test_cookie_of_a_wrong_length_gets_formerr_with_opt(table: DnsTable) -> None:
    answerer = _answerer(table, Clock(0))
    for bad in (b"\x01" * 7, b"\x01" * 9, b"\x01" * 15, b"\x01" * 41):
        reply = parse(answerer.answer(_query("alpine2", (OPTION_COOKIE, bad))))
        assert reply.header.rcode == RCODE.FORMERR, len(bad)
        assert [rr.rtype for rr in reply.ar] == [QTYPE.OPT]  # RFC 6891 §7
    assert answerer.counters()["malformed_bad_cookie"] == 4


def test_nsid_and_unknown_options_are_ignored(table: DnsTable) -> None:
    answerer = _answerer(table, Clock(0))
    for options in ([(3, b"")], [(65001, b"\xde\xad")], [(3, b""), (12, b"\x00" * 8)]):
        reply = parse(answerer.answer(_query("alpine2", *options)))
        assert reply.header.rcode == RCODE.NOERROR, options
        assert addresses(reply) == ["172.18.0.3"]
        (opt,) = reply.ar
        assert opt.rdata == []  # RFC 6891 §6.1.2: options we do not know are not echoed


def test_dnssec_ok_is_copied(table: DnsTable) -> None:
    answerer = _answerer(table, Clock(0))
    for options in ((), ((OPTION_COOKIE, CLIENT),)):
        reply = parse(answerer.answer(_query("alpine2", *options, do=True)))
        assert reply.ar[0].ttl & 0x8000, options  # RFC 3225 §3
        plain = parse(answerer.answer(_query("alpine2", *options)))
        assert not plain.ar[0].ttl & 0x8000, options


def test_compressed_question_name_is_answered(answerer: ContainerAnswerer) -> None:
    # The OPT owner points at the root octet ending the question: legal, rare, slow path.
    data = bytearray(_query("alpine2"))
    owner_at = len(data) - 11
    data[owner_at : owner_at + 1] = b"\xc0\x14"
    reply = parse(answerer.answer(bytes(data)))
    assert reply.header.rcode == RCODE.NOERROR
    assert addresses(reply) == ["172.18.0.3"]


def test_records_in_a_query_are_read_and_ignored(answerer: ContainerAnswerer) -> None:
    # Unusual but well-formed (RFC 1035 §4.1: any section may hold records): the slow path
    # reads them with dnslib and answers the question.
    q = DNSRecord.question("alpine2")
    q.header.id = 0x2222
    q.add_answer(*RR.fromZone("alpine2. 60 IN A 10.9.9.9"))
    q.add_auth(*RR.fromZone("alpine-net. 60 IN NS ns.alpine-net."))
    q.add_ar(*RR.fromZone("extra. 60 IN TXT hello"))
    reply = parse(answerer.answer(bytes(q.pack())))
    assert reply.header.id == 0x2222
    assert reply.header.rcode == RCODE.NOERROR
    assert addresses(reply) == ["172.18.0.3"]


def test_unusual_class_is_not_answered_from_the_table(answerer: ContainerAnswerer) -> None:
    # CHAOS `alpine2` is not the container (RFC 1035 §3.2.4): not ours, SERVFAIL without upstream.
    q = DNSRecord.question("alpine2", "A", "CH")
    reply = parse(answerer.answer(bytes(q.pack())))
    assert reply.header.rcode == RCODE.SERVFAIL
    assert reply.rr == []
