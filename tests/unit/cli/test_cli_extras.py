"""Pure parts of issue 12's leftovers: hostnames, run's flags, log tails."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.agent.hostcore import check_hostname
from overlaynet.cli.logtail import Tail, TailError, parse_tail, tail_lines
from overlaynet.cli.main import build_parser
from overlaynet.errors import InvalidArgument


@pytest.mark.parametrize("name", ["web01", "a", "db.example.org", "x" * 63, "a-b"])
def test_valid_hostnames_pass(name: str) -> None:
    check_hostname(name)


@pytest.mark.parametrize("name", ["", "no_way", "-lead", "trail-", "a..b", "x" * 64, "a b"])
def test_invalid_hostnames_are_refused(name: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid hostname"):
        check_hostname(name)


def test_run_h_is_hostname_as_in_docker() -> None:
    ns = build_parser().parse_args(["run", "-h", "web01", "alpine"])
    assert ns.hostname == "web01" and ns.image == "alpine"
    ns = build_parser().parse_args(["container", "run", "--hostname", "db", "alpine", "true"])
    assert ns.hostname == "db" and ns.cmd == ["true"]


def test_run_help_is_still_there(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(["run", "--help"])
    assert e.value.code == 0
    assert "--hostname" in capsys.readouterr().out


# ---- logs --tail ---------------------------------------------------------------------------


def test_parse_tail_reads_counts_and_all() -> None:
    assert parse_tail("all") is None
    assert parse_tail("3") == 3
    assert parse_tail("0") == 0
    assert parse_tail("-1") is None  # docker: a negative count is every line
    with pytest.raises(TailError, match="--tail"):
        parse_tail("three")


def test_tail_keeps_the_last_lines_including_an_unfinished_one() -> None:
    assert tail_lines(b"a\nb\nc\n", 1) == b"c\n"
    assert tail_lines(b"a\nb\nc", 2) == b"b\nc"
    assert tail_lines(b"a\nb\n", 5) == b"a\nb\n"
    assert tail_lines(b"a\nb\n", 0) == b""
    assert tail_lines(b"a\nb\n", None) == b"a\nb\n"


@given(
    st.lists(st.text(alphabet="ab\n", max_size=12).map(str.encode), max_size=8),
    st.integers(min_value=0, max_value=6),
)
def test_tail_fed_in_pieces_is_the_tail_of_the_whole(pieces: list[bytes], count: int) -> None:
    whole = b"".join(pieces)
    tail = Tail(count)
    for piece in pieces:
        tail.feed(piece)
    expected = b"".join(whole.splitlines(keepends=True)[-count:]) if count else b""
    assert tail.result() == expected
