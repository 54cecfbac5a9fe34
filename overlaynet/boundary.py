"""The edge of one connection or request task: what escapes it is counted, never the loop's end.

Every server loop (API, DNS over UDP and TCP, gossip, manager, VTEP) starts one task per peer
or request. Trio wraps errors from nested nurseries in exception groups, so a plain
`except SomeError` at that edge misses them and the error walks up the nursery tree until it
ends the agent. `contained` uses `except*`: every `Exception` inside a group is caught, counted
and logged once; cancellation (a `BaseException`) still propagates, as it must.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator


@contextlib.contextmanager
def contained(counters: Counter[str], key: str, log: logging.Logger, what: str) -> Iterator[None]:
    """Run a per-peer task body; any exception it raises (grouped or not) is counted under
    `key`, logged once with `what`, and swallowed."""
    try:
        yield
    except* Exception as group:
        counters[key] += 1
        first = group.exceptions[0]
        log.warning("%s ended by %s: %s", what, type(first).__name__, first)
        log.debug("%s traceback", what, exc_info=first)
