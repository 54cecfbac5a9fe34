"""`lab impair NODE` without an impairment is refused before the lab is touched (sans-IO)."""

from __future__ import annotations

import pytest

from overlaynet.cli import main as cli


def test_an_impairment_of_nothing_is_refused_and_says_how_to_look_and_heal() -> None:
    # It used to install the empty impairment, which replaced NODE's own: healed in silence.
    ns = cli.build_parser().parse_args(["--lab", "nolabhere", "lab", "impair", "node1"])
    with pytest.raises(cli.CliError) as err:
        ns.func(ns)
    assert str(err.value) == (
        "lab impair node1 needs at least one of --loss, --delay, --duplicate, --reorder, "
        "--rate: nothing was changed (`lab ls` shows what applies, `lab heal node1` ends it)"
    )


def test_a_seed_alone_is_no_impairment_either() -> None:
    argv = ["--lab", "nolabhere", "lab", "impair", "node2", "--to", "node1", "--seed", "7"]
    ns = cli.build_parser().parse_args(argv)
    with pytest.raises(cli.CliError, match="needs at least one of"):
        ns.func(ns)
