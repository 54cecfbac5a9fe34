"""The data keys of encrypted overlays as the managers keep them, sans-IO: a keyring of two per
network (the key that seals and, for a grace period, the one before it), drawn from `secrets`
(through the `rand` the managers pass in) and rotated on a period, as Docker rotates its ESP
keys; and the option values of `network create --opt encrypted`.

A key record is a JSON-ready dict {"id", "key" (hex), "created" (epoch seconds)}, primary first.
It travels to member nodes with the network (state.snapshot) and nowhere else: every view
shows `key_ids` only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from overlaynet.dataplane.seal import DataKey

#: The option that makes an overlay encrypted: Docker's `--opt encrypted` (any value but
#: "false"; Docker only asks whether it is there).
ENCRYPTED_OPTION = "encrypted"
#: Seconds between rotations, settable per network by this option.
ROTATION_OPTION = "encrypted.rotation"
#: Docker rotates the overlay's datapath keys every 12 hours (libnetwork keyRotationInterval).
ROTATION_PERIOD = 12 * 3600.0
#: A rotation must leave the previous key in use long enough for every node to learn the new
#: one (workers poll the managers every few seconds): a period shorter than a minute is refused.
ROTATION_MIN = 60.0
#: AES-128-GCM, as Docker's ESP (rfc4106(gcm(aes)) with a 128-bit key).
KEY_BYTES = 16
#: The primary and the previous key: a frame sealed just before a rotation still opens after it
#: (the gossip keyring keeps 3 because its rotation is staged; data keys need only the grace).
KEYRING_SIZE = 2

Rand = Callable[[int], bytes]
KeyRecord = dict[str, Any]


class DataKeyError(ValueError):
    """A bad option value for an encrypted overlay."""


def wanted(options: Mapping[str, str]) -> tuple[bool, float]:
    """From `network create` options: encrypted or not, and the rotation period."""
    if ENCRYPTED_OPTION not in options:
        if ROTATION_OPTION in options:
            raise DataKeyError(f"--opt {ROTATION_OPTION} needs --opt {ENCRYPTED_OPTION}")
        return False, ROTATION_PERIOD
    value = options[ENCRYPTED_OPTION].lower()
    if value not in ("", "true", "1", "false", "0"):
        raise DataKeyError(f"--opt {ENCRYPTED_OPTION}={value!r}: expected no value, true or false")
    text = options.get(ROTATION_OPTION)
    period = ROTATION_PERIOD
    if text is not None:
        try:
            period = float(text)
        except ValueError:
            raise DataKeyError(f"--opt {ROTATION_OPTION}={text!r}: expected seconds") from None
        if not ROTATION_MIN <= period <= 10 * 365 * 86400:
            raise DataKeyError(f"--opt {ROTATION_OPTION}: at least {ROTATION_MIN:.0f} seconds")
    return value not in ("false", "0"), period


def new_keyring(now: float, rand: Rand) -> list[KeyRecord]:
    """The first keyring of a new encrypted network: one key, id 1."""
    return [_record(1, now, rand)]


def due(ring: Sequence[KeyRecord], now: float, period: float) -> bool:
    """Whether the primary key has served its period."""
    return bool(ring) and now - float(ring[0]["created"]) >= period


def rotated(ring: Sequence[KeyRecord], now: float, rand: Rand) -> list[KeyRecord]:
    """A new primary (the next id, 1..255 round) and the old primary kept for the grace
    period; the key before that is gone."""
    if not ring:
        return new_keyring(now, rand)
    next_id = int(ring[0]["id"]) % 255 + 1
    return [_record(next_id, now, rand), *ring[: KEYRING_SIZE - 1]]


def key_ids(ring: Sequence[KeyRecord]) -> list[int]:
    """What views show: the ids in use, primary first, never a key."""
    return [int(k["id"]) for k in ring]


def data_keys(ring: Sequence[KeyRecord]) -> list[DataKey]:
    """The keyring as the VTEP takes it (`Vtep.set_keys`), primary first; raises ValueError
    (a SealError) on a malformed record."""
    try:
        return [DataKey(int(k["id"]), bytes.fromhex(str(k["key"]))) for k in ring]
    except (KeyError, TypeError) as error:
        raise DataKeyError(f"malformed data key record: {type(error).__name__}") from None


def _record(key_id: int, now: float, rand: Rand) -> KeyRecord:
    return {"id": key_id, "key": rand(KEY_BYTES).hex(), "created": now}
