"""Swarm join tokens, `SWMTKN-1-<cluster digest>-<secret>`, and base36 identifiers (pure).

The digest names the cluster (a joiner can tell a token for another swarm from a wrong secret);
the secret proves the joiner and decides its role: workers and managers get different secrets.
"""

from __future__ import annotations

import hashlib
import string
from collections.abc import Callable
from dataclasses import dataclass

# Docker's token layout (swarmkit ca/config.go: "SWMTKN", version 1, base36 parts).
TOKEN_PREFIX = "SWMTKN"
TOKEN_VERSION = 1
# swarmkit pads the base36 SHA-256 digest to 50 characters: 36**50 > 2**256.
DIGEST_LEN = 50
# swarmkit's secret is 128 random bits in base36 padded to 25 characters: 36**25 > 2**128.
SECRET_LEN = 25
SECRET_BYTES = 16
# swarmkit node and object ids: 128 random bits, base36, 25 characters (identity.NewID).
ID_LEN = 25
ID_BYTES = 16

_BASE36 = string.digits + string.ascii_lowercase
_BASE36_SET = frozenset(_BASE36)

RandomBytes = Callable[[int], bytes]


class BadToken(ValueError):
    """A join token that cannot be used; the message says what is wrong with it."""


@dataclass(frozen=True)
class Token:
    version: int
    digest: str
    secret: str

    def __str__(self) -> str:
        return f"{TOKEN_PREFIX}-{self.version}-{self.digest}-{self.secret}"


def base36(value: int, width: int) -> str:
    """`value` in lowercase base36, zero-padded on the left to `width` characters."""
    if value < 0:
        raise ValueError("base36 of a negative number")
    digits = []
    while value:
        value, d = divmod(value, 36)
        digits.append(_BASE36[d])
    text = "".join(reversed(digits)) or "0"
    if len(text) > width:
        raise ValueError(f"{len(text)} base36 digits do not fit in {width}")
    return text.rjust(width, "0")


def random_base36(rand: RandomBytes, nbytes: int = ID_BYTES, width: int = ID_LEN) -> str:
    """`nbytes` from `rand` written as `width` base36 characters (ids and token secrets)."""
    return base36(int.from_bytes(rand(nbytes), "big"), width)


def new_secret(rand: RandomBytes) -> str:
    return random_base36(rand, SECRET_BYTES, SECRET_LEN)


def cluster_digest(root_key: bytes) -> str:
    """The digest part of the cluster's tokens: SHA-256 of its root key in base36."""
    return base36(int.from_bytes(hashlib.sha256(root_key).digest(), "big"), DIGEST_LEN)


def make_token(digest: str, secret: str) -> str:
    return str(Token(TOKEN_VERSION, digest, secret))


def _check_base36(part: str, name: str, length: int) -> None:
    if len(part) != length:
        raise BadToken(
            f"invalid join token: the {name} part has {len(part)} characters, expected {length}"
        )
    if not set(part) <= _BASE36_SET:
        raise BadToken(f"invalid join token: the {name} part must be lowercase letters and digits")


def parse_token(text: str) -> Token:
    """A token from its text form, or BadToken with a one-line reason."""
    text = text.strip()
    parts = text.split("-")
    if parts[0] != TOKEN_PREFIX:
        raise BadToken(f"invalid join token: it must start with {TOKEN_PREFIX}-")
    if len(parts) != 4:
        raise BadToken(
            f"invalid join token: expected {TOKEN_PREFIX}-{TOKEN_VERSION}-<digest>-<secret>, "
            f"got {len(parts)} dash-separated parts"
        )
    _, version, digest, secret = parts
    if version != str(TOKEN_VERSION):
        raise BadToken(
            f"invalid join token: version {version!r} is not supported (expected {TOKEN_VERSION})"
        )
    _check_base36(digest, "digest", DIGEST_LEN)
    _check_base36(secret, "secret", SECRET_LEN)
    return Token(TOKEN_VERSION, digest, secret)
