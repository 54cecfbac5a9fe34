"""Property tests: no input stops the answering core, and a valid query right after still works."""

from __future__ import annotations

import random

from dnslib import RCODE, DNSRecord
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


def _check_outcome(data: bytes, transport: Transport) -> None:
    outcome = ANSWERER.answer(data, transport)
    if isinstance(outcome, bytes):
        assert len(outcome) >= 12
        assert outcome[:2] == data[:2]  # the answer carries the query's ID
        assert outcome[2] & 0x80  # and is a response
    elif isinstance(outcome, Forward):
        assert outcome.query == data
    else:
        assert outcome is None


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
