"""`events`: what happened on this host, in Docker's event shape, from a bounded ring in memory.

The runtime emits where things already happen (container create/start/die/destroy, network
create/destroy/connect/disconnect) and the agent's gossip follower tells `MemberWatch` the members
it sees (node up/down). The ring keeps the last `CAPACITY` events with a sequence number each;
the `events` request asks for those after a cursor, filtered, and waits (bounded) for new ones,
so a follower (`overlaynet events`) is fed without holding an API connection for long.
The ring and the filters are pure (time is an argument); `handle` is the thin trio shell.
Emits come from the runtime's worker threads and reads from the event loop: one lock guards
the ring.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio

from overlaynet.api import Request, check_seconds
from overlaynet.errors import InvalidArgument

# Docker's daemon keeps the last 256 events in memory for `--since` (daemon/events, eventsLimit);
# a lab host sees more (every task of a service), so four times that, still a few hundred KiB.
CAPACITY = 1024
# One `events` call waits at most this long for something new: a follower that went away costs
# the agent a second of a connection, and a follower notices an agent that went away as fast.
MAX_WAIT = 1.0
# How often a waiting call looks at the ring again (emits come from threads: no trio wake-up).
RECHECK = 0.05
# Docker's event types, and the filter keys `docker events --filter` takes that apply here.
TYPES = ("container", "network", "node")
FILTER_KEYS = ("type", "event", "container", "network", "node", "image", "label")


@dataclass(frozen=True)
class Events(Request):
    """Events after `after` (a cursor from an earlier answer; -1: from now on, nothing past),
    no older than `since` and no newer than `until` (Unix seconds), matching `filters`
    (`KEY=VALUE` as `docker events --filter`); waits at most `timeout` s when there are none."""

    OP: ClassVar[str] = "events"
    after: int = -1
    since: float | None = None
    until: float | None = None
    filters: tuple[str, ...] = ()
    timeout: float = MAX_WAIT

    def check(self) -> None:
        check_seconds("timeout", self.timeout, MAX_WAIT)
        if self.after < -1:
            raise InvalidArgument("argument 'after' must be -1 or more")
        parse_filters(self.filters)


@dataclass(frozen=True)
class Event:
    """One event: Docker's Type, Action, Actor (ID and Attributes) and time in nanoseconds."""

    seq: int
    time_ns: int
    type: str
    action: str
    actor_id: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def doc(self) -> dict[str, Any]:
        """Docker's JSON message (`docker events --format '{{json .}}'`)."""
        out: dict[str, Any] = {}
        if self.type == "container":
            # The old top-level fields Docker still sends for container events.
            out = {
                "status": self.action,
                "id": self.actor_id,
                "from": self.attributes.get("image", ""),
            }
        return {
            **out,
            "Type": self.type,
            "Action": self.action,
            "Actor": {"ID": self.actor_id, "Attributes": dict(self.attributes)},
            "scope": "swarm" if self.type == "node" else "local",
            "time": self.time_ns // 1_000_000_000,
            "timeNano": self.time_ns,
        }


Filters = dict[str, set[str]]


def parse_filters(items: Iterable[str]) -> Filters:
    """`KEY=VALUE` items → values per key (a key repeated: any of them; keys: all of them)."""
    out: Filters = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise InvalidArgument(f"bad format of filter (expected name=value): {item!r}")
        if key not in FILTER_KEYS:
            raise InvalidArgument(f"invalid filter '{key}' (events take {', '.join(FILTER_KEYS)})")
        if key == "type" and value not in TYPES:
            raise InvalidArgument(f"invalid filter 'type={value}' (types: {', '.join(TYPES)})")
        out.setdefault(key, set()).add(value)
    return out


def _names(ev: Event, kind: str) -> set[str]:
    """How `--filter container=…`/`network=…`/`node=…` may name the event's object."""
    if ev.type == kind:
        return {ev.actor_id, ev.attributes.get("name", "")}
    if kind == "container" and ev.type == "network":
        return {ev.attributes.get("container", "")}  # a container's connect/disconnect
    return set()


def _named(wanted: set[str], names: set[str]) -> bool:
    """A name matches exactly, an id by any prefix (Docker's fuzzy id match)."""
    return any(w in names or any(n.startswith(w) for n in names if len(n) == 64) for w in wanted)


