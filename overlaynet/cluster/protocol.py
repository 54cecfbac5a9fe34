"""The cluster management wire protocol on tcp/2377 (sans-IO): framing, AES-GCM, replay checks.

A frame is `u32 length | header | body`. The header travels in clear (so the manager can pick the
key) and is authenticated as AES-GCM associated data:

    magic "ONCM" | version u8 | kind u8 | sender length u8 | sender | nonce (12 bytes)

JOIN frames are sealed under a key derived from the join token's secret (the sender is the
token's cluster digest); REQUEST frames under the node's credential key (the sender is its node
id); a RESPONSE is sealed under the key of the request it answers, so the joiner also learns that
the manager knows the secret. The sealed body is JSON carrying `ts` (the sender's clock), `rid`
(a request id the response echoes) and `to`, the "ip:port" the sender connected to: a frame
captured on its way to one manager is refused by every other one. Within one manager, seen
nonces are refused for as long as a timestamp is acceptable, and writes are idempotent by
(sender, rid) in the cluster store, so a replay after a restart changes nothing.

ERROR frames are the one clear-text kind: the manager cannot seal an answer for someone whose key
it does not know (wrong token, unknown node), so such an answer is advisory and can only ever
make a request fail.

`cryptography` (~7 MiB and 22 modules, issue 15) is imported where a key is derived or used: an
agent that never joins a swarm never loads it.
"""

from __future__ import annotations

import json
import math
import struct
from collections import OrderedDict
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from overlaynet.aead import hkdf_sha256, load_aesgcm
from overlaynet.cluster.state import ClusterError, ErrorKind
from overlaynet.cluster.tokens import RandomBytes, Token

MAGIC = b"ONCM"
# Version 2 binds every sealed frame to the manager it is addressed to (`to`); a version 1 peer
# is told its version is unsupported instead of being refused for a missing field.
VERSION = 2
_LENGTH = struct.Struct("!I")
_FIXED = struct.Struct("!4sBBB")
# NIST SP 800-38D section 8.2: 96-bit nonces; random ones are safe far beyond our frame counts.
NONCE_LEN = 12
# AES-GCM's 128-bit tag.
TAG_LEN = 16
# Node ids are 25 characters and digests 50; anything longer is not ours.
SENDER_MAX = 64
# The largest message is a follower's full snapshot: ~150 bytes per address, so 4 MiB holds
# about 25,000 endpoints; a length field above it is garbage or an attack on memory.
MAX_FRAME_BYTES = 4 << 20
# A frame whose timestamp is further than this from the receiver's clock is refused; seen nonces
# are remembered for as long. Kerberos allows 5 minutes of skew; hosts in a swarm run NTP, and a
# short window keeps the replay cache small.
MAX_CLOCK_SKEW = 60.0
# Bound on the replay cache: beyond it the oldest nonces are forgotten (they are also the first
# to leave the window). Only frames that authenticated are recorded, so strangers cannot fill it.
REPLAY_CACHE_MAX = 100_000
# HKDF "info" labels keep the join key and node keys apart even if inputs were ever equal.
_JOIN_INFO = b"overlaynet cluster join v1"
_NODE_INFO = b"overlaynet cluster node v1 "
# What an ImportError names when the package is missing (`overlaynet.aead`).
_PURPOSE = "a swarm (join tokens, manager requests)"


class FrameKind(IntEnum):
    JOIN = 1
    REQUEST = 2
    RESPONSE = 3
    ERROR = 4


class MalformedFrame(ValueError):
    """Bytes on tcp/2377 that are not a valid frame; the server counts them and drops the peer."""


class AuthenticationFailed(MalformedFrame):
    """A sealed frame that does not open under the key its header names."""


class StaleFrame(MalformedFrame):
    """A frame whose timestamp is too far from now, or whose nonce was seen before (replay)."""


class ReplayedFrame(StaleFrame):
    """A frame whose nonce this receiver has already accepted."""


class MisdirectedFrame(MalformedFrame):
    """A sealed frame addressed to another manager (captured and replayed elsewhere)."""


@dataclass(frozen=True)
class Frame:
    kind: FrameKind
    sender: str
    nonce: bytes
    header: bytes
    body: bytes


@dataclass(frozen=True)
class Request:
    rid: str
    op: str
    args: dict[str, Any]
    ts: float
    # "ip:port" of the manager the sender connected to.
    to: str


# ----- keys -----


def derive_join_key(digest: str, secret: str) -> bytes:
    """The AES-256 key a join under this token is sealed with (RFC 5869 HKDF-SHA256)."""
    return hkdf_sha256(_PURPOSE, secret.encode(), digest.encode(), _JOIN_INFO)


def token_key(token: Token) -> bytes:
    return derive_join_key(token.digest, token.secret)


