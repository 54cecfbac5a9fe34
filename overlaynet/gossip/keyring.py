"""AES-GCM sealing of every gossip datagram and stream under a cluster keyring: up to three keys,
the first one seals, any one opens, so keys rotate without losing members (memberlist Keyring).

Rotation is three cluster-wide steps, each finished on every member before the next starts
(memberlist's InstallKey, UseKey, RemoveKey): install the new key (everyone can now open it),
use it (everyone seals with it), remove the old one (whoever did not get the new key is now
cut off). The ring itself is an immutable value; each step returns a new ring.

`cryptography` (~7 MiB and 22 modules, issue 15) is imported by the first `Keyring`: an agent
whose cluster gossips in clear never loads it."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from overlaynet.aead import load_aesgcm
from overlaynet.gossip.config import ENVELOPE_OVERHEAD
from overlaynet.wire.gossip import FutureGossip, MalformedGossip

# Envelope: version (1) | send time in ms (8) | nonce (12) | ciphertext | tag (16).
# Version and send time are the associated data: authenticated, so a replay cannot restamp them.
ENVELOPE_VERSION = 1
NONCE_BYTES = 12
TAG_BYTES = 16
_HEAD = struct.Struct("!BQ")
assert _HEAD.size + NONCE_BYTES + TAG_BYTES == ENVELOPE_OVERHEAD

# memberlist keeps a primary plus older keys during rotation; three covers install-use-remove.
MAX_KEYS = 3
# AES-128/192/256, as memberlist accepts.
KEY_SIZES = (16, 24, 32)


def fingerprint(key: bytes) -> str:
    """A key's short digest (48 bits of SHA-256): what nodes report and `info` shows, so that
    managers can tell which keys a node holds without the key ever leaving it."""
    return hashlib.sha256(key).hexdigest()[:12]


class Unauthenticated(MalformedGossip):
    """No key of the ring opens it: junk, tampered, foreign cluster, or a rotated-out key."""


class KeyringError(ValueError):
    """A rotation step that the ring cannot take (full, unknown key, removing the primary)."""


@dataclass(frozen=True, slots=True)
class Opened:
    """An authenticated envelope: what the replay guard needs, and the plaintext."""

    plaintext: bytes
    sent_at: float
    nonce: bytes


class Keyring:
    """The cluster keys; `keys[0]` is the primary that seals."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys or len(keys) > MAX_KEYS:
            raise KeyringError(f"a keyring holds 1 to {MAX_KEYS} keys")
        for key in keys:
            if len(key) not in KEY_SIZES:
                raise KeyringError(f"keys are {KEY_SIZES} bytes long, not {len(key)}")
        if len(set(keys)) != len(keys):
            raise KeyringError("a key is in the ring twice")
        self.keys: tuple[bytes, ...] = tuple(keys)
        aesgcm, self._invalid_tag = load_aesgcm("gossip encryption")
        self._ciphers = [aesgcm(k) for k in self.keys]

    @classmethod
    def from_hex(cls, *hex_keys: str) -> Keyring:
        return cls([bytes.fromhex(k) for k in hex_keys])

    # ---- rotation steps (memberlist InstallKey / UseKey / RemoveKey) -------------------------

    def with_key(self, key: bytes) -> Keyring:
        """Step 1: `key` can open too; the primary still seals. Installing twice is a no-op."""
        if key in self.keys:
            return self
        if len(self.keys) >= MAX_KEYS:
            raise KeyringError(f"the ring already holds {MAX_KEYS} keys: remove one first")
        return Keyring([*self.keys, key])

    def with_primary(self, key: bytes) -> Keyring:
        """Step 2: seal with `key`, which must already be installed (on every member)."""
        if key not in self.keys:
            raise KeyringError("install a key before making it the primary")
        return Keyring([key, *(k for k in self.keys if k != key)])

    def without_key(self, key: bytes) -> Keyring:
        """Step 3: `key` opens nothing any more. Removing an absent key is a no-op; the
        primary cannot be removed (the ring would have nothing to seal with)."""
        if key not in self.keys:
            return self
        if key == self.keys[0]:
            raise KeyringError("the primary key cannot be removed: make another one primary")
        return Keyring([k for k in self.keys if k != key])

    def fingerprints(self) -> list[str]:
        """Short digests of the keys, primary first: safe to show, never the keys."""
        return [fingerprint(k) for k in self.keys]

    # ---- sealing -------------------------------------------------------------------------

    def seal(self, plaintext: bytes, wall_time: float, nonce: bytes | None = None) -> bytes:
        head = _HEAD.pack(ENVELOPE_VERSION, int(wall_time * 1000))
        nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        return head + nonce + self._ciphers[0].encrypt(nonce, plaintext, head)

    def open(self, data: bytes) -> Opened:
        """The authenticated envelope, or Unauthenticated / FutureGossip / MalformedGossip.
        Nothing is believed before a key opens it: random bytes are unauthenticated, never
        "from the future" because of whatever their first byte happens to be."""
        if len(data) < ENVELOPE_OVERHEAD:
            raise MalformedGossip("shorter than the envelope")
        head = data[: _HEAD.size]
        nonce = data[_HEAD.size : _HEAD.size + NONCE_BYTES]
        body = data[_HEAD.size + NONCE_BYTES :]
        for cipher in self._ciphers:
            try:
                plaintext = cipher.decrypt(nonce, body, head)
            except self._invalid_tag:
                continue
            version, sent_ms = _HEAD.unpack(head)
            if version > ENVELOPE_VERSION:
                raise FutureGossip(f"envelope version {version}")
            if version < ENVELOPE_VERSION:
                raise MalformedGossip(f"envelope version {version}")
            return Opened(plaintext, sent_ms / 1000, nonce)
        raise Unauthenticated("no key in the ring opens this message")
