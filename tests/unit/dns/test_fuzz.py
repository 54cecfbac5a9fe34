"""Property tests: no input stops the answering core, and a valid query right after still works.

The invariant of issue 20: for any input, an answer (or a clean FORMERR) that carries the
query's ID, a forward under the client's ID, or a drop of what is not a query; never an
exception.
"""

from __future__ import annotations

import random

from dnslib import (
    CLASS,
    EDNS0,
    QTYPE,
    RCODE,
    DNSError,
    DNSHeader,
    DNSQuestion,
    DNSRecord,
    EDNSOption,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.dns.answer import ContainerAnswerer, Forward, Transport
from overlaynet.dns.records import DnsTable, NameRecord, Network, RecordKind, Upstream
from tests.unit.dns.dnshelp import addresses, ip, parse, query


def _answerer() -> ContainerAnswerer:
    table = DnsTable()
    table.set_network(Network("n1", "alpine-net"))
    table.add_record(NameRecord("n1", "alpine2", ip("172.18.0.3")))
    table.add_record(NameRecord("n1", "web", ip("172.18.0.4"), RecordKind.ALIAS))
    table.add_record(NameRecord("n1", "web", ip("172.18.0.5"), RecordKind.ALIAS))
    table.attach("alpine1", "n1")
    table.set_upstreams([Upstream("192.0.2.53")])
    return ContainerAnswerer(table, "alpine1", random.Random(3))


# One answerer across examples, as in the server: garbage must not poison later answers.
ANSWERER = _answerer()
SEEDS = [
    query("alpine2"),
    query("web", edns=1232),
    query("3.0.18.172.in-addr.arpa", "PTR", edns=512),
    query("example.com", "AAAA"),
    query("nobody.alpine-net", "MX", edns=4096),
]


def _mutate(seed: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(seed)
    for kind, where, value in edits:
        pos = where % (len(data) + 1)
        if kind == 0 and pos < len(data):
            data[pos] = value
        elif kind == 1:
            data.insert(pos, value)
        elif kind == 2:
            del data[pos:]
        elif kind == 3 and pos < len(data):
            data[pos] ^= 1 << (value % 8)
    return bytes(data)


def _parse_clean(answer: bytes) -> DNSRecord | None:
    """The answer as dnslib reads it; None when dnslib refuses its non-UTF-8 labels, which DNS
    allows (RFC 2181 §11) and the hot path echoes. Nothing else may stop dnslib."""
    try:
        return DNSRecord.parse(answer)
    except DNSError as exc:
        assert "Invalid label" in str(exc), exc
        return None


def _check_outcome(data: bytes, transport: Transport) -> DNSRecord | None:
    """Check the invariant for `data`; return the answer, parsed, when there is one."""
    outcome = ANSWERER.answer(data, transport)
    if isinstance(outcome, bytes):
        assert len(outcome) >= 12
        assert outcome[:2] == data[:2]  # the answer carries the query's ID
        assert outcome[2] & 0x80  # and is a response
        reply = _parse_clean(outcome)  # and is clean: dnslib reads it
        if reply is None:
            return None
        if reply.header.rcode in (RCODE.FORMERR, RCODE.NOTIMP):
            assert reply.rr == [] and reply.auth == []
        return reply
    if isinstance(outcome, Forward):
        assert outcome.query == data
        assert outcome.client_id == int.from_bytes(data[:2], "big")
        servfail = _parse_clean(outcome.servfail)
        assert servfail is None or servfail.header.id == outcome.client_id
        return None
    assert outcome is None
    # Dropped only when there is nothing to answer: no header, or a response.
    assert len(data) < 12 or data[2] & 0x80
    return None


def _still_answers() -> None:
    reply = parse(ANSWERER.answer(query("alpine2", id=0x4242)))
    assert reply.header.id == 0x4242
    assert reply.header.rcode == RCODE.NOERROR
    assert addresses(reply) == ["172.18.0.3"]


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.sampled_from(list(Transport)))
def test_random_datagrams_never_break_the_answerer(data: bytes, transport: Transport) -> None:
    _check_outcome(data, transport)
    _still_answers()


@settings(max_examples=600, deadline=None)
@given(
    st.sampled_from(SEEDS),
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 600), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(list(Transport)),
)
def test_mutated_queries_never_break_the_answerer(
    seed: bytes, edits: list[tuple[int, int, int]], transport: Transport
) -> None:
    _check_outcome(_mutate(seed, edits), transport)
    _still_answers()


