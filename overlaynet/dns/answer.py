"""Answering one container's queries, sans-IO: query bytes in, answer bytes (or a forward) out.

Answers to a question never change between table updates, so the first answer to a question is
kept, keyed by the query minus its ID, and later identical queries only get their ID patched in.
Several addresses are prepared in a few shuffled orders and one is picked per answer.
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import random
from dataclasses import dataclass

from overlaynet.dns import message as m
from overlaynet.dns.records import DnsTable

#: Bound on prepared answers per container: random names from a misbehaving client must not grow
#: memory; when full the cache starts over (cheap, and the next queries refill it).
MAX_PREPARED = 1024
#: Orders prepared per multi-address answer: all orders up to 4 addresses (24), else this many.
MAX_ORDERS = 24
_ARPA_V4 = (b"in-addr", b"arpa")


class Transport(enum.Enum):
    """How the query came: UDP answers are cut at the client's size, TCP ones are complete."""

    UDP = "udp"
    TCP = "tcp"


@dataclass(frozen=True, slots=True)
class Forward:
    """The name is not known here: ask the upstreams, answer `servfail` if none answers."""

    query: bytes
    parsed: m.Query
    servfail: bytes
    transport: Transport


class ContainerAnswerer:
    """Answers for one container, from the networks it shares in `table`."""

    def __init__(self, table: DnsTable, container_id: str, rng: random.Random) -> None:
        self.table = table
        self.container_id = container_id
        self._rng = rng
        self._generation = -1
        self._prepared: dict[Transport, dict[bytes, tuple[bytes, ...]]] = {
            Transport.UDP: {},
            Transport.TCP: {},
        }
        #: Per-reason counts of refused input (the plane's error type), for `inspect`.
        self.malformed: dict[str, int] = {}

    def answer(self, query: bytes, transport: Transport = Transport.UDP) -> bytes | Forward | None:
        """The answer to `query`, a `Forward`, or None when it must be dropped (no header, or a
        response rather than a query: answering those could start a loop between servers)."""
        if self._generation != self.table.generation:
            self._generation = self.table.generation
            for prepared in self._prepared.values():
                prepared.clear()
        prepared = self._prepared[transport]
        orders = prepared.get(query[2:])
        if orders is not None:
            body = orders[0] if len(orders) == 1 else orders[self._rng.randrange(len(orders))]
            return query[:2] + body
        outcome = self._answer_fresh(query, transport)
        if isinstance(outcome, tuple):
            if len(prepared) >= MAX_PREPARED:
                prepared.clear()
            prepared[query[2:]] = tuple(o[2:] for o in outcome)
            return outcome[0] if len(outcome) == 1 else outcome[self._rng.randrange(len(outcome))]
        return outcome

    def _count(self, reason: str) -> None:
        self.malformed[reason] = self.malformed.get(reason, 0) + 1

    def _answer_fresh(
        self, data: bytes, transport: Transport
    ) -> tuple[bytes, ...] | bytes | Forward | None:
        """Decode and answer; a tuple means answers that may be prepared for identical queries."""
        try:
            header = m.decode_header(data)
        except m.MalformedDns as exc:
            self._count(exc.reason)
            return None
        if header.is_response:
            self._count("dns_not_a_query")
            return None
        try:
            query = m.decode_query(data)
        except m.MalformedDns as exc:
            self._count(exc.reason)
            # RFC 1035 §4.1.1 / RFC 8906 §3.1.4: unknown opcodes get NOTIMP even when we cannot
            # read the rest; a readable header otherwise gets FORMERR.
            rcode = m.Rcode.FORMERR if header.opcode == m.Opcode.QUERY else m.Rcode.NOTIMP
            return m.encode_header_only(header, rcode)
        if header.opcode != m.Opcode.QUERY:
            return m.encode_response(query, m.Rcode.NOTIMP)
        if query.edns is not None and query.edns.version != m.EDNS_VERSION:
            # RFC 6891 §6.1.3: answer BADVERS with the highest version we speak.
            return m.encode_response(query, m.Rcode.BADVERS)
        limit = query.udp_limit if transport is Transport.UDP else m.TCP_LIMIT
        local = self._answer_locally(query, limit)
        if local is not None:
            return local
        servfail = m.encode_response(query, m.Rcode.SERVFAIL, limit=limit)
        if not self.table.upstreams:
            return servfail
        return Forward(query=data, parsed=query, servfail=servfail, transport=transport)

    def _answer_locally(self, query: m.Query, limit: int) -> tuple[bytes, ...] | None:
        if query.qclass not in (m.CLASS_IN, m.CLASS_ANY):
            return None
        if any(b"." in label for label in query.qname):
            return None  # a dot inside a label can never match a table name
        name = ".".join(label.decode("latin-1") for label in query.qname)
        ttl = self.table.ttl
        if query.qtype == m.TYPE_PTR:
            address = _reverse_address(query.qname)
            if address is None:
                return None
            target = self.table.reverse(self.container_id, address)
            if target is None:
                return None
            ptr = m.ResourceRecord(
                name=query.qname, rtype=m.TYPE_PTR, ttl=ttl, target=_labels(target)
            )
            return (
                m.encode_response(query, m.Rcode.NOERROR, (ptr,), authoritative=True, limit=limit),
            )
        addresses = self.table.resolve(self.container_id, name)
        if addresses is None:
            if self.table.in_network_zone(self.container_id, name):
                # RFC 2308 §2.1: below a network's name we know every name, so it does not exist.
                return (
                    m.encode_response(query, m.Rcode.NXDOMAIN, authoritative=True, limit=limit),
                )
            return None
        if query.qtype not in (m.TYPE_A, m.TYPE_ANY):
            # RFC 2308 §2.2 NODATA: the name exists, the type does not.
            return (m.encode_response(query, m.Rcode.NOERROR, authoritative=True, limit=limit),)
        return tuple(
            m.encode_response(
                query,
                m.Rcode.NOERROR,
                tuple(
                    m.ResourceRecord(name=query.qname, rtype=m.TYPE_A, ttl=ttl, address=a.packed)
                    for a in order
                ),
                authoritative=True,
                limit=limit,
            )
            for order in self._orders(addresses)
        )

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
    return tuple(label.encode("latin-1") for label in name.split(".") if label)


def _reverse_address(qname: m.Name) -> ipaddress.IPv4Address | None:
    """`d.c.b.a.in-addr.arpa` (RFC 1035 §3.5) as a.b.c.d; None for anything else."""
    if len(qname) != 6 or tuple(label.lower() for label in qname[4:]) != _ARPA_V4:
        return None
    octets = qname[3::-1]
    if not all(o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets):
        return None
    return ipaddress.IPv4Address(".".join(o.decode() for o in octets))
