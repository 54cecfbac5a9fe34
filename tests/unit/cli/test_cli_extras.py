"""Pure parts of issue 12's leftovers: hostnames, run's flags, log tails."""

from __future__ import annotations

import pytest

from overlaynet.agent.runtime import check_hostname
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
