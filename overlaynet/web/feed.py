"""One browser's backlog between two sends: coalesced per key, bounded, sans-IO.

How the event stream is rate-limited and aggregated (issue 17's "state how"):
- The server sends a browser at most one message per `SEND_INTERVAL`. Whatever changed in
  between is folded into one pending patch, per key the latest record winning, so the backlog
  of a slow browser is never larger than the view itself, however long it lags: a container
  that flapped ten times costs one record.
- Timeline events are not folded (each is a fact), so they are bounded instead: at most
  `MAX_PENDING_EVENTS` wait per browser; past that the oldest go and the next message says how
  many (`dropped`), so the page can say so rather than pretend it saw everything.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from overlaynet.web.diff import Event, Patch

# Four messages a second reads as live to a person (a change shows within a quarter second of
# the poll that saw it) and keeps a 200-container lab's churn to a handful of messages.
SEND_INTERVAL = 0.25
# A timeline row is ~150 bytes of JSON: 256 pending rows is at most ~40 KiB per browser, and
# a burst bigger than that (every host restarting at once) is more than a person reads anyway.
MAX_PENDING_EVENTS = 256


class ClientFeed:
    """What one browser has not been sent yet."""

    def __init__(self, max_events: int = MAX_PENDING_EVENTS) -> None:
        self.patch = Patch()
        self.events: deque[Event] = deque(maxlen=max_events)
        self.dropped = 0  # events pushed out of the bounded backlog since the last take
        self.dropped_total = 0

    @property
    def pending(self) -> bool:
        return bool(self.patch) or bool(self.events) or self.dropped > 0

    def push(self, patch: Patch, events: list[Event]) -> None:
        self.patch.merge(patch)
        for event in events:
            if len(self.events) == self.events.maxlen:
                self.dropped += 1
                self.dropped_total += 1
            self.events.append(event)

    def take(self) -> dict[str, Any] | None:
        """The message to send now (and the backlog emptied), or None when nothing waits."""
        if not self.pending:
            return None
        msg = {
            **self.patch.to_json(),
            "events": [e.to_json() for e in self.events],
            "dropped": self.dropped,
        }
        self.patch = Patch()
        self.events.clear()
        self.dropped = 0
        return msg
