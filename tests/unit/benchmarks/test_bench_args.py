"""The benchmarks' argument types (benchmarks/bench_args.py) and their scripts' refusals: a
count that cannot be measured is refused before a testbed is built. `e2e_throughput.py
--rounds 0` built its namespaces and died with KeyError: 'same-host bridge'; `--streams 3` and
`--variant noequals` ran the whole default benchmark; web_load cut --hosts 0 to 2 without a
word. No root: argparse refuses before anything runs."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]
# util-linux: runs the refused scripts as root with no capabilities (no namespaces, no labs).
SETPRIV = "/usr/bin/setpriv"
# benchmarks/ is a directory of scripts, not a package: its modules import each other by name.
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_args = importlib.import_module("bench_args")


@given(st.integers(min_value=1, max_value=10**6))
def test_positive_int_takes_every_count(n: int) -> None:
    assert bench_args.positive_int(str(n)) == n


@pytest.mark.parametrize("text", ["0", "-3", "x", "1.5", ""])
def test_positive_int_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench_args.positive_int(text)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "inf", "x"])
def test_positive_float_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench_args.positive_float(text)


def test_positive_float_takes_a_fraction() -> None:
    assert bench_args.positive_float("0.05") == 0.05


def test_int_between_bounds() -> None:
    parse = bench_args.int_between(2, 50)
    assert (parse("2"), parse("50")) == (2, 50)
    for text in ("0", "1", "51"):
        with pytest.raises(argparse.ArgumentTypeError, match="between 2 and 50"):
            parse(text)


def test_stream_counts() -> None:
    assert bench_args.stream_counts("1,4") == {1, 4}
    assert bench_args.stream_counts("4") == {4}
    with pytest.raises(argparse.ArgumentTypeError, match="the table has 1 or 4"):
        bench_args.stream_counts("3")


def test_variant_needs_name_and_equals() -> None:
    assert bench_args.variant("old=") == "old="
    assert bench_args.variant("naive=--no-batch") == "naive=--no-batch"
    for text in ("noequals", "=--offload"):
        with pytest.raises(argparse.ArgumentTypeError, match="NAME=ARGS"):
            bench_args.variant(text)


@pytest.mark.parametrize(
    ("script", "args", "says"),
    [
        ("e2e_throughput.py", ["--rounds", "0"], "argument --rounds: 0 is not a positive integer"),
        ("e2e_throughput.py", ["--streams", "3"], "argument --streams: 3 streams"),
        ("e2e_throughput.py", ["--variant", "noequals"], "is not NAME=ARGS"),
        ("matrix.py", ["--seconds", "0"], "argument --seconds: 0 is not a positive integer"),
        ("services.py", ["--requests", "0"], "argument --requests"),
        ("rolling_update.py", ["--replicas", "0"], "argument --replicas"),
        ("leader_failover.py", ["--rounds", "0"], "argument --rounds"),
        ("web_load.py", ["--hosts", "0"], "argument --hosts: 0 is not between 2 and 50"),
        ("soak.py", ["--scale", "-1"], "argument --scale"),
        ("swarm_convergence.py", ["--trials", "0"], "argument --trials"),
        ("dns_qps.py", ["--seconds", "0"], "argument --seconds"),
        ("hotpath.py", ["--frames", "0"], "argument --frames"),
        ("profile_vtep.py", ["--streams", "0"], "argument --streams"),
        ("batch_sizes.py", ["noequals"], "is not NAME=ARGS"),
    ],
)
def test_scripts_refuse_before_they_build_anything(script: str, args: list[str], says: str) -> None:
    # Without capabilities: a script that stopped refusing fails to build namespaces instead
    # of running a benchmark on the shared machine.
    drop = [SETPRIV, "--bounding-set", "-all", "--inh-caps", "-all"] if os.geteuid() == 0 else []
    out = subprocess.run(
        [*drop, sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    assert says in out.stderr and "Traceback" not in out.stderr
