"""benchmarks/hotpath.py's merged-ingress figure (Python work per received segment, through a
stand-in GRO socket): the C ingress drain took the stand-in, asked it for a descriptor and
`hotpath.py --no-loop` died with AttributeError before printing anything. No root."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# benchmarks/ is a directory of scripts, not a package: its modules import each other by name.
sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
hotpath = importlib.import_module("hotpath")


def test_merged_ingress_runs_the_python_drain_and_merges_every_buffer() -> None:
    # merged_ingress raises unless every one of its ROUNDS buffers became one merged write.
    ns_per_segment = hotpath.merged_ingress()
    assert ns_per_segment > 0
