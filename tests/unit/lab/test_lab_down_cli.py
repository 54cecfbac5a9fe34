"""`lab down` of a lab that is not there says so and lists the labs there are (it removed
nothing and said `removed 0 namespaces`, exit 0)."""

from __future__ import annotations

import os

import pytest

from overlaynet import lab
from overlaynet.cli import lab_down
from overlaynet.cli import main as cli


def test_the_message_names_the_labs_there_are() -> None:
    assert lab_down.no_such_lab("nosuchlab", ["s9v", "t1"]) == (
        "overlaynet: no lab named nosuchlab; the labs on this machine are: s9v, t1 "
        "(lab ls shows their hosts)"
    )
    assert lab_down.no_such_lab("x", []).endswith("there are no labs on this machine")


@pytest.mark.skipif(os.geteuid() != 0, reason="lab down needs root")
def test_lab_down_of_a_missing_lab_exits_1_and_removes_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = "nosuchlab"
    assert name not in lab.all_labs()
    assert cli.main(["--lab", "s9v", "lab", "down", "--name", name]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.startswith(f"overlaynet: no lab named {name}")
    assert "removed" not in out.err
