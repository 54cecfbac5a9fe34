"""Gossip wire format: SWIM and network-table messages, packed into one datagram or one
push-pull stream. Pure codec: bytes in, frozen records out; anything wrong is MalformedGossip."""

from __future__ import annotations

import enum
import functools
import ipaddress
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

# Bumped when the format changes incompatibly; a peer speaking a newer one is "from the future".
PROTOCOL_VERSION = 1

# A message body is length-prefixed with 16 bits: nothing in one datagram can be larger.
MAX_MESSAGE_BODY = 0xFFFF

# Names, table and network ids travel with an 8-bit length: Docker ids are 25-64 characters.
MAX_NAME_BYTES = 255

Address = tuple[str, int]

# Counters must leave room to count past them: a refutation adds one to an incarnation and a
# write ticks past every Lamport time seen, so values at the top of their field are refused.
MAX_INCARNATION = (1 << 32) - 2
MAX_LTIME = (1 << 63) - 1


class MalformedGossip(ValueError):
    """A gossip datagram or stream that cannot be trusted: the shell counts and drops it."""


class FutureGossip(MalformedGossip):
    """Well-formed, but from a newer protocol version or a clock too far ahead."""


class OversizedGossip(MalformedGossip):
    """Larger than any datagram or push-pull stream this node accepts."""