def derive_node_key(credential: bytes, node_id: str) -> bytes:
    """The AES-256 key of one node's requests, bound to its id."""
    return hkdf_sha256(_PURPOSE, credential, None, _NODE_INFO + node_id.encode())


# ----- frames -----


def _header(kind: FrameKind, sender: str, nonce: bytes) -> bytes:
    raw = sender.encode("ascii")
    if len(raw) > SENDER_MAX:
        raise ValueError(f"sender {sender!r} longer than {SENDER_MAX} bytes")
    if len(nonce) != NONCE_LEN:
        raise ValueError("nonce must be 12 bytes")
    return _FIXED.pack(MAGIC, VERSION, kind, len(raw)) + raw + nonce


def _framed(header: bytes, body: bytes) -> bytes:
    size = len(header) + len(body)
    if size > MAX_FRAME_BYTES:
        raise ValueError(f"frame of {size} bytes exceeds {MAX_FRAME_BYTES}")
    return _LENGTH.pack(size) + header + body


def seal(
    kind: FrameKind,
    sender: str,
    key: bytes,
    message: dict[str, Any],
    *,
    now: float,
    rand: RandomBytes,
) -> bytes:
    """One sealed frame, ready for the socket; `ts` is added to the message."""
    aesgcm, _ = load_aesgcm(_PURPOSE)
    nonce = rand(NONCE_LEN)
    header = _header(kind, sender, nonce)
    plain = json.dumps({**message, "ts": now}, separators=(",", ":")).encode()
    return _framed(header, aesgcm(key).encrypt(nonce, plain, header))


def encode_error(kind: ErrorKind | str, message: str) -> bytes:
    """A clear-text ERROR frame, for peers whose key the manager does not know."""
    body = json.dumps({"kind": str(kind), "error": message}).encode()
    return _framed(_header(FrameKind.ERROR, "", bytes(NONCE_LEN)), body)


def decode_error(frame: Frame) -> ClusterError:
    try:
        doc = json.loads(frame.body)
        return ClusterError(str(doc["kind"]), str(doc["error"]))
    except (ValueError, KeyError, TypeError, RecursionError):
        raise MalformedFrame("ERROR frame without a JSON kind and error") from None


def _parse(data: bytes) -> Frame:
    if len(data) < _FIXED.size:
        raise MalformedFrame("frame shorter than its header")
    magic, version, kind, sender_len = _FIXED.unpack_from(data)
    if magic != MAGIC:
        raise MalformedFrame("not an overlaynet cluster frame (bad magic)")
    if version != VERSION:
        raise MalformedFrame(f"unsupported cluster protocol version {version}")
    try:
        frame_kind = FrameKind(kind)
    except ValueError:
        raise MalformedFrame(f"unknown frame kind {kind}") from None
    end = _FIXED.size + sender_len + NONCE_LEN
    if sender_len > SENDER_MAX or len(data) < end:
        raise MalformedFrame("truncated frame header")
    try:
        sender = data[_FIXED.size : _FIXED.size + sender_len].decode("ascii")
    except UnicodeDecodeError:
        raise MalformedFrame("sender is not ASCII") from None
    nonce = data[end - NONCE_LEN : end]
    return Frame(frame_kind, sender, nonce, data[:end], data[end:])


