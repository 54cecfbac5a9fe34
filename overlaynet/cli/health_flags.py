"""Health-check flags, shared by `run` and `service create/update`: `--health-cmd`,
`--health-interval/-timeout/-retries/-start-period`, `--no-healthcheck`, and Docker's
duration syntax they take. `run` turns them into its container's health-check label
(overlaynet/healthlabel.py); the service verbs send them to the managers as they are."""

from __future__ import annotations

import argparse
import re

from overlaynet.healthlabel import BadHealthFlags, check_of, to_label

# Go's time.ParseDuration units, as Docker's duration flags take them (`5s`, `1m30s`, `500ms`).
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def duration(text: str) -> float:
    """A Docker duration flag in seconds (a bare number is seconds, as overlaynet allows)."""
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 5s, 1m30s, 500ms")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


def add_health_flags(p: argparse.ArgumentParser) -> None:
    """Docker's six health-check flags on `p`."""
    p.add_argument("--health-cmd", help="command to run to check health")
    p.add_argument("--health-interval", type=duration, help="time between checks (default 30s)")
    p.add_argument("--health-timeout", type=duration, help="longest a check may run (30s)")
    p.add_argument("--health-retries", type=int, help="failures in a row to be unhealthy (3)")
    p.add_argument(
        "--health-start-period", type=duration, help="failures do not count before it (0s)"
    )
    p.add_argument("--no-healthcheck", action="store_true", help="disable any health check")


def health_labels(ns: argparse.Namespace) -> list[str]:
    """The label that carries `run`'s health check ([] when it has none); bad flags raise
    BadHealthFlags with `service create`'s message."""
    check = check_of(
        ns.health_cmd,
        ns.health_interval,
        ns.health_timeout,
        ns.health_retries,
        ns.health_start_period,
        ns.no_healthcheck,
    )
    # No image here carries a check of its own, so --no-healthcheck leaves nothing to disable.
    return [] if check is None or check.disabled else [to_label(check)]


__all__ = ["BadHealthFlags", "add_health_flags", "duration", "health_labels"]
