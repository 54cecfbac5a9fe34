"""e2e_throughput's summary table: a figure the run did not measure is a dash, not 'nan (nanx)'."""

from __future__ import annotations

import importlib
import math
import sys
from pathlib import Path

# benchmarks/ is a directory of scripts, not a package: its modules import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
e2e = importlib.import_module("e2e_throughput")


def _row(value: float) -> dict[str, float]:
    row = {figure: value for figure in e2e.FIGURES}
    row.update(ping_loss=0.0, loaded_ping_loss=0.0)
    return row


def test_an_unmeasured_figure_prints_a_dash_and_the_others_their_ratio() -> None:
    overlay = _row(0.5)
    overlay["tcp_4_gbps"] = math.nan  # what --streams 1 leaves in the 4-stream column
    text = e2e.table({"kernel VXLAN": _row(2.0), "overlaynet": overlay})
    line = text.splitlines()[2]
    assert "nan" not in text
    assert line.split()[1:4] == ["0.500", "(", "0.25x)"]
    assert line.split()[4] == "-"