class MemberState(enum.IntEnum):
    """SWIM member states, ordered the way they override each other at equal incarnation."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Ping:
    seq: int
    target: str
    source: str
    source_addr: Address


@dataclass(frozen=True, slots=True)
class PingReq:
    seq: int
    target: str
    target_addr: Address
    source: str
    source_addr: Address
    want_nack: bool


@dataclass(frozen=True, slots=True)
class Ack:
    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Nack:
    seq: int
    source: str


@dataclass(frozen=True, slots=True)
class Alive:
    incarnation: int
    node: str
    addr: Address


@dataclass(frozen=True, slots=True)
class Suspect:
    incarnation: int
    node: str
    source: str


@dataclass(frozen=True, slots=True)
class Dead:
    """`source == node` means a graceful leave (memberlist's convention)."""

    incarnation: int
    node: str
    source: str


@dataclass(frozen=True, slots=True)
class NetworkEvent:
    """`node` joined or left `network`'s gossip at Lamport time `ltime`; `offload`: its VTEP
    takes offload-mode datagrams (`wire.chunks`) on the network when the network has offload on
    (the capability, issue 15). Encoded as one optional trailing octet, present only when set,
    so an event without it is the bytes it always was."""

    node: str
    network: str
    ltime: int
    joined: bool
    offload: bool = False


@dataclass(frozen=True, slots=True)
class TableEvent:
    """One table entry's state as its owner last wrote it; `deleted` makes it a tombstone."""

    table: str
    network: str
    key: str
    owner: str
    ltime: int
    deleted: bool
    value: bytes


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """A member as one node sees it: the unit of the push-pull membership exchange."""

    node: str
    addr: Address
    incarnation: int
    state: MemberState


@dataclass(frozen=True, slots=True)
class PushPullHeader:
    sender: str
    join: bool


Message = (
    Ping
    | PingReq
    | Ack
    | Nack
    | Alive
    | Suspect
    | Dead
    | NetworkEvent
    | TableEvent
    | MemberRecord
    | PushPullHeader
)


class _Kind(enum.IntEnum):
    PING = 1
    PING_REQ = 2
    ACK = 3
    NACK = 4
    ALIVE = 5
    SUSPECT = 6
    DEAD = 7
    NETWORK = 8
    TABLE = 9
    MEMBER = 10
    PUSH_PULL = 11


_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_HEAD = struct.Struct("!BH")


def _str(text: str) -> bytes:
    raw = text.encode()
    if len(raw) > MAX_NAME_BYTES:
        raise ValueError(f"name longer than {MAX_NAME_BYTES} bytes: {text[:40]!r}...")
    return _U8.pack(len(raw)) + raw


def _addr(addr: Address) -> bytes:
    return _str(addr[0]) + _U16.pack(addr[1])


def _body(msg: Message) -> tuple[_Kind, bytes]:
    match msg:
        case Ping():
            return _Kind.PING, (
                _U32.pack(msg.seq) + _str(msg.target) + _str(msg.source) + _addr(msg.source_addr)
            )
        case PingReq():
            return _Kind.PING_REQ, (
                _U32.pack(msg.seq)
                + _str(msg.target)
                + _addr(msg.target_addr)
                + _str(msg.source)
                + _addr(msg.source_addr)
                + _U8.pack(msg.want_nack)
            )
        case Ack():
            return _Kind.ACK, _U32.pack(msg.seq) + _str(msg.source)
        case Nack():
            return _Kind.NACK, _U32.pack(msg.seq) + _str(msg.source)
        case Alive():
            return _Kind.ALIVE, _U32.pack(msg.incarnation) + _str(msg.node) + _addr(msg.addr)
        case Suspect():
            return _Kind.SUSPECT, _U32.pack(msg.incarnation) + _str(msg.node) + _str(msg.source)
        case Dead():
            return _Kind.DEAD, _U32.pack(msg.incarnation) + _str(msg.node) + _str(msg.source)
        case NetworkEvent():
            return _Kind.NETWORK, (
                _str(msg.node)
                + _str(msg.network)
                + _U64.pack(msg.ltime)
                + _U8.pack(msg.joined)
                + (_U8.pack(1) if msg.offload else b"")
            )
        case TableEvent():
            if len(msg.value) > MAX_MESSAGE_BODY - 1100:
                raise ValueError("table value too large for a datagram")
            return _Kind.TABLE, (
                _str(msg.table)
                + _str(msg.network)
                + _str(msg.key)
                + _str(msg.owner)
                + _U64.pack(msg.ltime)
                + _U8.pack(msg.deleted)
                + _U16.pack(len(msg.value))
                + msg.value
            )
        case MemberRecord():
            return _Kind.MEMBER, (
                _str(msg.node) + _addr(msg.addr) + _U32.pack(msg.incarnation) + _U8.pack(msg.state)
            )
        case PushPullHeader():
            return _Kind.PUSH_PULL, _str(msg.sender) + _U8.pack(msg.join)
    raise TypeError(f"not a gossip message: {msg!r}")


def encode_message(msg: Message) -> bytes:
    """One message with its type and length: the unit a packet is built from."""
    kind, body = _body(msg)
    return _HEAD.pack(kind, len(body)) + body


def encode_packet(messages: Iterable[bytes]) -> bytes:
    """Join already-encoded messages behind the version byte."""
    return _U8.pack(PROTOCOL_VERSION) + b"".join(messages)


def encode(messages: Sequence[Message]) -> bytes:
    return encode_packet(encode_message(m) for m in messages)


# The version byte in front of every packet.
PACKET_OVERHEAD = 1


class _Reader:
    """Bounds-checked cursor over one message body; kept flat because it is the simulator's
    innermost loop."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def take(self, n: int) -> bytes:
        pos = self.pos
        end = pos + n
        if end > self.end:
            raise MalformedGossip("truncated message")
        self.pos = end
        return self.buf[pos:end]

    def _unpack(self, fmt: struct.Struct) -> int:
        pos = self.pos
        if pos + fmt.size > self.end:
            raise MalformedGossip("truncated message")
        self.pos = pos + fmt.size
        value: int = fmt.unpack_from(self.buf, pos)[0]
        return value

    def u8(self) -> int:
        pos = self.pos
        if pos >= self.end:
            raise MalformedGossip("truncated message")
        self.pos = pos + 1
        return self.buf[pos]

    def u16(self) -> int:
        return self._unpack(_U16)

    def u32(self) -> int:
        return self._unpack(_U32)

    def u64(self) -> int:
        return self._unpack(_U64)

    def flag(self) -> bool:
        value = self.u8()
        if value > 1:
            raise MalformedGossip(f"bad flag {value}")
        return value == 1

    def name(self) -> str:
        buf = self.buf
        pos = self.pos
        if pos >= self.end:
            raise MalformedGossip("truncated message")
        end = pos + 1 + buf[pos]
        if end > self.end or end == pos + 1:
            raise MalformedGossip("truncated or empty name")
        self.pos = end
        try:
            return buf[pos + 1 : end].decode()
        except UnicodeDecodeError as exc:
            raise MalformedGossip("name is not UTF-8") from exc

    def addr(self) -> Address:
        host, port = self.name(), self._unpack(_U16)
        # Addresses are where we send next: an IP literal and a real port, never a name to
        # resolve (a lookup, or a NUL that makes sendto raise TypeError) or port 0.
        if port == 0 or not _is_ip(host):
            raise MalformedGossip(f"not an IP address and port: {host[:40]!r}:{port}")
        return host, port

    def incarnation(self) -> int:
        value = self._unpack(_U32)
        if value > MAX_INCARNATION:
            raise MalformedGossip(f"incarnation {value} leaves no room to refute")
        return value

    def ltime(self) -> int:
        value = self._unpack(_U64)
        if value > MAX_LTIME:
            raise MalformedGossip(f"Lamport time {value} leaves no room to advance")
        return value


@functools.lru_cache(maxsize=4096)
def _is_ip(host: str) -> bool:
    """Cached: the same few member addresses arrive in nearly every datagram."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _decode_ping(r: _Reader) -> Message:
    return Ping(r.u32(), r.name(), r.name(), r.addr())


def _decode_ping_req(r: _Reader) -> Message:
    return PingReq(r.u32(), r.name(), r.addr(), r.name(), r.addr(), r.flag())


def _decode_member(r: _Reader) -> Message:
    node, addr, incarnation, state = r.name(), r.addr(), r.incarnation(), r.u8()
    if state > max(MemberState):
        raise MalformedGossip(f"unknown member state {state}")
    return MemberRecord(node, addr, incarnation, MemberState(state))


def _decode_table(r: _Reader) -> Message:
    table, network, key, owner = r.name(), r.name(), r.name(), r.name()
    ltime, deleted = r.ltime(), r.flag()
    return TableEvent(table, network, key, owner, ltime, deleted, r.take(r.u16()))


_DECODERS: dict[int, Callable[[_Reader], Message]] = {
    _Kind.PING: _decode_ping,
    _Kind.PING_REQ: _decode_ping_req,
    _Kind.ACK: lambda r: Ack(r.u32(), r.name()),
    _Kind.NACK: lambda r: Nack(r.u32(), r.name()),
    _Kind.ALIVE: lambda r: Alive(r.incarnation(), r.name(), r.addr()),
    _Kind.SUSPECT: lambda r: Suspect(r.incarnation(), r.name(), r.name()),
    _Kind.DEAD: lambda r: Dead(r.incarnation(), r.name(), r.name()),
    _Kind.NETWORK: lambda r: NetworkEvent(
        r.name(), r.name(), r.ltime(), r.flag(), r.flag() if r.pos < r.end else False
    ),
    _Kind.TABLE: _decode_table,
    _Kind.MEMBER: _decode_member,
    _Kind.PUSH_PULL: lambda r: PushPullHeader(r.name(), r.flag()),
}


def split(data: bytes) -> list[bytes]:
    """The messages of one packet, each still encoded with its header: lets a receiver skip
    news it has already merged without parsing it again. MalformedGossip on bad framing."""
    if not data:
        raise MalformedGossip("empty packet")
    if data[0] != PROTOCOL_VERSION:
        if data[0] > PROTOCOL_VERSION:
            raise FutureGossip(f"protocol version {data[0]} is newer than {PROTOCOL_VERSION}")
        raise MalformedGossip(f"unknown protocol version {data[0]}")
    pos = 1
    size = len(data)
    raws: list[bytes] = []
    while pos < size:
        if pos + _HEAD.size > size:
            raise MalformedGossip("truncated message header")
        _, length = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if end > size:
            raise MalformedGossip("truncated message")
        raws.append(data[pos:end])
        pos = end
    return raws


def decode_message(raw: bytes) -> Message:
    """One message as `split` returns it (header included)."""
    if len(raw) < _HEAD.size:
        raise MalformedGossip("truncated message header")
    kind, length = _HEAD.unpack_from(raw)
    end = _HEAD.size + length
    if end != len(raw):
        raise MalformedGossip("message length does not match its header")
    decoder = _DECODERS.get(kind)
    if decoder is None:
        raise MalformedGossip(f"unknown message type {kind}")
    inner = _Reader(raw, _HEAD.size, end)
    message = decoder(inner)
    if inner.pos != end:
        raise MalformedGossip(f"{end - inner.pos} trailing bytes in message type {kind}")
    return message


def decode(data: bytes) -> list[Message]:
    """All messages of one packet, or MalformedGossip (FutureGossip for a newer version)."""
    return [decode_message(raw) for raw in split(data)]


# Messages whose effect is a monotonic merge: applying the same bytes twice changes nothing,
# so a receiver may drop exact repeats unparsed.
IDEMPOTENT_KINDS = frozenset({_Kind.ALIVE, _Kind.SUSPECT, _Kind.DEAD, _Kind.NETWORK, _Kind.TABLE})
