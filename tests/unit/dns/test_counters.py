"""The resolver's counters: queries by type and answers by rcode, prepared answers included."""

from __future__ import annotations

import random

from overlaynet.dns.answer import ContainerAnswerer, Forward, Transport
from overlaynet.dns.records import DnsTable, NameRecord, Upstream
from tests.unit.dns.dnshelp import ip, query


def test_prepared_answers_count_as_queries_and_answers(answerer: ContainerAnswerer) -> None:
    for _ in range(5):
        answerer.answer(query("alpine2"))
    for _ in range(3):
        answerer.answer(query("alpine2", "AAAA"), Transport.TCP)
    answerer.answer(query("nobody.alpine-net"))
    answerer.answer(query("example.com"))  # no upstream: SERVFAIL at once
    counts = answerer.counters()
    assert counts["queries_A"] == 7
    assert counts["queries_AAAA"] == 3
    assert counts["answers_NOERROR"] == 8
    assert counts["answers_NXDOMAIN"] == 1
    assert counts["answers_SERVFAIL"] == 1


def test_counts_survive_a_table_change(table: DnsTable, answerer: ContainerAnswerer) -> None:
    for _ in range(4):
        answerer.answer(query("alpine2"))
    table.add_record(NameRecord("net-alpine", "late", ip("172.18.0.9")))  # drops prepared answers
    answerer.answer(query("late"))
    assert answerer.counters()["queries_A"] == 5
    assert answerer.counters()["answers_NOERROR"] == 5


def test_malformed_input_is_counted_by_reason(answerer: ContainerAnswerer) -> None:
    answerer.answer(b"\x12\x34\x01")  # no header: dropped
    answerer.answer(query("alpine2") + b"\x00")  # trailing octet: FORMERR
    answerer.answer(query("alpine2") + b"\x00")  # the same again: a prepared FORMERR
    counts = answerer.counters()
    assert counts["malformed"] == 3  # a repeat is counted too, though its answer was kept
    assert counts["malformed_short_header"] == 1
    assert counts["malformed_trailing_bytes"] == 2
    assert counts["answers_FORMERR"] == 2


def test_forwards_count_their_query_type_but_no_answer_yet(table: DnsTable) -> None:
    table.set_upstreams([Upstream("192.0.2.53")])
    answerer = ContainerAnswerer(table, "alpine1", random.Random(1))
    assert isinstance(answerer.answer(query("www.example.com", "AAAA")), Forward)
    counts = answerer.counters()
    assert counts["queries_AAAA"] == 1
    assert not any(key.startswith("answers_") for key in counts)
    answerer.count("answers_NOERROR")  # the shell counts the upstream's answer when it comes
    assert answerer.counters()["answers_NOERROR"] == 1
