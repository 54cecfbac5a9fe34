"""Join tokens: Docker's SWMTKN-1-<digest>-<secret> shape and one-line reasons for bad ones."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cluster import tokens
from overlaynet.cluster.tokens import BadToken, parse_token

from .helpers import seeded_rand


def _token() -> str:
    rand = seeded_rand()
    return tokens.make_token(tokens.cluster_digest(rand(32)), tokens.new_secret(rand))


def _with_part(text: str, index: int, value: str) -> str:
    parts = text.split("-")
    parts[index] = value
    return "-".join(parts)


def test_token_has_dockers_shape() -> None:
    text = _token()
    prefix, version, digest, secret = text.split("-")
    assert (prefix, version) == ("SWMTKN", "1")
    assert len(digest) == 50 and len(secret) == 25
    assert set(digest + secret) <= set("0123456789abcdefghijklmnopqrstuvwxyz")


def test_parse_round_trips_and_ignores_surrounding_whitespace() -> None:
    text = _token()
    token = parse_token(f"  {text}\n")
    assert str(token) == text
    assert token.version == 1


def test_digest_depends_only_on_the_root_key() -> None:
    assert tokens.cluster_digest(b"a" * 32) == tokens.cluster_digest(b"a" * 32)
    assert tokens.cluster_digest(b"a" * 32) != tokens.cluster_digest(b"b" * 32)


def test_largest_values_fit_their_widths() -> None:
    assert len(tokens.base36(2**256 - 1, tokens.DIGEST_LEN)) == 50
    assert len(tokens.base36(2**128 - 1, tokens.SECRET_LEN)) == 25
    assert tokens.base36(0, 3) == "000"
    assert tokens.base36(35, 1) == "z"
    with pytest.raises(ValueError):
        tokens.base36(36, 1)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda t: t.replace("SWMTKN", "SWMTKX"), "must start with SWMTKN-"),
        (lambda t: "garbage", "must start with SWMTKN-"),
        (lambda t: t.replace("SWMTKN-1-", "SWMTKN-2-"), "version '2' is not supported"),
        (lambda t: t[:-1], "secret part has 24 characters, expected 25"),
        (lambda t: t[:-1] + "A", "secret part must be lowercase"),
        (lambda t: _with_part(t, 2, "0" * 49), "digest part has 49 characters, expected 50"),
        (lambda t: _with_part(t, 2, "!" * 50), "digest part must be lowercase"),
        (lambda t: t + "-extra", "got 5 dash-separated parts"),
        (lambda t: "SWMTKN-1", "got 2 dash-separated parts"),
    ],
)
def test_malformed_tokens_say_what_is_wrong(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadToken, match=reason) as info:
        parse_token(mutate(_token()))
    assert str(info.value).startswith("invalid join token: ")
    assert "\n" not in str(info.value)


@given(st.text(max_size=120))
def test_parse_never_fails_other_than_with_bad_token(text: str) -> None:
    try:
        token = parse_token(text)
    except BadToken:
        return
    assert str(token) == text.strip()