label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(label, min_size=1, max_size=5),
    st.sampled_from(["A", "AAAA", "PTR", "MX", "ANY", "TXT", "SRV"]),
    st.one_of(st.none(), st.integers(0, 65535)),
    st.integers(0, 65535),
)
def test_every_wellformed_query_gets_a_decodable_answer(
    labels: list[str], qtype: str, edns: int | None, qid: int
) -> None:
    name = ".".join(labels)
    data = query(name, qtype, edns=edns, id=qid)
    outcome = ANSWERER.answer(data)
    reply = DNSRecord.parse(outcome.servfail if isinstance(outcome, Forward) else outcome)
    assert reply.header.id == qid
    assert str(reply.q.qname).rstrip(".") == name
    assert (edns is not None) == bool(reply.ar)


_ALL_TYPES = sorted(QTYPE.forward)
_ALL_CLASSES = sorted(CLASS.forward)
_option = st.tuples(st.sampled_from([3, 8, 10, 11, 12, 15, 65001]), st.binary(max_size=44)).map(
    lambda o: EDNSOption(*o)
)


@st.composite
def dnslib_queries(draw: st.DrawFn) -> bytes:
    """A query as dnslib writes it: any type and class, any opcode and flags, EDNS or not."""
    name = ".".join(draw(st.lists(label, min_size=0, max_size=4))) or "."
    header = DNSHeader(
        id=draw(st.integers(0, 65535)),
        bitmap=draw(st.integers(0, 0xFFFF)) & ~0x8000,  # a query: QR clear
    )
    q = DNSRecord(
        header,
        q=DNSQuestion(name, draw(st.sampled_from(_ALL_TYPES)), draw(st.sampled_from(_ALL_CLASSES))),
    )
    if draw(st.booleans()):
        q.add_ar(
            EDNS0(
                udp_len=draw(st.integers(0, 65535)),
                version=draw(st.sampled_from([0, 0, 0, 1, 255])),
                flags=draw(st.sampled_from(["", "do"])),
                opts=draw(st.lists(_option, max_size=3)),
            )
        )
    return bytes(q.pack())


@settings(max_examples=800, deadline=None)
@given(dnslib_queries(), st.sampled_from(list(Transport)))
def test_dnslib_queries_of_every_type_get_an_answer_with_their_question(
    data: bytes, transport: Transport
) -> None:
    reply = _check_outcome(data, transport)
    _still_answers()
    if reply is None:
        return
    if not reply.questions:
        # Only a question we refuse to read (an OPT question) earns an answer without it.
        assert reply.header.rcode in (RCODE.FORMERR, RCODE.NOTIMP)
        assert DNSRecord.parse(data).q.qtype == QTYPE.OPT
    else:
        sent = DNSRecord.parse(data)
        assert reply.q.qname == sent.q.qname
        assert (reply.q.qtype, reply.q.qclass) == (sent.q.qtype, sent.q.qclass)


@settings(max_examples=800, deadline=None)
@given(
    dnslib_queries(),
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 600), st.integers(0, 255)),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from(list(Transport)),
)
def test_mutated_dnslib_queries_get_an_answer_or_a_clean_formerr(
    data: bytes, edits: list[tuple[int, int, int]], transport: Transport
) -> None:
    _check_outcome(_mutate(data, edits), transport)
    _still_answers()
