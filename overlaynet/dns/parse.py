"""The slow path's reader: any query the hot path declines, parsed with dnslib.

Compressed question names, answer or authority records in a query, EDNS options such as
cookies, other opcodes: dnslib reads them all; this module adds the checks a server must make
on top (RFC 6891's OPT rules, no trailing bytes, one question) and turns every failure into
`MalformedDns`, the plane's one error type.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from dnslib import RR, DNSBuffer, DNSHeader, DNSQuestion

from overlaynet.dns import message as m

#: RFC 7873 §4: the COOKIE option's code.
OPTION_COOKIE = 10
_OPTION_HEADER = struct.Struct("!HH")
_RR_FIXED = struct.Struct("!HHIH")


@dataclass(frozen=True, slots=True)
class ClientEdns:
    """What the query's OPT record said (RFC 6891 §6.1.2-6.1.3), options as (code, value)."""

    udp_size: int
    version: int
    dnssec_ok: bool
    options: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True, slots=True)
class ParsedQuery:
    """A query as the slow path sees it: the header, its question and its EDNS, if any."""

    header: DNSHeader
    question: DNSQuestion
    edns: ClientEdns | None

    @property
    def qname(self) -> m.Name:
        return tuple(self.question.qname.label)


def read_header(data: bytes) -> tuple[int, int]:
    """The ID and flags of a message, or `MalformedDns` when even the header is short."""
    if len(data) < m.HEADER_LEN:
        raise m.MalformedDns("dns_short_header", f"{len(data)} octets")
    return (data[0] << 8) | data[1], (data[2] << 8) | data[3]


def _options(rdata: bytes) -> tuple[tuple[int, bytes], ...]:
    """RFC 6891 §6.1.2: OPT RDATA is a run of {code, length, value} that must add up exactly.

    Read here rather than by dnslib: dnslib 0.9.26 skips a last option without a value (an
    NSID request, RFC 5001 §2.3) and silently ignores leftover octets.
    """
    options: list[tuple[int, bytes]] = []
    pos = 0
    while pos < len(rdata):
        if pos + _OPTION_HEADER.size > len(rdata):
            raise m.MalformedDns("dns_bad_option")
        code, length = _OPTION_HEADER.unpack_from(rdata, pos)
        pos += _OPTION_HEADER.size
        if pos + length > len(rdata):
            raise m.MalformedDns("dns_bad_option")
        options.append((code, rdata[pos : pos + length]))
        pos += length
    return tuple(options)


def _record(buffer: DNSBuffer, data: bytes) -> tuple[int, ClientEdns | None]:
    """Read one record; return its type and, for OPT, what it says."""
    start = buffer.offset
    rr = RR.parse(buffer)
    if rr.rtype != m.TYPE_OPT:
        return rr.rtype, None
    if rr.rname.label:
        raise m.MalformedDns("dns_opt_not_root")  # RFC 6891 §6.1.2: the OPT owner is the root
    # Read the fixed part again after the owner (a root label, or a pointer to one).
    again = DNSBuffer(data)
    again.offset = start
    again.decode_name()
    _t, udp_size, ttl, rdlength = _RR_FIXED.unpack_from(data, again.offset)
    rdata_start = again.offset + _RR_FIXED.size
    options = _options(data[rdata_start : rdata_start + rdlength])
    edns = ClientEdns(
        udp_size=udp_size,
        version=(ttl >> 16) & 0xFF,
        dnssec_ok=bool(ttl & m.EDNS_FLAG_DO),
        options=options,
    )
    return rr.rtype, edns


def parse_query(data: bytes) -> ParsedQuery:
    """Parse a query with exactly one question; raise `MalformedDns` for anything else."""
    read_header(data)
    buffer = DNSBuffer(data)
    try:
        header = DNSHeader.parse(buffer)
        if header.q != 1:
            # RFC 9619: a QUERY carries exactly one question.
            raise m.MalformedDns("dns_qdcount", str(header.q))
        question = DNSQuestion.parse(buffer)
        edns: ClientEdns | None = None
        for _ in range(header.a + header.auth):
            rtype, _opt = _record(buffer, data)
            if rtype == m.TYPE_OPT:
                raise m.MalformedDns("dns_opt_misplaced")
        for _ in range(header.ar):
            _rtype, opt = _record(buffer, data)
            if opt is None:
                continue
            if edns is not None:
                raise m.MalformedDns("dns_two_opt")  # RFC 6891 §6.1.1: more than one is FORMERR
            edns = opt
    except m.MalformedDns:
        raise
    except Exception as exc:
        # dnslib signals bad input with DNSError, but hostile input also reaches ValueError,
        # struct.error, IndexError or RecursionError (a long chain of backward pointers) inside
        # its record parsers: all of them mean "this message cannot be read".
        raise m.MalformedDns("dns_unparseable", f"{type(exc).__name__}: {exc}") from None
    if buffer.offset != len(data):
        raise m.MalformedDns("dns_trailing_bytes", f"{len(data) - buffer.offset} octets")
    if question.qtype == m.TYPE_OPT:
        raise m.MalformedDns("dns_opt_question")
    if sum(len(label) + 1 for label in question.qname.label) + 1 > m.MAX_NAME_LEN:
        raise m.MalformedDns("dns_long_name")
    return ParsedQuery(header=header, question=question, edns=edns)
