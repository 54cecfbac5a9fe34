"""AES-GCM sealing of every gossip datagram and stream under a cluster keyring: up to three keys,
the first one seals, any one opens, so keys rotate without losing members (memberlist Keyring)."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from overlaynet.gossip.config import ENVELOPE_OVERHEAD
from overlaynet.wire.gossip import FutureGossip, MalformedGossip

# Envelope: version (1) | send time in ms (8) | nonce (12) | ciphertext | tag (16).
ENVELOPE_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_HEAD = struct.Struct("!BQ")
assert _HEAD.size + NONCE_BYTES + TAG_BYTES == ENVELOPE_OVERHEAD

# memberlist keeps a primary plus older keys during rotation; three covers install-use-remove.
MAX_KEYS = 3
# AES-128/192/256, as memberlist accepts.
KEY_SIZES = (16, 24, 32)
# Hosts of one cluster keep NTP time; a message stamped further ahead than this is refused.
MAX_FUTURE_SKEW = 60.0


class Unauthenticated(MalformedGossip):
    """No key of the ring opens it: tampered, foreign cluster, or a rotated-out key."""


class Keyring:
    """The cluster keys; `keys[0]` is the primary that seals."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or len(keys) > MAX_KEYS:
            raise ValueError(f"a keyring holds 1 to {MAX_KEYS} keys")
        for key in keys:
            if len(key) not in KEY_SIZES:
                raise ValueError(f"keys are {KEY_SIZES} bytes long, not {len(key)}")
        self.keys = list(keys)
        self._ciphers = [AESGCM(k) for k in self.keys]

    @classmethod
    def from_hex(cls, *hex_keys: str) -> Keyring:
        return cls([bytes.fromhex(k) for k in hex_keys])

    def rotated(self, primary: bytes) -> Keyring:
        """A ring with `primary` first, keeping the newest others up to MAX_KEYS."""
        rest = [k for k in self.keys if k != primary]
        return Keyring([primary, *rest][:MAX_KEYS])

    def seal(self, plaintext: bytes, wall_time: float, nonce: bytes | None = None) -> bytes:
        head = _HEAD.pack(ENVELOPE_VERSION, int(wall_time * 1000))
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        return head + nonce + self._ciphers[0].encrypt(nonce, plaintext, head)

    def open(self, data: bytes, wall_time: float) -> bytes:
        """The plaintext, or Unauthenticated / FutureGossip / MalformedGossip."""
        if len(data) < ENVELOPE_OVERHEAD:
            raise MalformedGossip("shorter than the envelope")
        version, sent_ms = _HEAD.unpack_from(data)
        if version != ENVELOPE_VERSION:
            if version > ENVELOPE_VERSION:
                raise FutureGossip(f"envelope version {version}")
            raise MalformedGossip(f"envelope version {version}")
        head = data[: _HEAD.size]
        nonce = data[_HEAD.size : _HEAD.size + NONCE_BYTES]
        body = data[_HEAD.size + NONCE_BYTES :]
        for cipher in self._ciphers:
            try:
                plaintext = cipher.decrypt(nonce, body, head)
            except InvalidTag:
                continue
            if sent_ms / 1000 > wall_time + MAX_FUTURE_SKEW:
                raise FutureGossip(f"sent {sent_ms / 1000 - wall_time:.0f} s in the future")
            return plaintext
        raise Unauthenticated("no key in the ring opens this message")
