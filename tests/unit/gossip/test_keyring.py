"""The keyring seals with its primary key, opens with any, and refuses what it cannot trust."""

from __future__ import annotations

import pytest

from overlaynet.gossip.config import ENVELOPE_OVERHEAD
from overlaynet.gossip.keyring import MAX_FUTURE_SKEW, Keyring, Unauthenticated
from overlaynet.wire.gossip import FutureGossip, MalformedGossip

K1, K2, K3, K4 = (bytes([i]) * 32 for i in range(1, 5))
NOW = 1_700_000_000.0


def test_seal_then_open_round_trips_with_the_documented_overhead() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"hello", NOW)
    assert len(sealed) == len(b"hello") + ENVELOPE_OVERHEAD
    assert ring.open(sealed, NOW) == b"hello"


def test_a_secondary_key_still_opens_during_rotation() -> None:
    old = Keyring([K1])
    rotating = Keyring([K2, K1])
    assert rotating.open(old.seal(b"x", NOW), NOW) == b"x"
    assert Keyring([K1, K2]).open(rotating.seal(b"y", NOW), NOW) == b"y"


def test_a_foreign_key_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        Keyring([K2]).open(Keyring([K1]).seal(b"x", NOW), NOW)


def test_any_flipped_bit_is_unauthenticated() -> None:
    ring = Keyring([K1])
    sealed = bytearray(ring.seal(b"payload", NOW))
    for index in range(1, len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 1
        with pytest.raises(MalformedGossip):
            ring.open(bytes(tampered), NOW)


def test_a_message_stamped_in_the_future_is_refused() -> None:
    ring = Keyring([K1])
    with pytest.raises(FutureGossip):
        ring.open(ring.seal(b"x", NOW + MAX_FUTURE_SKEW + 5), NOW)


def test_a_newer_envelope_version_is_from_the_future_and_short_input_malformed() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"x", NOW)
    with pytest.raises(FutureGossip):
        ring.open(bytes([sealed[0] + 1]) + sealed[1:], NOW)
    with pytest.raises(MalformedGossip):
        ring.open(b"\x01short", NOW)


def test_ring_size_and_key_lengths_are_checked() -> None:
    with pytest.raises(ValueError):
        Keyring([K1, K2, K3, K4])
    with pytest.raises(ValueError):
        Keyring([b"short"])
    with pytest.raises(ValueError):
        Keyring([])


def test_rotation_puts_the_new_key_first_and_keeps_at_most_three() -> None:
    ring = Keyring([K1, K2, K3]).rotated(K4)
    assert ring.keys == [K4, K1, K2]
