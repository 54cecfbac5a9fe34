"""Answering one container's queries, sans-IO: query bytes in, answer bytes (or a forward) out.

The hot path is a dictionary lookup: answers to a question never change between table updates,
so the first answer to a query is kept, keyed by the query minus its ID, and later identical
queries only get their ID patched in. Several addresses are prepared in a few shuffled orders
and one is picked per answer. A query seen for the first time is decoded by hand when it is
plain (`message.decode_plain`) and by dnslib otherwise (`parse`); either way the answer is
built by dnslib (`encode`). Answers that carry a fresh server cookie are never kept.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from dnslib import PTR, QTYPE, RCODE, RR, SOA, A, DNSLabel

from overlaynet.dns import cookies
from overlaynet.dns import message as m
from overlaynet.dns.encode import encode_header_only, encode_response
from overlaynet.dns.parse import OPTION_COOKIE, parse_query, read_header
from overlaynet.dns.records import DnsTable

#: Bound on prepared answers per container: random names from a misbehaving client must not grow
#: memory; when full the cache starts over (cheap, and the next queries refill it).
MAX_PREPARED = 1024
#: Orders prepared per multi-address answer: all orders up to 4 addresses (24), else this many.
MAX_ORDERS = 24
#: The SOA of our negative answers (RFC 2308 §3). Timers as CoreDNS's kubernetes plugin gives
#: them; the serial is the table's generation, so it changes with the contents.
#: Fixed names rather than ones under the zone: a zone may be a 253-octet question name,
#: and `ns.dns.` in front of it would not fit in a name (RFC 1035 §2.3.4).
SOA_MNAME = "ns.dns.overlaynet."
SOA_RNAME = "hostmaster.overlaynet."
SOA_REFRESH = 7200
SOA_RETRY = 1800
SOA_EXPIRE = 86400
#: Secret of the server cookies (RFC 7873 §6: at least 64 bits; ours is 128).
COOKIE_SECRET_LEN = 16
_ARPA_V4 = (b"in-addr", b"arpa")


class Transport(enum.Enum):
    """How the query came: UDP answers are cut at the client's size, TCP ones are complete."""

    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class Forward:
    """The name is not known here: ask the upstreams, answer `servfail` if none answers."""

    query: bytes
    client_id: int
    servfail: bytes
    transport: Transport


class _Prepared:
    """Answers kept for one query (minus their ID), and what they count as when served."""

    __slots__ = ("bodies", "hits", "malformed", "qtype", "rcode")

    def __init__(
        self,
        bodies: tuple[bytes, ...],
        qtype: int | None,
        rcode: int,
        malformed: str | None = None,
    ) -> None:
        self.bodies = bodies
        self.qtype = qtype
        self.rcode = rcode
        #: The reason, when this is the answer to a malformed query (each repeat counts).
        self.malformed = malformed
        #: Served from here; folded into the counters when the entry is dropped.
        self.hits = 0


@dataclass(frozen=True, slots=True)
class _Local:
    """A question answered from the table: one answer section per order, the same authority."""

    rcode: int
    orders: tuple[tuple[RR, ...], ...]
    authority: tuple[RR, ...] = ()


def type_name(qtype: int) -> str:
    """`A`, `AAAA`, … or RFC 3597's `TYPE65280` for types without a mnemonic."""
    name = QTYPE.get(qtype, None)
    return name if isinstance(name, str) else f"TYPE{qtype}"


def rcode_name(rcode: int) -> str:
    name = RCODE.get(rcode, None)
    if rcode == m.Rcode.BADVERS:
        return "BADVERS"
    return name if isinstance(name, str) else f"RCODE{rcode}"


def rcode_of(answer: bytes) -> int:
    """The header's rcode of a response (the extended bits live in OPT; 4 bits suffice here)."""
    return answer[3] & 0xF if len(answer) >= 4 else m.Rcode.SERVFAIL


