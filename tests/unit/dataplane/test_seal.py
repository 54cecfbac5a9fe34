"""The sealing of encrypted overlays (`dataplane.seal`), pure: round trips, what fails to
authenticate, the keyring during a rotation, nonces, and batches that stay batches."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.dataplane.seal import (
    KEY_ID_OFFSET,
    SEAL_OVERHEAD,
    DataKey,
    Sealer,
    SealError,
    parse_key,
)
from overlaynet.wire import vxlan

HEADER = vxlan.encode_header(4097)
KEY1 = DataKey(1, bytes(range(16)))
KEY2 = DataKey(2, bytes(range(32)))
A, B = "192.168.0.11", "192.168.0.12"


def sealed(sealer: Sealer, frame: bytes) -> bytes:
    head, body = sealer.seal(HEADER, frame)
    return head + body


@given(st.binary(min_size=0, max_size=2000))
def test_a_sealed_frame_opens_to_the_plain_datagram(frame: bytes) -> None:
    datagram = sealed(Sealer([KEY1], 1, A), frame)
    assert len(datagram) == len(HEADER) + len(frame) + SEAL_OVERHEAD
    assert datagram[:KEY_ID_OFFSET] == HEADER[:KEY_ID_OFFSET]  # flags and VNI in clear
    assert datagram[KEY_ID_OFFSET] == 1
    assert Sealer([KEY1], 1, B).open(datagram, A) == HEADER + frame


def test_the_frame_is_not_readable_in_the_datagram() -> None:
    frame = b"\xab\xcd" * 200
    assert b"\xab\xcd\xab\xcd" not in sealed(Sealer([KEY1], 1, A), frame)


@given(st.integers(min_value=0, max_value=8 + SEAL_OVERHEAD + 99), st.integers(1, 255))
def test_any_changed_octet_fails_to_authenticate(index: int, flip: int) -> None:
    datagram = bytearray(sealed(Sealer([KEY1], 1, A), bytes(100)))
    datagram[index] ^= flip
    assert Sealer([KEY1], 1, B).open(bytes(datagram), A) is None


def test_another_members_source_address_fails_to_authenticate() -> None:
    datagram = sealed(Sealer([KEY1], 1, A), b"frame")
    assert Sealer([KEY1], 1, B).open(datagram, "192.168.0.13") is None


def test_plain_vxlan_unknown_key_ids_wrong_keys_and_short_input_fail() -> None:
    receiver = Sealer([KEY1], 1, B)
    assert receiver.open(HEADER + bytes(64), A) is None  # plain VXLAN: key id 0
    assert receiver.open(sealed(Sealer([KEY2], 2, A), b"x" * 64), A) is None
    forged = Sealer([DataKey(1, bytes(16))], 1, A)  # the right id, another secret
    assert receiver.open(sealed(forged, b"x" * 64), A) is None
    for length in range(0, 8 + SEAL_OVERHEAD):
        assert receiver.open(sealed(Sealer([KEY1], 1, A), b"")[:length], A) is None
    assert receiver.open(sealed(Sealer([KEY1], 1, A), b"x"), "not an address") is None


def test_one_rotation_the_previous_key_opens_during_grace_and_not_after() -> None:
    before = Sealer([KEY1], 1, A)
    in_flight = sealed(before, b"sealed before the rotation")
    # The managers' new keyring: the new key seals, the previous one still opens.
    during = Sealer([KEY2, KEY1], 2, B)
    assert during.key_ids == [2, 1]
    assert during.open(in_flight, A) == HEADER + b"sealed before the rotation"
    fresh = sealed(Sealer([KEY2, KEY1], 2, A), b"new")
    assert fresh[KEY_ID_OFFSET] == 2
    assert during.open(fresh, A) == HEADER + b"new"
    after = Sealer([KEY2], 2, B)  # the grace period is over
    assert after.open(in_flight, A) is None
    assert after.open(fresh, A) == HEADER + b"new"


def test_nonces_never_repeat_and_a_new_sealer_draws_a_new_prefix() -> None:
    first = Sealer([KEY1], 1, A)
    nonces = {sealed(first, b"")[8:20] for _ in range(1000)}
    nonces |= {part[8:20] for part in first.seal_parts([HEADER, b"a"] * 1000)[0::2]}
    assert len(nonces) == 2000
    restarted = Sealer([KEY1], 1, A)  # counts from 1 again, with another prefix
    assert sealed(restarted, b"")[8:20] not in nonces


def test_a_batch_stays_a_batch_of_equal_sizes_with_a_shorter_last() -> None:
    frames = [bytes([i]) * 1400 for i in range(10)] + [b"end" * 100]
    parts = [item for frame in frames for item in (HEADER, frame)]
    out = Sealer([KEY1], 1, A).seal_parts(parts)
    sizes = [len(out[i]) + len(out[i + 1]) for i in range(0, len(out), 2)]
    assert sizes == [8 + 1400 + SEAL_OVERHEAD] * 10 + [8 + 300 + SEAL_OVERHEAD]
    opener = Sealer([KEY1], 1, B)
    opened = [opener.open(out[i] + out[i + 1], A) for i in range(0, len(out), 2)]
    assert opened == [HEADER + frame for frame in frames]


def test_bad_keys_and_keyrings_are_refused_without_showing_the_secret() -> None:
    with pytest.raises(SealError):
        DataKey(0, bytes(16))
    with pytest.raises(SealError):
        DataKey(1, bytes(24))
    with pytest.raises(SealError):
        Sealer([KEY1], 2, A)
    assert parse_key("7=" + "11" * 32) == DataKey(7, b"\x11" * 32)
    for text in ("7", "x=00", "1=zz", "1=" + "00" * 5):
        with pytest.raises(SealError):
            parse_key(text)
    assert "11" not in repr(DataKey(7, b"\x11" * 32))
