"""Container names the embedded DNS can resolve (issue 18): at most 63 characters, no empty part."""

from __future__ import annotations

import pytest

from overlaynet.names import DNS_NAME_MAX, BadName, check_container_name


@pytest.mark.parametrize("good", ["web", "a" * 63, "f3.ovf", "my_app-2", "A1"])
def test_resolvable_names_are_accepted(good: str) -> None:
    assert check_container_name(good) == good


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("a" * 64, "at most 63"),
        ("a" * 100, "at most 63"),
        ("a..b", "non-empty parts"),
        ("web.", "non-empty parts"),
        ("", "must not be empty"),
        ("-web", "only [a-zA-Z0-9]"),
        ("web/1", "only [a-zA-Z0-9]"),
    ],
)
def test_names_that_could_never_resolve_are_refused(bad: str, why: str) -> None:
    with pytest.raises(BadName, match=why.replace("[", r"\[")):
        check_container_name(bad)


def test_the_limit_is_a_dns_labels() -> None:
    assert DNS_NAME_MAX == 63  # RFC 1035 §2.3.4


def test_aliases_are_named_in_the_error() -> None:
    with pytest.raises(BadName, match="alias name"):
        check_container_name("b" * 64, "alias")