class ContainerAnswerer:
    """Answers for one container, from the networks it shares in `table`.

    `clock` (seconds since the epoch) and `cookie_secret` are only used for server cookies.
    """

    def __init__(
        self,
        table: DnsTable,
        container_id: str,
        rng: random.Random,
        *,
        clock: Callable[[], float] = time.time,
        cookie_secret: bytes | None = None,
    ) -> None:
        self.table = table
        self.container_id = container_id
        self._rng = rng
        self._clock = clock
        self._cookie_secret = (
            cookie_secret if cookie_secret is not None else os.urandom(COOKIE_SECRET_LEN)
        )
        self._generation = -1
        self._udp: dict[bytes, _Prepared] = {}
        self._tcp: dict[bytes, _Prepared] = {}
        #: Everything but the hits on prepared answers (see `counters`).
        self._counts: Counter[str] = Counter()

    # -- the hot path -----------------------------------------------------------------------

    def answer(self, query: bytes, transport: Transport = Transport.UDP) -> bytes | Forward | None:
        """The answer to `query`, a `Forward`, or None when it must be dropped (no header, or a
        response rather than a query: answering those could start a loop between servers)."""
        if self._generation != self.table.generation:
            self._generation = self.table.generation
            self._drop_prepared()
        prepared = self._udp if transport is Transport.UDP else self._tcp
        entry = prepared.get(query[2:])
        if entry is not None:
            entry.hits += 1
            bodies = entry.bodies
            if len(bodies) == 1:
                return query[:2] + bodies[0]
            return query[:2] + bodies[self._rng.randrange(len(bodies))]
        return self._answer_fresh(query, transport, prepared)

    # -- counters ---------------------------------------------------------------------------

    def counters(self) -> Counter[str]:
        """Queries by type, answers by rcode, malformed input by reason (and in total), and
        which path answered: `path_prepared` (an ID patched into a kept answer), `path_plain`
        (decoded by hand), `path_slow` (read by dnslib)."""
        total = Counter(self._counts)
        for prepared in (self._udp, self._tcp):
            for entry in prepared.values():
                self._fold(total, entry)
        return total

    def count(self, key: str, n: int = 1) -> None:
        """Count an event the shell saw for this container (e.g. a forwarded answer's rcode)."""
        self._counts[key] += n

    @staticmethod
    def _fold(into: Counter[str], entry: _Prepared) -> None:
        if entry.hits:
            into["path_prepared"] += entry.hits
            if entry.qtype is not None:
                into["queries_" + type_name(entry.qtype)] += entry.hits
            into["answers_" + rcode_name(entry.rcode)] += entry.hits
            if entry.malformed is not None:
                into["malformed"] += entry.hits
                into["malformed_" + entry.malformed] += entry.hits

    def _drop_prepared(self) -> None:
        for prepared in (self._udp, self._tcp):
            for entry in prepared.values():
                self._fold(self._counts, entry)
            prepared.clear()

    def _malformed(self, reason: str) -> str:
        """Count refused input; return its counter suffix."""
        why = reason.removeprefix("dns_")
        self._counts["malformed"] += 1
        self._counts["malformed_" + why] += 1
        return why

    # -- a query seen for the first time --------------------------------------------------

    def _answer_fresh(
        self, data: bytes, transport: Transport, prepared: dict[bytes, _Prepared]
    ) -> bytes | Forward | None:
        question = m.decode_plain(data)
        if question is not None:
            self._counts["path_plain"] += 1
        else:
            self._counts["path_slow"] += 1
            slow = self._read_slowly(data, transport, prepared)
            if not isinstance(slow, m.Question):
                return slow
            question = slow
        self._counts["queries_" + type_name(question.qtype)] += 1
        limit = question.udp_limit if transport is Transport.UDP else m.TCP_LIMIT
        options: tuple[tuple[int, bytes], ...] = ()
        if question.cookie is not None:
            value = cookies.cookie_option(question.cookie, self._cookie_secret, self._clock())
            options = ((OPTION_COOKIE, value),)
        local = self._decide(question)
        if local is None:
            servfail = encode_response(question, m.Rcode.SERVFAIL, limit=limit, options=options)
            if not self.table.upstreams:
                self._counts["answers_SERVFAIL"] += 1
                return servfail
            return Forward(data, question.id, servfail, transport)
        bodies = tuple(
            encode_response(
                question,
                local.rcode,
                order,
                local.authority,
                authoritative=True,
                limit=limit,
                options=options,
            )
            for order in local.orders
        )
        if options:
            # A server cookie carries a timestamp: this answer is good for this query only.
            self._counts["answers_" + rcode_name(local.rcode)] += 1
            return bodies[self._rng.randrange(len(bodies))]
        return self._keep(prepared, data, bodies, question.qtype, local.rcode)

    def _keep(
        self,
        prepared: dict[bytes, _Prepared],
        data: bytes,
        bodies: tuple[bytes, ...],
        qtype: int | None,
        rcode: int,
        malformed: str | None = None,
    ) -> bytes:
        if len(prepared) >= MAX_PREPARED:
            for entry in prepared.values():
                self._fold(self._counts, entry)
            prepared.clear()
        prepared[data[2:]] = _Prepared(tuple(b[2:] for b in bodies), qtype, rcode, malformed)
        self._counts["answers_" + rcode_name(rcode)] += 1
        return bodies[0] if len(bodies) == 1 else bodies[self._rng.randrange(len(bodies))]

    def _read_slowly(
        self, data: bytes, transport: Transport, prepared: dict[bytes, _Prepared]
    ) -> m.Question | bytes | None:
        """What the hot path declined: a question to answer, an error answer, or a drop."""
        try:
            query_id, flags = read_header(data)
        except m.MalformedDns as exc:
            self._malformed(exc.reason)
            return None
        if flags & m.FLAG_QR:
            self._malformed("dns_not_a_query")
            return None
        opcode = (flags & m.OPCODE_MASK) >> m.OPCODE_SHIFT
        try:
            parsed = parse_query(data)
        except m.MalformedDns as exc:
            why = self._malformed(exc.reason)
            # RFC 1035 §4.1.1 / RFC 8906 §3.1.4: unknown opcodes get NOTIMP even when we cannot
            # read the rest; a readable header otherwise gets FORMERR.
            rcode = m.Rcode.FORMERR if opcode == m.Opcode.QUERY else m.Rcode.NOTIMP
            answer = encode_header_only(query_id, flags, rcode)
            return self._keep(prepared, data, (answer,), None, rcode, why)
        edns = parsed.edns
        question = m.Question(
            id=query_id,
            flags=flags,
            qname=parsed.qname,
            qtype=parsed.question.qtype,
            qclass=parsed.question.qclass,
            edns_udp_size=None if edns is None else edns.udp_size,
            dnssec_ok=edns is not None and edns.dnssec_ok,
        )
        limit = question.udp_limit if transport is Transport.UDP else m.TCP_LIMIT
        if opcode != m.Opcode.QUERY:
            return self._refuse(prepared, data, question, m.Rcode.NOTIMP, limit)
        if edns is None:
            return question
        if edns.version != m.EDNS_VERSION:
            # RFC 6891 §6.1.3: answer BADVERS with the highest version we speak.
            return self._refuse(prepared, data, question, m.Rcode.BADVERS, limit)
        cookie = next((value for code, value in edns.options if code == OPTION_COOKIE), None)
        if cookie is None:
            return question  # RFC 6891 §6.1.2: options we do not know are ignored
        try:
            cookies.client_cookie(cookie)
        except m.MalformedDns as exc:
            why = self._malformed(exc.reason)
            return self._refuse(prepared, data, question, m.Rcode.FORMERR, limit, why)
        return m.Question(
            id=question.id,
            flags=question.flags,
            qname=question.qname,
            qtype=question.qtype,
            qclass=question.qclass,
            edns_udp_size=question.edns_udp_size,
            dnssec_ok=question.dnssec_ok,
            cookie=cookie,
        )

    def _refuse(
        self,
        prepared: dict[bytes, _Prepared],
        data: bytes,
        question: m.Question,
        rcode: int,
        limit: int,
        malformed: str | None = None,
    ) -> bytes:
        self._counts["queries_" + type_name(question.qtype)] += 1
        answer = encode_response(question, rcode, limit=limit)
        return self._keep(prepared, data, (answer,), question.qtype, rcode, malformed)

    # -- what the table says ----------------------------------------------------------------

    def _decide(self, question: m.Question) -> _Local | None:
        """The local answer to `question`, or None when it is not ours to answer."""
        if question.qclass not in (m.CLASS_IN, m.CLASS_ANY):
            return None
        if any(b"." in label for label in question.qname):
            return None  # a dot inside a label can never match a table name
        name = ".".join(label.decode("latin-1") for label in question.qname)
        owner = DNSLabel(question.qname)
        ttl = self.table.ttl
        if question.qtype == m.TYPE_PTR:
            address = _reverse_address(question.qname)
            if address is not None:
                target = self.table.reverse(self.container_id, address)
                if target is None:
                    return None
                ptr = RR(owner, m.TYPE_PTR, m.CLASS_IN, ttl, PTR(target + "."))
                return _Local(m.Rcode.NOERROR, ((ptr,),))
            # Not a reverse name: a PTR for a known name is NODATA like any other type.
        addresses = self.table.resolve(self.container_id, name)
        if addresses is None:
            if self.table.in_network_zone(self.container_id, name):
                # RFC 2308 §2.1: below a network's name we know every name, so it does not exist.
                return _Local(m.Rcode.NXDOMAIN, ((),), (self._soa(question, name),))
            return None
        if question.qtype not in (m.TYPE_A, m.TYPE_ANY):
            # RFC 2308 §2.2 NODATA: the name exists, the type does not (AAAA too: IPv4 only).
            return _Local(m.Rcode.NOERROR, ((),), (self._soa(question, name),))
        return _Local(
            m.Rcode.NOERROR,
            tuple(
                tuple(RR(owner, m.TYPE_A, m.CLASS_IN, ttl, A(str(a))) for a in order)
                for order in self._orders(addresses)
            ),
        )

    def _soa(self, question: m.Question, name: str) -> RR:
        """RFC 2308 §3: the zone's SOA in the authority section; its TTL and MINIMUM are the
        negative TTL, so resolvers cache the absence for exactly that long (§5)."""
        network = self.table.negative_zone(self.container_id, name)
        zone = question.qname if network is None else _labels(network)
        negative_ttl = self.table.negative_ttl
        times = (
            self.table.generation & 0xFFFFFFFF,
            SOA_REFRESH,
            SOA_RETRY,
            SOA_EXPIRE,
            negative_ttl,
        )
        soa = SOA(SOA_MNAME, SOA_RNAME, times)
        return RR(DNSLabel(zone), m.TYPE_SOA, m.CLASS_IN, negative_ttl, soa)

    def _orders(self, addresses: list[ipaddress.IPv4Address]) -> list[list[ipaddress.IPv4Address]]:
        """Orders to rotate through: all permutations when few, else random distinct shuffles."""
        if len(addresses) <= 4:
            return [list(p) for p in itertools.permutations(addresses)]
        orders: list[list[ipaddress.IPv4Address]] = []
        seen: set[tuple[ipaddress.IPv4Address, ...]] = set()
        for _ in range(MAX_ORDERS * 2):
            order = list(addresses)
            self._rng.shuffle(order)
            if tuple(order) not in seen:
                seen.add(tuple(order))
                orders.append(order)
            if len(orders) == MAX_ORDERS:
                break
        return orders


def _labels(name: str) -> m.Name:
    return tuple(label.encode("ascii") for label in name.split(".") if label)


def _reverse_address(qname: m.Name) -> ipaddress.IPv4Address | None:
    """`d.c.b.a.in-addr.arpa` (RFC 1035 §3.5) as a.b.c.d; None for anything else."""
    if len(qname) != 6 or tuple(label.lower() for label in qname[4:]) != _ARPA_V4:
        return None
    octets = qname[3::-1]
    # Decimal without leading zeros (`08` is not how an address is written, and ipaddress
    # refuses it): anything else is not an address of ours.
    if not all(
        o.isdigit() and len(o) <= 3 and int(o) <= 255 and (o == b"0" or o[:1] != b"0")
        for o in octets
    ):
        return None
    return ipaddress.IPv4Address(bytes(int(o) for o in octets))
