"""DNS wire format for the embedded resolver: decode a query and encode an answer (RFC 1035 §4).

Only what a stub resolver's query needs: the header, one question, and an OPT record (RFC 6891).
Decoding raises `MalformedDns`, the DNS plane's one error type; encoding compresses names.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

#: RFC 1035 §4.1.1: the fixed header is six 16-bit fields.
HEADER_LEN = 12
#: RFC 1035 §2.3.4: a name is at most 255 octets on the wire, a label at most 63.
MAX_NAME_LEN = 255
MAX_LABEL_LEN = 63
#: RFC 1035 §2.3.4: without EDNS a UDP message is at most 512 octets.
CLASSIC_UDP_LIMIT = 512
#: RFC 1035 §4.2.2: a TCP message carries a 16-bit length, so 65535 octets at most.
TCP_LIMIT = 65535
#: The UDP payload size we advertise: DNS Flag Day 2020's 1232 avoids IP fragmentation.
OUR_EDNS_UDP_SIZE = 1232
#: RFC 6891 §6.1.3: the only EDNS version there is.
EDNS_VERSION = 0

# Header flag bits (RFC 1035 §4.1.1, RFC 4035 §3.2 for AD and CD).
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_CD = 0x0010
OPCODE_SHIFT = 11
OPCODE_MASK = 0x7800

TYPE_A = 1
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_QUESTION_TAIL = struct.Struct("!HH")


class Opcode(enum.IntEnum):
    """RFC 1035 §4.1.1 and later: the kinds of request; only QUERY is implemented."""

    QUERY = 0
    IQUERY = 1
    STATUS = 2
    NOTIFY = 4
    UPDATE = 5


class Rcode(enum.IntEnum):
    """Response codes (RFC 1035 §4.1.1; BADVERS is RFC 6891 §6.1.3, split across header and OPT)."""

    NOERROR = 0
    FORMERR = 1
    SERVFAIL = 2
    NXDOMAIN = 3
    NOTIMP = 4
    REFUSED = 5
    BADVERS = 16


class MalformedDns(ValueError):
    """A DNS message that cannot be decoded; shells count it under `reason` and answer or drop."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        #: Counter key, e.g. "dns_short_name" or "dns_two_opt".
        self.reason = reason


Name = tuple[bytes, ...]
"""A domain name as its labels, in the case the client sent (no trailing empty root label)."""


@dataclass(frozen=True, slots=True)
class Header:
    """The fixed 12-octet header."""

    id: int
    flags: int
    qdcount: int
    ancount: int
    nscount: int
    arcount: int

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> OPCODE_SHIFT

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)


@dataclass(frozen=True, slots=True)
class Edns:
    """What the client's OPT record said (RFC 6891 §6.1.2-6.1.3)."""

    udp_size: int
    version: int
    dnssec_ok: bool


@dataclass(frozen=True, slots=True)
class Query:
    """A decoded query: header, its single question, and EDNS if the client sent OPT."""

    header: Header
    qname: Name
    qtype: int
    qclass: int
    edns: Edns | None

    @property
    def udp_limit(self) -> int:
        """The largest UDP answer this client takes (RFC 6891 §6.2.5: below 512 means 512)."""
        if self.edns is None:
            return CLASSIC_UDP_LIMIT
        return max(CLASSIC_UDP_LIMIT, self.edns.udp_size)


def decode_header(data: bytes) -> Header:
    if len(data) < HEADER_LEN:
        raise MalformedDns("dns_short_header", f"{len(data)} octets")
    return Header(*_HEADER.unpack_from(data))


def decode_name(data: bytes, offset: int) -> tuple[Name, int]:
    """Read a possibly compressed name at `offset`; return its labels and the offset after it.

    RFC 1035 §4.1.4 pointers must point strictly backwards here, which rules out loops.
    """
    labels: list[bytes] = []
    wire_len = 1  # the root label
    end = -1
    pos = offset
    lowest = offset
    while True:
        if pos >= len(data):
            raise MalformedDns("dns_short_name")
        length = data[pos]
        if length == 0:
            pos += 1
            break
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= len(data):
                raise MalformedDns("dns_short_name")
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= lowest:
                raise MalformedDns("dns_bad_pointer", f"{target} from {pos}")
            if end < 0:
                end = pos + 2
            lowest = target
            pos = target
            continue
        if kind != 0:
            # RFC 6891 §5 retired the extended label types 0x40 and 0x80.
            raise MalformedDns("dns_bad_label_type", hex(length))
        label = data[pos + 1 : pos + 1 + length]
        if len(label) != length:
            raise MalformedDns("dns_short_name")
        wire_len += length + 1
        if wire_len > MAX_NAME_LEN:
            raise MalformedDns("dns_long_name")
        labels.append(label)
        pos += 1 + length
    return tuple(labels), (end if end >= 0 else pos)


def _skip_record(data: bytes, offset: int) -> tuple[int, int, int, int, int]:
    """Skip one resource record; return (type, class, ttl, rdata offset, offset after it)."""
    name, pos = decode_name(data, offset)
    if pos + _RR_FIXED.size > len(data):
        raise MalformedDns("dns_short_record")
    rtype, rclass, ttl, rdlength = _RR_FIXED.unpack_from(data, pos)
    pos += _RR_FIXED.size
    if pos + rdlength > len(data):
        raise MalformedDns("dns_short_rdata")
    if rtype == TYPE_OPT and name:
        # RFC 6891 §6.1.2: the OPT owner is the root.
        raise MalformedDns("dns_opt_not_root")
    return rtype, rclass, ttl, pos, pos + rdlength


