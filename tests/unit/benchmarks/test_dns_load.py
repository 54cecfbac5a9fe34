"""The DNS server and answer check of benchmarks/dns_load.py (also the tunnel-in-tunnel test's
server): sans-IO, no root."""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

import pytest
from dnslib import QTYPE, RCODE, DNSError, DNSRecord
from hypothesis import given
from hypothesis import strategies as st

# benchmarks/ is a directory of scripts, not a package: its modules import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
dns_load = importlib.import_module("dns_load")

INDEX = st.integers(min_value=0, max_value=dns_load.MAX_COUNT - 1)


@given(INDEX)
def test_every_query_gets_the_address_written_in_its_name(i: int) -> None:
    reply = DNSRecord.parse(dns_load.answer(dns_load.query(i)))
    assert reply.header.id == i & 0xFFFF
    assert dns_load.correct(reply, i)
    assert str(reply.rr[0].rdata) == dns_load.address_in(dns_load.name_for(i))


@given(INDEX, INDEX)
def test_an_answer_to_another_query_is_not_correct(i: int, j: int) -> None:
    reply = DNSRecord.parse(dns_load.answer(dns_load.query(i)))
    assert dns_load.correct(reply, j) == (dns_load.name_for(i) == dns_load.name_for(j))


def test_distinct_queries_have_distinct_names() -> None:
    names = {dns_load.name_for(i) for i in range(dns_load.MAX_COUNT)}
    assert len(names) == dns_load.MAX_COUNT


@pytest.mark.parametrize("name", ["www.mx.test", "10-1-2.mx.test", "10-1-2-300.mx.test"])
def test_other_names_are_nxdomain(name: str) -> None:
    reply = DNSRecord.parse(dns_load.answer(bytes(DNSRecord.question(name, "A").pack())))
    assert reply.header.rcode == RCODE.NXDOMAIN and not reply.rr


def test_other_types_of_an_address_name_are_empty() -> None:
    query = bytes(DNSRecord.question("10-1-2-3.mx.test", "AAAA").pack())
    reply = DNSRecord.parse(dns_load.answer(query))
    assert reply.header.rcode == RCODE.NOERROR and not reply.rr
    assert reply.q.qtype == QTYPE.AAAA


@given(st.binary(max_size=40))
def test_garbage_raises_what_the_server_counts(data: bytes) -> None:
    """Anything else would end the server's loop instead of being counted."""
    with contextlib.suppress(DNSError, ValueError, IndexError):
        dns_load.answer(data)
