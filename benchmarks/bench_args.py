"""Argument types the benchmarks share, so a count or a length that cannot be measured is
refused by argparse (`error: argument --rounds: 0 is not a positive integer`, exit 2) before a
testbed or a lab is built, not answered with a traceback after it (`--rounds 0` ended in
`KeyError: 'same-host bridge'` once e2e_throughput's namespaces were up). Sans-IO."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

# e2e_throughput measures and tabulates these iperf3 stream counts (its FIGURES name tcp_1_*
# and tcp_4_*): any other count has no column.
STREAM_COUNTS = (1, 4)


def positive_int(text: str) -> int:
    """An integer >= 1 (rounds, pings, trials, requests, replicas, frames…)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (cycles that may be left out)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0 (seconds, a scale)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def int_between(low: int, high: int) -> Callable[[str], int]:
    """An integer in [low, high] (a lab size the lab module takes)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value

    return parse


def stream_counts(text: str) -> set[int]:
    """`1,4`, `1` or `4`: the iperf3 stream counts e2e_throughput tabulates."""
    counts: set[int] = set()
    for part in text.split(","):
        try:
            n = int(part)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r} is not a stream count") from None
        if n not in STREAM_COUNTS:
            allowed = " or ".join(str(c) for c in STREAM_COUNTS)
            raise argparse.ArgumentTypeError(f"{n} streams: the table has {allowed}")
        counts.add(n)
    return counts


def variant(text: str) -> str:
    """`NAME=ARGS` (ARGS may be empty: `old=`); a bare word is refused, it named no arguments
    and silently measured the default VTEP a second time."""
    name, sep, _ = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=ARGS (e.g. 'naive=--no-batch')")
    return text
