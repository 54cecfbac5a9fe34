"""The hot path's hand-written decoder against dnslib; the slow path's checks on top of it."""

from __future__ import annotations

import struct

import pytest
from dnslib import EDNS0, QTYPE, DNSRecord, EDNSOption
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.dns import message as m
from overlaynet.dns.parse import parse_query
from tests.unit.dns.dnshelp import query


def test_plain_query_is_read_by_the_hot_path() -> None:
    q = m.decode_plain(query("Alpine2.alpine-net", "AAAA", edns=4096))
    assert q is not None
    assert q.qname == (b"Alpine2", b"alpine-net")
    assert (q.qtype, q.qclass, q.id) == (m.TYPE_AAAA, m.CLASS_IN, 0x1234)
    assert (q.edns_udp_size, q.dnssec_ok, q.cookie) == (4096, False, None)
    assert q.udp_limit == 4096


def test_udp_limit_is_512_without_edns_and_at_least_512_with_it() -> None:
    plain = m.decode_plain(query("a"))
    small = m.decode_plain(query("a", edns=100))
    assert plain is not None and small is not None
    assert (plain.udp_limit, small.udp_limit) == (512, 512)


def _compressed_question() -> bytes:
    header = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 1)
    opt_owner_pointer = b"\xc0\x0c"  # an OPT whose owner is a pointer: legal, not plain
    question = b"\x07alpine2\x00" + struct.pack("!HH", 1, 1)
    return header + question + opt_owner_pointer + struct.pack("!HHIH", 41, 1232, 0, 0)


@pytest.mark.parametrize(
    "data",
    [
        query("alpine2", edns=1232, version=1),  # EDNS version 1: BADVERS is the slow path's
        b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",  # pointer
        query("alpine2") + b"\x00",  # trailing octet
        query("alpine2", "OPT"),
        query("a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61)[:-4],  # cut short
    ],
)
def test_unusual_queries_are_declined_not_refused(data: bytes) -> None:
    assert m.decode_plain(data) is None


def test_edns_options_and_other_opcodes_are_declined() -> None:
    q = DNSRecord.question("alpine2")
    q.add_ar(EDNS0(udp_len=1232, opts=[EDNSOption(10, b"\x01" * 8)]))
    assert m.decode_plain(bytes(q.pack())) is None
    notify = bytearray(query("alpine2"))
    notify[2] |= 4 << 3
    assert m.decode_plain(bytes(notify)) is None
    assert m.decode_plain(_compressed_question()) is None


label = st.binary(min_size=1, max_size=63).filter(lambda b: b"." not in b)
ascii_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=63)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(ascii_label, min_size=1, max_size=3),
    st.sampled_from([t for t in QTYPE.forward if t != m.TYPE_OPT]),
    st.one_of(st.none(), st.integers(0, 65535)),
    st.booleans(),
    st.integers(0, 65535),
)
def test_hot_path_decoder_agrees_with_dnslib(
    labels: list[str], qtype: int, edns: int | None, dnssec_ok: bool, qid: int
) -> None:
    q = DNSRecord.question(".".join(labels), QTYPE.get(qtype))
    q.header.id = qid
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, flags="do" if dnssec_ok else ""))
    data = bytes(q.pack())
    fast = m.decode_plain(data)
    slow = parse_query(data)
    assert fast is not None
    assert fast.id == slow.header.id == qid
    assert fast.flags == slow.header.bitmap
    assert fast.qname == slow.qname == tuple(label.encode() for label in labels)
    assert (fast.qtype, fast.qclass) == (slow.question.qtype, slow.question.qclass)
    assert fast.edns_udp_size == (None if slow.edns is None else slow.edns.udp_size)
    assert fast.dnssec_ok == (slow.edns is not None and slow.edns.dnssec_ok)


def _pointer_chain(length: int) -> bytes:
    """A query whose additional record's owner ends a chain of `length` backward pointers,
    laid out in the RDATA of an answer record before it: dnslib recurses once per pointer."""
    question = b"\x01a\x00\x00\x01\x00\x01"
    base = 12 + len(question) + 1 + 10  # the chain starts in RR1's RDATA
    chain = b"".join(
        struct.pack("!H", 0xC000 | (12 if i == 0 else base + 2 * (i - 1))) for i in range(length)
    )
    rr1 = b"\x00" + struct.pack("!HHIH", 0xFF00, 1, 0, len(chain)) + chain
    rr2 = struct.pack("!H", 0xC000 | (base + 2 * (length - 1))) + struct.pack("!HHIH", 1, 1, 0, 4)
    header = struct.pack("!HHHHHH", 1, 0x0100, 1, 1, 0, 1)
    return header + question + rr1 + rr2 + b"\x7f\x00\x00\x01"


def _must_refuse(data: bytes, reason: str) -> None:
    with pytest.raises(m.MalformedDns) as caught:
        parse_query(data)
    assert caught.value.reason == reason


def test_slow_path_follows_a_backward_pointer() -> None:
    data = query("alpine2", "A", edns=1232)
    # Point the OPT owner at the root octet that ends the question name (offset 12 + 8).
    owner_at = len(data) - 11
    pointed = data[:owner_at] + b"\xc0\x14" + data[owner_at + 1 :]
    parsed = parse_query(pointed)
    assert parsed.edns is not None and parsed.edns.udp_size == 1232


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00" * 5, "dns_short_header"),
        (query("a")[:-3], "dns_unparseable"),
        (query("a") + b"\x00", "dns_trailing_bytes"),
        (query("a", "OPT"), "dns_opt_question"),
        (b"\x00\x01\x01\x00\x00\x02" + b"\x00" * 6 + query("a")[12:] * 2, "dns_qdcount"),
        (_pointer_chain(1000), "dns_unparseable"),
    ],
)
def test_slow_path_refuses_broken_messages_with_the_planes_error(data: bytes, reason: str) -> None:
    _must_refuse(data, reason)


def test_opt_with_broken_options_is_refused() -> None:
    data = bytearray(query("a", edns=1232))
    data[-2:] = b"\x00\x03"  # RDLENGTH 3: too short for an option header
    data += b"\x00\x0a\x00"
    _must_refuse(bytes(data), "dns_bad_option")


def test_two_opt_records_are_refused() -> None:
    data = bytearray(query("alpine2", edns=1232))
    data[11] = 2
    data += data[-11:]
    _must_refuse(bytes(data), "dns_two_opt")


def test_option_without_value_is_kept() -> None:
    # An NSID request (RFC 5001 §2.3) is an option with no value; dnslib alone drops it.
    data = bytearray(query("a", edns=1232))
    data[-2:] = b"\x00\x04"
    data += b"\x00\x03\x00\x00"
    parsed = parse_query(bytes(data))
    assert parsed.edns is not None and parsed.edns.options == ((3, b""),)
