"""Helpers for the DNS answering tests: build queries and read answers with dnslib."""

from __future__ import annotations

import ipaddress

from dnslib import EDNS0, QTYPE, DNSRecord


def ip(text: str) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(text)


def query(
    name: str, qtype: str = "A", *, edns: int | None = None, version: int = 0, id: int = 0x1234
) -> bytes:
    q = DNSRecord.question(name, qtype)
    q.header.id = id
    if edns is not None:
        q.add_ar(EDNS0(udp_len=edns, version=version))
    return bytes(q.pack())


def parse(data: object) -> DNSRecord:
    assert isinstance(data, bytes), f"expected an answer, got {data!r}"
    return DNSRecord.parse(data)


def addresses(reply: DNSRecord) -> list[str]:
    return [str(rr.rdata) for rr in reply.rr if rr.rtype == QTYPE.A]
