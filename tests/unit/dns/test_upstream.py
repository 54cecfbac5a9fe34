"""The pure checks around forwarding: our own IDs upstream, and only matching replies accepted."""

from __future__ import annotations

from dnslib import DNSRecord

from overlaynet.dns.upstream import (
    client_reply,
    is_reply_to,
    upstream_query,
    upstreams_from_resolv_conf,
    wants_next_upstream,
)
from tests.unit.dns.dnshelp import query


def _reply_to(data: bytes, rcode: int = 0) -> bytes:
    reply = DNSRecord.parse(data).reply()
    reply.header.rcode = rcode
    return bytes(reply.pack())


def test_upstream_query_carries_our_id_and_the_rest_unchanged() -> None:
    sent = upstream_query(query("www.example.test", id=0x1111), 0xABCD)
    assert sent[:2] == b"\xab\xcd"
    assert sent[2:] == query("www.example.test", id=0x1111)[2:]


def test_reply_with_other_id_or_question_is_not_accepted() -> None:
    sent = query("www.example.test", id=7)
    assert is_reply_to(sent, _reply_to(sent))
    assert not is_reply_to(sent, _reply_to(query("www.example.test", id=8)))
    assert not is_reply_to(sent, _reply_to(query("other.example.test", id=7)))
    assert not is_reply_to(sent, _reply_to(query("www.example.test", "AAAA", id=7)))
    assert not is_reply_to(sent, sent)  # a query, not a response
    assert not is_reply_to(sent, b"\x00\x07\x80")


def test_reply_question_matches_case_insensitively() -> None:
    sent = query("WWW.Example.test", id=7)
    assert is_reply_to(sent, _reply_to(query("www.example.TEST", id=7)))


def test_servfail_and_refused_ask_the_next_upstream() -> None:
    sent = query("www.example.test")
    assert wants_next_upstream(_reply_to(sent, 2))
    assert wants_next_upstream(_reply_to(sent, 5))
    assert not wants_next_upstream(_reply_to(sent, 3))  # NXDOMAIN is an answer
    assert not wants_next_upstream(_reply_to(sent, 0))


def test_client_gets_its_own_id_back() -> None:
    reply = _reply_to(query("www.example.test", id=0xABCD))
    assert client_reply(reply, 0x1234)[:2] == b"\x12\x34"
    assert client_reply(reply, 0x1234)[2:] == reply[2:]


def test_upstreams_from_resolv_conf_keeps_three_ipv4_and_skips_ourselves() -> None:
    text = """# generated
search example.test
nameserver 127.0.0.11
nameserver 10.0.0.53
nameserver 2001:db8::53
nameserver not-an-address
nameserver 10.0.0.54
nameserver 10.0.0.55
nameserver 10.0.0.56
"""
    assert [u.address for u in upstreams_from_resolv_conf(text)] == [
        "10.0.0.53",
        "10.0.0.54",
        "10.0.0.55",
    ]
    assert all(u.port == 53 for u in upstreams_from_resolv_conf(text))
