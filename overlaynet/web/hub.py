"""The server's one copy of the cluster view, its recent timeline, and the browsers watching.

The watchers (agents.py) hand each new view to `Hub.update`; the hub diffs it against the last
one and pushes the patch and events into every browser's feed (coalesced and bounded there,
feed.py), then wakes the browsers' streams. Nothing here waits on a browser: a slow one only
grows its own bounded backlog.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from overlaynet.web.diff import Event, diff, events
from overlaynet.web.feed import ClientFeed
from overlaynet.web.model import View

# Browsers watching at once: a read-only lab view has a handful; the bound keeps a stray script
# that opens streams in a loop from costing more than this many feeds.
MAX_CLIENTS = 32
# Timeline a browser gets when it connects (or reconnects): the last few minutes of a busy lab.
RECENT_EVENTS = 500


class TooManyClients(RuntimeError):
    """Every stream slot is taken."""


class Subscriber:
    """One browser's stream: its backlog and the event that wakes its sender."""

    def __init__(self) -> None:
        self.feed = ClientFeed()
        self._wake = trio.Event()

    def notify(self) -> None:
        self._wake.set()

    async def wait(self) -> None:
        """Until something was pushed since the last wait."""
        await self._wake.wait()
        self._wake = trio.Event()


class Hub:
    def __init__(self, lab: str, max_clients: int = MAX_CLIENTS) -> None:
        self.lab = lab
        self.max_clients = max_clients
        self.view: View = {}
        self.recent: deque[Event] = deque(maxlen=RECENT_EVENTS)
        self.subscribers: set[Subscriber] = set()
        self.rounds = 0
        self.updated_at = 0.0
        self.counters: Counter[str] = Counter()
        # Per host: the agent's change generation the view was last asked at (agents.py).
        self.cursors: dict[str, int] = {}
        # Whether the page may act (`--allow-actions`): it shows the packets panel then.
        self.actions = False
        # Asks every host again (the watchers' safety round), set by the server: an action
        # that moved counters (a capture's ping) refreshes the tables before it answers.
        self.refresh: Callable[[], Awaitable[object]] | None = None

    @property
    def full(self) -> bool:
        return len(self.subscribers) >= self.max_clients

    def update(self, view: View, now: float) -> None:
        """A new view from the poller: diff, record, fan out."""
        patch = diff(self.view, view)
        news = events(self.view, view, now)
        if not self.view and view:
            news.append(_first_event(self.lab, view, now))
        self.view = view
        self.rounds += 1
        self.updated_at = now
        self.recent.extend(news)
        self.counters["events"] += len(news)
        if not patch and not news:
            return
        self.counters["patches"] += 1
        for sub in self.subscribers:
            sub.feed.push(patch, news)
            sub.notify()

    def snapshot(self) -> dict[str, Any]:
        """Everything a browser needs to start from (the stream's first message)."""
        return {
            "lab": self.lab,
            "actions": self.actions,
            "view": self.view,
            "events": [e.to_json() for e in self.recent],
            "updated_at": self.updated_at,
        }

    def stats(self) -> dict[str, Any]:
        return {
            "lab": self.lab,
            "rounds": self.rounds,
            "clients": len(self.subscribers),
            "keys": len(self.view),
            "dropped_events": sum(s.feed.dropped_total for s in self.subscribers),
            "cursors": dict(self.cursors),
            **self.counters,
        }

    def subscribe(self) -> Subscriber:
        """A new browser's feed, starting from now (send it `snapshot()` first); the caller
        must `unsubscribe` it when the browser goes."""
        if self.full:
            self.counters["clients_refused"] += 1
            raise TooManyClients(f"{self.max_clients} browsers are watching already")
        sub = Subscriber()
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)


def _first_event(lab: str, view: View, now: float) -> Event:
    hosts = [r for r in view.values() if r.get("kind") == "host"]
    ready = sum(1 for r in hosts if r["state"] == "Ready")
    containers = sum(1 for r in view.values() if r.get("kind") == "container")
    text = f"watching lab {lab}: {ready}/{len(hosts)} hosts Ready, {containers} containers"
    return Event(now, "host", "", text)
