"""The DNS plane's wire constants, its one error type, and the hot path's hand-written decoder.

Almost every query a container sends is "plain": one uncompressed question, no other records
but at most an OPT without options. `decode_plain` reads those in a few byte comparisons and
declines everything else (returns None), which `parse.parse_query` then reads with dnslib.
"""

from __future__ import annotations

import enum
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
#: RFC 3225 §3: the DO bit in the OPT record's flags (the low 16 bits of its TTL).
EDNS_FLAG_DO = 0x8000

TYPE_A = 1
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_AAAA = 28
TYPE_OPT = 41
TYPE_ANY = 255
CLASS_IN = 1
CLASS_ANY = 255

#: After the question of a plain query: QDCOUNT 1, ANCOUNT 0, NSCOUNT 0 (RFC 9619: one question).
_PLAIN_COUNTS = b"\x00\x01\x00\x00\x00\x00"
#: An OPT record's start: the root owner (RFC 6891 §6.1.2) and TYPE 41.
_OPT_START = b"\x00\x00\x29"
#: Root owner, TYPE, CLASS (the UDP size), TTL (ext-rcode, version, flags), RDLENGTH.
_OPT_LEN = 11


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
class Question:
    """What a query asks, and what its answer must echo or respect.

    `edns_udp_size` is None when the query had no OPT record; `cookie` is the client's
    COOKIE option (RFC 7873), which only the slow path reads.
    """

    id: int
    flags: int
    qname: Name
    qtype: int
    qclass: int
    edns_udp_size: int | None = None
    dnssec_ok: bool = False
    cookie: bytes | None = None

    @property
    def udp_limit(self) -> int:
        """The largest UDP answer this client takes (RFC 6891 §6.2.5: below 512 means 512)."""
        if self.edns_udp_size is None:
            return CLASSIC_UDP_LIMIT
        return max(CLASSIC_UDP_LIMIT, self.edns_udp_size)


def decode_plain(data: bytes) -> Question | None:
    """The question of a plain query, or None to leave the message to the slow path.

    Plain: a QUERY (not a response), one question whose name is uncompressed labels, nothing in
    the answer and authority sections, and in the additional section nothing or one OPT of
    version 0 without options. Never raises: anything unexpected is simply declined.
    """
    end = len(data)
    if end < HEADER_LEN + 5:
        return None
    flags = (data[2] << 8) | data[3]
    if flags & (FLAG_QR | OPCODE_MASK) or data[4:10] != _PLAIN_COUNTS:
        return None
    arcount = (data[10] << 8) | data[11]
    if arcount > 1:
        return None
    labels: list[bytes] = []
    pos = HEADER_LEN
    while True:
        if pos >= end:
            return None
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > MAX_LABEL_LEN:  # a pointer or a retired label type: the slow path's
            return None
        labels.append(data[pos + 1 : pos + 1 + length])
        pos += 1 + length
    if pos - HEADER_LEN > MAX_NAME_LEN or pos + 4 > end:
        return None
    qtype = (data[pos] << 8) | data[pos + 1]
    qclass = (data[pos + 2] << 8) | data[pos + 3]
    pos += 4
    if qtype == TYPE_OPT:
        return None
    if arcount == 0:
        if pos != end:
            return None
        return Question((data[0] << 8) | data[1], flags, tuple(labels), qtype, qclass)
    # The OPT record: version 0 (byte 6) and RDLENGTH 0 (bytes 9-10); other flags are ignored.
    if end - pos != _OPT_LEN or data[pos : pos + 3] != _OPT_START:
        return None
    if data[pos + 6] != EDNS_VERSION or data[pos + 9] or data[pos + 10]:
        return None
    return Question(
        (data[0] << 8) | data[1],
        flags,
        tuple(labels),
        qtype,
        qclass,
        edns_udp_size=(data[pos + 3] << 8) | data[pos + 4],
        dnssec_ok=bool(data[pos + 7] & 0x80),
    )


def response_flags(query_flags: int, rcode: int, *, authoritative: bool, truncated: bool) -> int:
    """Response header flags: QR, RA, the opcode, RD and CD copied (RFC 1035, RFC 6840 §5.9)."""
    flags = FLAG_QR | FLAG_RA | (query_flags & (OPCODE_MASK | FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    if authoritative:
        flags |= FLAG_AA
    if truncated:
        flags |= FLAG_TC
    return flags
