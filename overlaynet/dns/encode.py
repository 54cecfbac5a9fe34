"""Answers on the wire, built with dnslib: run once per question and table change, not per query.

The answerer keeps what this module returns and only patches the ID into it afterwards, so
building a response here may take the time it needs (dnslib, name compression, truncation).
"""

from __future__ import annotations

from collections.abc import Sequence

from dnslib import EDNS0, RR, DNSHeader, DNSLabel, DNSQuestion, DNSRecord, EDNSOption

from overlaynet.dns import message as m


def _opt(rcode: int, dnssec_ok: bool, options: Sequence[tuple[int, bytes]]) -> RR:
    """Our OPT record: root owner, our UDP size, the upper 8 bits of the rcode, version 0.

    RFC 3225 §3: the DO bit is copied from the query. RFC 6891 §6.1.4: other flags are not.
    """
    return EDNS0(
        ext_rcode=rcode >> 4,
        version=m.EDNS_VERSION,
        flags="do" if dnssec_ok else "",
        udp_len=m.OUR_EDNS_UDP_SIZE,
        opts=[EDNSOption(code, value) for code, value in options],
    )


def encode_response(
    question: m.Question,
    rcode: int,
    answers: Sequence[RR] = (),
    authority: Sequence[RR] = (),
    *,
    authoritative: bool = False,
    limit: int = m.TCP_LIMIT,
    options: Sequence[tuple[int, bytes]] = (),
) -> bytes:
    """The response to `question`; when it does not fit in `limit`, no records and TC set.

    RFC 2181 §9: a truncated answer is better empty than partial, the client retries over TCP.
    RFC 6891 §7: the OPT record goes back whenever the query had one, also when truncated.
    """
    record = DNSRecord(
        DNSHeader(
            id=question.id,
            bitmap=m.response_flags(
                question.flags, rcode, authoritative=authoritative, truncated=False
            ),
        ),
        q=DNSQuestion(DNSLabel(question.qname), question.qtype, question.qclass),
        rr=list(answers),
        auth=list(authority),
    )
    if question.edns_udp_size is not None:
        record.add_ar(_opt(rcode, question.dnssec_ok, options))
    data = bytes(record.pack())
    if len(data) <= limit:
        return data
    record.rr, record.auth = [], []
    record.header.tc = 1
    truncated = bytes(record.pack())
    return truncated


def encode_header_only(query_id: int, query_flags: int, rcode: int) -> bytes:
    """A response with no sections, for queries whose question cannot be read (RFC 1035 §4.1.1)."""
    flags = m.response_flags(query_flags, rcode, authoritative=False, truncated=False)
    data = bytes(DNSRecord(DNSHeader(id=query_id, bitmap=flags)).pack())
    return data