def matches(ev: Event, filters: Filters) -> bool:
    if "type" in filters and ev.type not in filters["type"]:
        return False
    if "event" in filters and ev.action not in filters["event"]:
        return False
    for kind in ("container", "network", "node"):
        if kind in filters and not _named(filters[kind], _names(ev, kind)):
            return False
    if "image" in filters and ev.attributes.get("image") not in filters["image"]:
        return False
    if "label" in filters:
        for label in filters["label"]:
            key, sep, value = label.partition("=")
            if key not in ev.attributes or (sep and ev.attributes[key] != value):
                return False
    return True


class EventRing:
    """The last `capacity` events, each with a sequence number (the followers' cursor)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def cursor(self) -> int:
        """The sequence number of the newest event (0: none yet)."""
        return self._seq

    def emit(
        self,
        type: str,
        action: str,
        actor_id: str,
        attributes: Mapping[str, str],
        now_ns: int,
    ) -> Event:
        with self._lock:
            self._seq += 1
            ev = Event(self._seq, now_ns, type, action, actor_id, dict(attributes))
            self._events.append(ev)
        return ev

    def after(
        self,
        cursor: int,
        filters: Filters,
        since: float | None = None,
        until: float | None = None,
    ) -> list[Event]:
        """Events newer than `cursor`, in order, within [since, until] and matching `filters`."""
        with self._lock:
            events = list(self._events)
        lo = None if since is None else int(since * 1e9)
        hi = None if until is None else int(until * 1e9)
        return [
            ev
            for ev in events
            if ev.seq > cursor
            and (lo is None or ev.time_ns >= lo)
            and (hi is None or ev.time_ns <= hi)
            and matches(ev, filters)
        ]


class MemberWatch:
    """Node up/down from the gossip members as the agent sees them after each change."""

    def __init__(self) -> None:
        self._up: dict[str, bool] = {}

    def changes(
        self, members: Iterable[Mapping[str, object]], commit: bool = True
    ) -> list[tuple[str, str, str]]:
        """(name, address, "up"|"down") for each member whose liveness moved since last time
        (a member first seen alive is up; suspect is not down yet, as in SWIM); `commit`
        False only looks."""
        out = []
        for m in members:
            name, state = str(m["name"]), str(m["state"])
            if state == "suspect":
                continue
            up = state == "alive"
            if self._up.get(name) != up and (up or name in self._up):
                out.append((name, str(m.get("addr", "")), "up" if up else "down"))
            if commit:
                self._up[name] = up
        return out


class EventLog:
    """The host's event ring with the emitters the agent calls and the `events` handler."""

    def __init__(self, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.ring = EventRing()
        self._clock_ns = clock_ns
        self._members = MemberWatch()

    def emit(self, type: str, action: str, actor_id: str, attributes: Mapping[str, str]) -> None:
        self.ring.emit(type, action, actor_id, attributes, self._clock_ns())

    def moved(self, members: Iterable[Mapping[str, object]]) -> bool:
        """Whether `members` would give node events (the agent then asks the node names)."""
        return bool(self._members.changes(members, commit=False))

    def members(
        self, members: Iterable[Mapping[str, object]], names: Mapping[str, str] | None = None
    ) -> None:
        """The gossip members now (named by node id): node up/down events for those whose
        liveness moved, named by `names` (node id -> hostname, from the managers) if known."""
        for node_id, addr, action in self._members.changes(members):
            name = (names or {}).get(node_id, node_id)
            self.emit("node", action, node_id, {"name": name, "addr": addr})

    async def handle(self, req: Events) -> dict[str, Any]:
        """Events after the cursor; waits (at most `req.timeout`) while there are none."""
        filters = parse_filters(req.filters)
        cursor = self.ring.cursor if req.after < 0 else req.after
        deadline = trio.current_time() + req.timeout
        while True:
            newest = self.ring.cursor
            found = self.ring.after(cursor, filters, req.since, req.until)
            if found or req.after < 0 or trio.current_time() >= deadline:
                # An event emitted between the two reads is in `found`: never behind it.
                newest = max([newest, *(ev.seq for ev in found)])
                return {"events": [ev.doc() for ev in found], "cursor": newest}
            await trio.sleep(RECHECK)
