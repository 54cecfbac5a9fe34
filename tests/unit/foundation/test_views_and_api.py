"""Docker-shaped output (tables, durations) and the local API's request codec."""

from __future__ import annotations

import pytest

from overlaynet import api
from overlaynet.agent import views
from overlaynet.cli.tables import table
from overlaynet.errors import Conflict, NotFound
from overlaynet.humanize import human_duration


def test_table_aligns_columns_three_spaces_apart() -> None:
    out = table(["NETWORK ID", "NAME"], [["abc", "bridge"], ["defghijklmnop", "x"]])
    assert out.splitlines() == [
        "NETWORK ID      NAME",
        "abc             bridge",
        "defghijklmnop   x",
    ]


@pytest.mark.parametrize(
    ("secs", "text"),
    [
        (0.2, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (600, "10 minutes"),
        (3600, "About an hour"),
        (7200, "2 hours"),
        (86400 * 3, "3 days"),
    ],
)
def test_human_duration_matches_docker(secs: float, text: str) -> None:
    assert human_duration(secs) == text


def test_command_column_is_quoted_and_cut() -> None:
    assert views.command_text(["sleep", "infinity"]) == '"sleep infinity"'
    assert views.command_text(["sh", "-c", "echo a very long command"]) == '"sh -c echo a very l…"'


@pytest.mark.parametrize(
    "line",
    [b"", b"x", b"[]", b'{"op": 1}', b'{"op": ""}', b'{"op": "a", "args": []}', b"\xff", b"{" * 10],
)
def test_malformed_requests_raise_one_error_type(line: bytes) -> None:
    with pytest.raises(api.MalformedRequest):
        api.decode_request(line)


def test_oversized_request_is_refused() -> None:
    with pytest.raises(api.MalformedRequest, match="too large"):
        api.decode_request(b" " * (api.MAX_REQUEST_BYTES + 1))


def test_request_and_response_round_trip() -> None:
    op, args = api.decode_request(api.encode_request("network.ls", {"q": True}).strip())
    assert (op, args) == ("network.ls", {"q": True})
    assert api.decode_response(api.encode_result([1])) == [1]
    with pytest.raises(NotFound, match="gone"):
        api.decode_response(api.encode_error("not_found", "gone"))
    with pytest.raises(Conflict):
        api.decode_response(api.encode_error("conflict", "x"))