def _check_options(data: bytes, start: int, end: int) -> None:
    """RFC 6891 §6.1.2: OPT RDATA is a run of {code, length, value}; it must add up exactly."""
    pos = start
    while pos < end:
        if pos + 4 > end:
            raise MalformedDns("dns_bad_option")
        length = (data[pos + 2] << 8) | data[pos + 3]
        pos += 4 + length
        if pos > end:
            raise MalformedDns("dns_bad_option")


def decode_query(data: bytes) -> Query:
    """Decode a query with exactly one question; raise `MalformedDns` on anything else."""
    header = decode_header(data)
    if header.qdcount != 1:
        # RFC 9619: a QUERY carries exactly one question.
        raise MalformedDns("dns_qdcount", str(header.qdcount))
    qname, pos = decode_name(data, HEADER_LEN)
    if pos + 4 > len(data):
        raise MalformedDns("dns_short_question")
    qtype, qclass = _QUESTION_TAIL.unpack_from(data, pos)
    pos += 4
    if qtype == TYPE_OPT:
        raise MalformedDns("dns_opt_question")
    edns: Edns | None = None
    for _ in range(header.ancount + header.nscount):
        rtype, _c, _t, _r, pos = _skip_record(data, pos)
        if rtype == TYPE_OPT:
            raise MalformedDns("dns_opt_misplaced")
    for _ in range(header.arcount):
        rtype, rclass, ttl, rdata, pos = _skip_record(data, pos)
        if rtype != TYPE_OPT:
            continue
        if edns is not None:
            # RFC 6891 §6.1.1: more than one OPT is FORMERR.
            raise MalformedDns("dns_two_opt")
        _check_options(data, rdata, pos)
        edns = Edns(udp_size=rclass, version=(ttl >> 16) & 0xFF, dnssec_ok=bool(ttl & 0x8000))
    if pos != len(data):
        raise MalformedDns("dns_trailing_bytes", f"{len(data) - pos} octets")
    return Query(header=header, qname=qname, qtype=qtype, qclass=qclass, edns=edns)


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    """An answer record: A carries `address` (4 octets), PTR carries `target` (a name)."""

    name: Name
    rtype: int
    ttl: int
    address: bytes = b""
    target: Name = ()


class _Writer:
    """Appends to a message and compresses names against the suffixes already written."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self._suffixes: dict[tuple[bytes, ...], int] = {}

    def name(self, name: Name) -> None:
        for i in range(len(name)):
            suffix = tuple(label.lower() for label in name[i:])
            where = self._suffixes.get(suffix)
            if where is not None:
                self.buf += struct.pack("!H", 0xC000 | where)
                return
            # RFC 1035 §4.1.4: a pointer has 14 bits of offset.
            if len(self.buf) < 0x4000:
                self._suffixes[suffix] = len(self.buf)
            self.buf.append(len(name[i]))
            self.buf += name[i]
        self.buf.append(0)

    def record(self, rr: ResourceRecord) -> None:
        self.name(rr.name)
        if rr.rtype == TYPE_PTR:
            self.buf += _RR_FIXED.pack(rr.rtype, CLASS_IN, rr.ttl, 0)
            start = len(self.buf)
            self.name(rr.target)
            struct.pack_into("!H", self.buf, start - 2, len(self.buf) - start)
        else:
            self.buf += _RR_FIXED.pack(rr.rtype, CLASS_IN, rr.ttl, len(rr.address))
            self.buf += rr.address


def encode_opt(rcode: int) -> bytes:
    """Our OPT record: root owner, our UDP size, the upper 8 bits of the rcode, version 0."""
    return b"\x00" + _RR_FIXED.pack(TYPE_OPT, OUR_EDNS_UDP_SIZE, (rcode >> 4) << 24, 0)


def response_flags(query_flags: int, rcode: int, *, authoritative: bool, truncated: bool) -> int:
    """Response header flags: QR, RA, the opcode, RD and CD copied (RFC 1035, RFC 6840 §5.9)."""
    flags = FLAG_QR | FLAG_RA | (query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    if authoritative:
        flags |= FLAG_AA
    if truncated:
        flags |= FLAG_TC
    return flags


def encode_response(
    query: Query,
    rcode: int,
    answers: tuple[ResourceRecord, ...] = (),
    *,
    authoritative: bool = False,
    limit: int = TCP_LIMIT,
) -> bytes:
    """Encode the response to `query`; if the answers do not fit in `limit`, send none and set TC.

    RFC 2181 §9: a truncated answer is better empty than partial, the client retries over TCP.
    RFC 6891 §7: the OPT record goes back whenever the query had one, also when truncated.
    """
    opt = encode_opt(rcode) if query.edns is not None else b""
    writer = _Writer()
    writer.buf += b"\x00" * HEADER_LEN
    writer.name(query.qname)
    writer.buf += _QUESTION_TAIL.pack(query.qtype, query.qclass)
    question_end = len(writer.buf)
    for rr in answers:
        writer.record(rr)
    truncated = len(writer.buf) + len(opt) > limit
    body = writer.buf[:question_end] if truncated else writer.buf
    ancount = 0 if truncated else len(answers)
    flags = response_flags(
        query.header.flags, rcode, authoritative=authoritative, truncated=truncated
    )
    _HEADER.pack_into(body, 0, query.header.id, flags, 1, ancount, 0, 1 if opt else 0)
    return bytes(body) + opt


def encode_header_only(header: Header, rcode: int) -> bytes:
    """A response with no sections, for queries whose question cannot be read (RFC 1035 §4.1.1)."""
    flags = response_flags(header.flags, rcode, authoritative=False, truncated=False)
    return _HEADER.pack(header.id, flags, 0, 0, 0, 0)
