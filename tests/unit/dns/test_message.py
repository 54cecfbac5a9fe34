"""The DNS wire codec: names, pointers, OPT records and the limits of RFC 1035 and 6891."""

from __future__ import annotations

import pytest

from overlaynet.dns import message as m
from tests.unit.dns.dnshelp import query


def test_decode_query_reads_question_and_edns() -> None:
    q = m.decode_query(query("Alpine2.alpine-net", "AAAA", edns=4096))
    assert q.qname == (b"Alpine2", b"alpine-net")
    assert (q.qtype, q.qclass) == (m.TYPE_AAAA, m.CLASS_IN)
    assert q.edns == m.Edns(udp_size=4096, version=0, dnssec_ok=False)
    assert q.udp_limit == 4096


def test_udp_limit_is_512_without_edns_and_at_least_512_with_it() -> None:
    assert m.decode_query(query("a")).udp_limit == 512
    assert m.decode_query(query("a", edns=100)).udp_limit == 512


def test_backward_pointer_is_followed() -> None:
    data = b"\x00" * 12 + b"\x03foo\x00" + b"\x03bar\xc0\x0c"
    assert m.decode_name(data, 17) == ((b"bar", b"foo"), len(data))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x00" * 12 + b"\xc0\x0c", "dns_bad_pointer"),  # points at itself
        (b"\x00" * 12 + b"\x03foo\xc0\x10", "dns_bad_pointer"),  # points forward
        (b"\x00" * 12 + b"\x05ab", "dns_short_name"),
        (b"\x00" * 12 + b"\x41", "dns_bad_label_type"),
        (
            b"\x00" * 12
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x3f"
            + b"a" * 63
            + b"\x00",
            "dns_long_name",
        ),
    ],
)
def test_bad_names_are_refused(data: bytes, reason: str) -> None:
    with pytest.raises(m.MalformedDns) as caught:
        m.decode_name(data, 12)
    assert caught.value.reason == reason


def test_opt_with_broken_options_is_refused() -> None:
    data = bytearray(query("a", edns=1232))
    data[-2:] = b"\x00\x03"  # RDLENGTH 3: too short for an option header
    data += b"\x00\x0a\x00"
    with pytest.raises(m.MalformedDns) as caught:
        m.decode_query(bytes(data))
    assert caught.value.reason == "dns_bad_option"


def test_opt_in_question_is_refused() -> None:
    with pytest.raises(m.MalformedDns):
        m.decode_query(query("a", "OPT"))


def test_encoded_response_compresses_ptr_target_against_question() -> None:
    q = m.decode_query(query("alpine2.alpine-net", "PTR"))
    rr = m.ResourceRecord(name=q.qname, rtype=m.TYPE_PTR, ttl=5, target=(b"x", b"alpine-net"))
    data = m.encode_response(q, m.Rcode.NOERROR, (rr,))
    # The target's "alpine-net" suffix is a pointer to offset 20 (12 + len("\x07alpine2")).
    assert data.endswith(b"\x01x\xc0\x14")
