"""Fixtures for the DNS answering tests: a table like Docker's tutorial and an answerer over it."""

from __future__ import annotations

import random

import pytest

from overlaynet.dns.answer import ContainerAnswerer
from overlaynet.dns.records import DnsTable, NameRecord, Network, RecordKind
from tests.unit.dns.dnshelp import ip


@pytest.fixture
def table() -> DnsTable:
    """alpine1/alpine2 on alpine-net; alpine3 alone on the default bridge; `web` alias twice."""
    t = DnsTable()
    t.set_network(Network("net-alpine", "alpine-net"))
    t.set_network(Network("net-bridge", "bridge", resolves_names=False))
    t.set_network(Network("net-other", "other-net"))
    t.add_record(NameRecord("net-alpine", "alpine1", ip("172.18.0.2")))
    t.add_record(NameRecord("net-alpine", "alpine2", ip("172.18.0.3")))
    t.add_record(NameRecord("net-alpine", "0123456789ab", ip("172.18.0.3"), RecordKind.SHORT_ID))
    t.add_record(NameRecord("net-alpine", "web", ip("172.18.0.2"), RecordKind.ALIAS))
    t.add_record(NameRecord("net-alpine", "web", ip("172.18.0.3"), RecordKind.ALIAS))
    t.add_record(NameRecord("net-bridge", "alpine3", ip("172.17.0.2")))
    t.add_record(NameRecord("net-other", "hidden", ip("172.19.0.2")))
    t.attach("alpine1", "net-alpine")
    t.attach("alpine2", "net-alpine")
    t.attach("alpine3", "net-bridge")
    return t


@pytest.fixture
def answerer(table: DnsTable) -> ContainerAnswerer:
    return ContainerAnswerer(table, "alpine1", random.Random(7))
