"""The keyring seals with its primary key, opens with any, refuses what it cannot trust, and
rotates in memberlist's three steps (install, use, remove)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.gossip.config import ENVELOPE_OVERHEAD
from overlaynet.gossip.keyring import Keyring, KeyringError, Unauthenticated
from overlaynet.wire.gossip import FutureGossip, MalformedGossip

K1, K2, K3, K4 = (bytes([i]) * 32 for i in range(1, 5))
NOW = 1_700_000_000.0


def test_seal_then_open_round_trips_with_the_documented_overhead() -> None:
    ring = Keyring([K1])
    sealed = ring.seal(b"hello", NOW)
    assert len(sealed) == len(b"hello") + ENVELOPE_OVERHEAD
    opened = ring.open(sealed)
    assert (opened.plaintext, opened.sent_at) == (b"hello", NOW)
    assert len(opened.nonce) == 12


def test_a_secondary_key_still_opens_during_rotation() -> None:
    old = Keyring([K1])
    rotating = Keyring([K2, K1])
    assert rotating.open(old.seal(b"x", NOW)).plaintext == b"x"
    assert Keyring([K1, K2]).open(rotating.seal(b"y", NOW)).plaintext == b"y"


def test_a_foreign_key_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated):
        Keyring([K2]).open(Keyring([K1]).seal(b"x", NOW))


def test_any_flipped_bit_is_unauthenticated() -> None:
    ring = Keyring([K1])
    sealed = bytearray(ring.seal(b"payload", NOW))
    for index in range(1, len(sealed)):
        tampered = bytearray(sealed)
        tampered[index] ^= 1
        with pytest.raises(MalformedGossip):
            ring.open(bytes(tampered))


def test_a_tampered_send_time_is_unauthenticated() -> None:
    """The send time is what the replay window judges: restamping a capture must not work."""
    sealed = bytearray(Keyring([K1]).seal(b"x", NOW - 30))
    sealed[1:9] = int(NOW * 1000).to_bytes(8, "big")
    with pytest.raises(Unauthenticated):
        Keyring([K1]).open(bytes(sealed))


@given(st.binary(min_size=ENVELOPE_OVERHEAD, max_size=200))
def test_random_bytes_are_unauthenticated_never_from_the_future(junk: bytes) -> None:
    """Issue 18: junk whose first byte was above the envelope version counted as "future"."""
    with pytest.raises(Unauthenticated):
        Keyring([K1]).open(junk)


def test_a_newer_envelope_version_sealed_with_our_key_is_from_the_future() -> None:
    ring = Keyring([K1])
    nonce = os.urandom(12)
    head = bytes([2]) + int(NOW * 1000).to_bytes(8, "big")
    sealed = head + nonce + AESGCM(K1).encrypt(nonce, b"x", head)
    with pytest.raises(FutureGossip):
        ring.open(sealed)


def test_short_input_is_malformed() -> None:
    with pytest.raises(MalformedGossip) as info:
        Keyring([K1]).open(b"\x01short")
    assert not isinstance(info.value, Unauthenticated | FutureGossip)


def test_ring_size_key_lengths_and_duplicates_are_checked() -> None:
    with pytest.raises(KeyringError):
        Keyring([K1, K2, K3, K4])
    with pytest.raises(KeyringError):
        Keyring([b"short"])
    with pytest.raises(KeyringError):
        Keyring([])
    with pytest.raises(KeyringError):
        Keyring([K1, K1])


def test_install_use_remove_moves_sealing_to_the_new_key_and_cuts_the_old_one_off() -> None:
    ring = Keyring([K1])
    installed = ring.with_key(K2)
    assert installed.keys == (K1, K2)
    assert ring.open(installed.seal(b"a", NOW)).plaintext == b"a"  # still sealed with K1
    used = installed.with_primary(K2)
    assert used.keys == (K2, K1)
    assert installed.open(used.seal(b"b", NOW)).plaintext == b"b"
    with pytest.raises(Unauthenticated):
        ring.open(used.seal(b"c", NOW))  # a member never given K2 no longer hears us
    removed = used.without_key(K1)
    assert removed.keys == (K2,)
    with pytest.raises(Unauthenticated):
        removed.open(ring.seal(b"d", NOW))  # ...and is no longer heard


def test_rotation_steps_are_idempotent_and_refuse_what_would_break_the_ring() -> None:
    ring = Keyring([K1, K2])
    assert ring.with_key(K2).keys == ring.keys
    assert ring.without_key(K3).keys == ring.keys
    with pytest.raises(KeyringError):
        ring.with_primary(K3)  # not installed: peers could not open it
    with pytest.raises(KeyringError):
        ring.without_key(K1)  # the primary: nothing left to seal with
    with pytest.raises(KeyringError):
        ring.with_key(K3).with_key(K4)  # a fourth key
    assert ring.keys == (K1, K2)  # every refusal left the ring as it was


def test_fingerprints_name_keys_without_showing_them() -> None:
    prints = Keyring([K1, K2]).fingerprints()
    assert len(set(prints)) == 2
    assert all(K1.hex()[:12] not in p and len(p) == 12 for p in prints)
