"""`overlaynet events`: the agent's events as `docker events` prints them, followed until Ctrl-C
or `--until`.

The agent keeps the events (agent/events.py) and answers `events` after a cursor, waiting up to
a second for new ones; this module parses `--since/--until`, asks in a loop and prints each
event on one line (`2026-11-29T19:30:00.000000000Z container start ID (image=alpine, name=web)`)
or through `--format`.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime
from typing import Any

from overlaynet.cli import gotemplate
from overlaynet.cli.main import CliError, call

# Go's time.ParseDuration units, as `docker events --since 10m` reads them.
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ns|us|µs|ms|s|m|h)")
# How long one call waits for new events (the agent's bound, agent/events.MAX_WAIT).
POLL_WAIT = 1.0


class TimeError(ValueError):
    """A `--since`/`--until` value that is no time docker would read."""


def parse_time(text: str, now: float) -> float:
    """Unix seconds for a docker time value: a Unix timestamp (`1700000000.5`), an RFC 3339
    date or time (`2026-11-29`, `2026-11-29T19:30:00Z`, with an offset or not: UTC then), or a
    Go duration before `now` (`10m`, `1h30m`; a negative one is after it: `-30s`)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    # Go's durations may be signed: docker reads `--until=-30s` as 30 s from now.
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-") if text[:1] in "+-" else text
    pos, total = 0, 0.0
    for m in _DURATION.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    else:
        if pos == len(body) and pos > 0:
            return now - sign * total
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeError(
            f"invalid time {text!r}: a Unix timestamp, an RFC 3339 date or time, "
            "or a duration such as 10m"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def timestamp(time_ns: int) -> str:
    """RFC 3339 with nanoseconds, in UTC, as `docker events` prints an event's time."""
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{nanos:09d}Z"


def line(doc: dict[str, Any]) -> str:
    """One event as docker prints it: time, type, action, actor id, (sorted attributes)."""
    actor = doc.get("Actor") or {}
    attrs = actor.get("Attributes") or {}
    text = f"{timestamp(int(doc['timeNano']))} {doc['Type']} {doc['Action']} {actor.get('ID', '')}"
    if attrs:
        text += " (" + ", ".join(f"{k}={v}" for k, v in sorted(attrs.items())) + ")"
    return text


def render(doc: dict[str, Any], template: str | None) -> str:
    if template is None:
        return line(doc)
    try:
        return gotemplate.render(template, doc)
    except gotemplate.TemplateError as e:
        raise CliError(f"template parsing error: {e}") from None


def cmd_events(ns: argparse.Namespace) -> int:
    now = time.time()
    try:
        since = parse_time(ns.since, now) if ns.since else None
        until = parse_time(ns.until, now) if ns.until else None
    except TimeError as e:
        raise CliError(str(e), 125) from None
    filters = list(ns.filter or [])
    # Without --since, only what happens from now on (docker's default); with it, the ring's.
    cursor = -1 if since is None else 0
    try:
        while True:
            done = until is not None and time.time() >= until
            res = call(
                ns,
                "events",
                after=cursor,
                since=since,
                until=until,
                filters=filters,
                timeout=0.0 if done or cursor < 0 else POLL_WAIT,
            )
            for doc in res["events"]:
                print(render(doc, ns.format), flush=True)
            cursor = int(res["cursor"])
            if done:
                return 0
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        return 0


def register(sub: Any) -> None:
    p = sub.add_parser("events", help="follow this host's events (until Ctrl-C or --until)")
    p.add_argument("--since", help="show events since a time or duration (e.g. 10m)")
    p.add_argument("--until", help="stop at this time or duration, then return")
    p.add_argument(
        "-f",
        "--filter",
        action="append",
        metavar="KEY=VALUE",
        help="type=container|network|node, event=start, container=NAME, network=NAME, ...",
    )
    p.add_argument("--format", help="Go template, e.g. '{{json .}}'")
    p.set_defaults(func=cmd_events)