class FrameDecoder:
    """Byte stream in, frames out. After a MalformedFrame the stream is unusable: drop it."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self.broken = False

    def receive_data(self, data: bytes) -> None:
        self._buf += data

    def next_frame(self) -> Frame | None:
        if self.broken:
            raise MalformedFrame("stream already failed")
        if len(self._buf) < _LENGTH.size:
            return None
        (size,) = _LENGTH.unpack_from(self._buf)
        if size > self._max:
            self.broken = True
            raise MalformedFrame(f"frame length {size} exceeds {self._max}")
        if len(self._buf) < _LENGTH.size + size:
            return None
        data = bytes(self._buf[_LENGTH.size : _LENGTH.size + size])
        del self._buf[: _LENGTH.size + size]
        try:
            return _parse(data)
        except MalformedFrame:
            self.broken = True
            raise


# ----- sealed messages -----


class ReplayGuard:
    """Refuses frames outside the clock window and nonces seen inside it."""

    def __init__(self, window: float = MAX_CLOCK_SKEW, capacity: int = REPLAY_CACHE_MAX) -> None:
        self.window = window
        self.capacity = capacity
        self._seen: OrderedDict[bytes, float] = OrderedDict()

    def check(self, nonce: bytes, ts: float, now: float) -> None:
        if not math.isfinite(ts) or abs(ts - now) > self.window:
            raise StaleFrame(
                f"frame timestamp is {ts - now:+.0f} s from this host's clock "
                f"(more than {self.window:.0f} s): check the clocks (NTP)"
            )
        # A frame stamped up to `window` ahead of this clock stays acceptable until `2 * window`
        # after it arrived, so its nonce is remembered that long (not `window`: such a frame
        # could be replayed once its nonce had been forgotten).
        while self._seen and (
            len(self._seen) >= self.capacity
            or next(iter(self._seen.values())) < now - 2 * self.window
        ):
            self._seen.popitem(last=False)
        if nonce in self._seen:
            raise ReplayedFrame("replayed frame (nonce seen before)")
        self._seen[nonce] = now


def open_sealed(
    frame: Frame, key: bytes, *, now: float, guard: ReplayGuard | None = None
) -> dict[str, Any]:
    """The JSON message inside a sealed frame, checked for authenticity and freshness."""
    aesgcm, invalid_tag = load_aesgcm(_PURPOSE)
    try:
        plain = aesgcm(key).decrypt(frame.nonce, frame.body, frame.header)
    except invalid_tag:
        raise AuthenticationFailed("frame does not authenticate") from None
    try:
        msg = json.loads(plain)
    except (ValueError, RecursionError):
        raise MalformedFrame("sealed body is not JSON") from None
    if not isinstance(msg, dict):
        raise MalformedFrame("sealed body is not a JSON object")
    ts = msg.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        raise MalformedFrame("sealed body has no timestamp")
    if guard is None:
        guard = ReplayGuard()
    guard.check(frame.nonce, float(ts), now)
    return msg


# Request ids are 16 hex digits from the client; the cap only stops abuse of the request log.
RID_MAX = 64


def request_from(msg: dict[str, Any]) -> Request:
    rid, op, args, to = msg.get("rid"), msg.get("op"), msg.get("args", {}), msg.get("to")
    if not isinstance(rid, str) or not isinstance(op, str) or not isinstance(args, dict):
        raise MalformedFrame("request needs a string rid, a string op and an object args")
    if not rid or len(rid) > RID_MAX:
        raise MalformedFrame(f"request id must have 1 to {RID_MAX} characters")
    if not isinstance(to, str):
        raise MalformedFrame("request does not name the manager it is addressed to")
    return Request(rid, op, args, float(msg["ts"]), to)


def check_recipient(request: Request, accepted: set[str]) -> None:
    """Refuse a request sealed for another manager: `accepted` holds this one's "ip:port"s."""
    if request.to not in accepted:
        raise MisdirectedFrame(
            f"frame is addressed to {request.to[:64]!r}, not to this manager (replayed?)"
        )


def peer_name(sockname: Any) -> str:
    """ "ip:port" of a socket address tuple, as both ends write `to`."""
    return f"{sockname[0]}:{sockname[1]}"


def seal_request(
    kind: FrameKind,
    sender: str,
    key: bytes,
    op: str,
    args: dict[str, Any],
    *,
    to: str,
    now: float,
    rand: RandomBytes,
    rid: str | None = None,
) -> tuple[bytes, str]:
    """A JOIN or REQUEST frame for the manager at `to`, and the request id its response must
    echo. A retry of the same request elsewhere passes the same `rid`: writes are idempotent by
    it."""
    rid = new_rid(rand) if rid is None else rid
    msg = {"rid": rid, "op": op, "args": args, "to": to}
    return seal(kind, sender, key, msg, now=now, rand=rand), rid


def new_rid(rand: RandomBytes) -> str:
    """64 random bits: unique among one sender's requests in any replay window."""
    return rand(8).hex()


def seal_result(key: bytes, rid: str, result: Any, *, now: float, rand: RandomBytes) -> bytes:
    msg = {"rid": rid, "ok": True, "result": result}
    return seal(FrameKind.RESPONSE, "", key, msg, now=now, rand=rand)


def seal_refusal(
    key: bytes, rid: str, error: ClusterError, *, now: float, rand: RandomBytes
) -> bytes:
    msg = {"rid": rid, "ok": False, "kind": error.kind.value, "error": error.message}
    return seal(FrameKind.RESPONSE, "", key, msg, now=now, rand=rand)


def open_response(
    frame: Frame, key: bytes, rid: str, *, now: float, guard: ReplayGuard | None = None
) -> Any:
    """The result a response carries; a refusal or an ERROR frame raises ClusterError."""
    if frame.kind is FrameKind.ERROR:
        raise decode_error(frame)
    if frame.kind is not FrameKind.RESPONSE:
        raise MalformedFrame(f"expected a response, got {frame.kind.name}")
    msg = open_sealed(frame, key, now=now, guard=guard)
    if msg.get("rid") != rid:
        raise MalformedFrame("response to another request")
    if msg.get("ok") is True:
        return msg.get("result")
    raise ClusterError(str(msg.get("kind", "invalid")), str(msg.get("error", "refused")))
