"""The agent's `watch` operation: a long-poll that answers when this host's state changes.

A subscriber (the web view, overlaynet/web/agents.py) asks `watch(epoch, cursor)`; the answer
comes as soon as some part of the host's state (containers, networks, gossip members, endpoint
tables, FDB/ARP, VIPs) differs from what the subscriber was last told, or after at most
`MAX_WAIT` with nothing changed. It carries the new cursor (the change generation) and every
part that changed after the old one, whole. So the server is fed, not polling, and one call
never holds a connection (or an API slot) for long.

How changes are found: `ChangeLog` (pure) fingerprints each part and bumps the generation when a
fingerprint moves. The agent pokes the `ChangeFeed` wherever its state changes (after the planes
follow a request or gossip, `Agent._sync_planes`); a poke wakes the waiters, which re-read the
parts. A change no hook pokes for (a VIP's backends, which the LB plane applies on its own
clock) is still found by the re-read every call makes before it answers.

The generation lives in memory: an agent restarted starts at 0 under a new `epoch`, and a
subscriber whose epoch is not the current one gets every part (a resync).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import trio

from overlaynet.agent.records import ENDPOINT_TABLE
from overlaynet.api import Request, check_seconds
from overlaynet.errors import InvalidArgument

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent

# One call waits at most this long: a subscriber that went away costs the agent no more than a
# second of a socket, and the API server's connections never look stuck.
MAX_WAIT = 1.0
# The parts a subscriber can be told about, in the order the answer lists them.
PARTS = ("containers", "networks", "members", "endpoints", "fdb", "vips")


@dataclass(frozen=True)
class WatchChanges(Request):
    """Wait (at most `timeout` s) until this host's state changed after `cursor`."""

    OP: ClassVar[str] = "watch"
    epoch: str = ""  # the epoch the cursor belongs to ("" : none yet, send everything)
    cursor: int = 0
    timeout: float = MAX_WAIT

    def check(self) -> None:
        check_seconds("timeout", self.timeout, MAX_WAIT)
        if self.cursor < 0:
            raise InvalidArgument("argument 'cursor' must be 0 or more")


def fingerprint(value: Any) -> str:
    """A digest of a part's JSON form: equal parts, equal digests, whatever the dict order."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class ChangeLog:
    """Which part changed at which generation. Pure: parts in, changed names out."""

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.generation = 0
        self._prints: dict[str, str] = {}
        self._changed_at: dict[str, int] = {}
        self._parts: dict[str, Any] = {}

    def observe(self, parts: Mapping[str, Any]) -> list[str]:
        """Take the parts as they are now; the names of those that changed (one generation
        for all of them: they were seen together)."""
        changed = []
        for name, value in parts.items():
            digest = fingerprint(value)
            if self._prints.get(name) != digest:
                changed.append(name)
                self._prints[name] = digest
                self._parts[name] = value
        for gone in set(self._prints) - set(parts):
            changed.append(gone)
            del self._prints[gone]
            self._parts.pop(gone, None)
        if changed:
            self.generation += 1
            for name in changed:
                self._changed_at[name] = self.generation
        return changed

    def since(self, epoch: str, cursor: int) -> list[str]:
        """The parts a subscriber at (`epoch`, `cursor`) has not seen; all of them when the
        epoch is another (the agent restarted) or the cursor is ahead of this log."""
        if epoch != self.epoch or cursor > self.generation:
            return [p for p in self._ordered() if p in self._prints]
        return [p for p in self._ordered() if self._changed_at.get(p, 0) > cursor]

    def answer(self, epoch: str, cursor: int) -> dict[str, Any]:
        names = self.since(epoch, cursor)
        return {
            "epoch": self.epoch,
            "generation": self.generation,
            "changed": {n: self._parts.get(n) for n in names},
        }

    def _ordered(self) -> list[str]:
        extra = sorted(set(self._changed_at) - set(PARTS))
        return [*PARTS, *extra]


class ChangeFeed:
    """The trio shell: waiters sleep until a poke, re-read the parts, answer when theirs moved."""

    def __init__(self, read_parts: Callable[[], dict[str, Any]], epoch: str | None = None) -> None:
        self.read_parts = read_parts
        self.log = ChangeLog(epoch or secrets.token_hex(8))
        self._poked = trio.Event()
        self.counters: dict[str, int] = {"calls": 0, "changed_answers": 0, "pokes": 0}

    def poke(self) -> None:
        """Something may have changed: wake every waiter (cheap; the reading is theirs)."""
        self.counters["pokes"] += 1
        self._poked.set()
        self._poked = trio.Event()

    def refresh(self) -> list[str]:
        return self.log.observe(self.read_parts())

    async def wait(self, epoch: str, cursor: int, timeout: float) -> dict[str, Any]:
        self.counters["calls"] += 1
        self.refresh()
        with trio.move_on_after(min(timeout, MAX_WAIT)):
            while not self.log.since(epoch, cursor):
                await self._poked.wait()
                self.refresh()
        if not self.log.since(epoch, cursor):
            self.refresh()  # the last look, for changes no hook pokes for
        answer = self.log.answer(epoch, cursor)
        if answer["changed"]:
            self.counters["changed_answers"] += 1
        return answer

    async def handle(self, req: WatchChanges) -> dict[str, Any]:
        return await self.wait(req.epoch, req.cursor, req.timeout)


def agent_parts(agent: Agent) -> dict[str, Any]:
    """The watched parts of one agent, read on the event loop from copies (as `info` does).
    Counters are left out: they move with every frame, and a change is a change of state."""
    rt = agent.runtime
    containers = sorted(
        (
            {
                "id": c.id,
                "name": c.name,
                "state": str(c.status),
                "exit_code": c.exit_code,
                "networks": sorted(ep.network_id for ep in c.endpoints),
            }
            for c in list(rt.containers.values())
        ),
        key=lambda r: str(r["id"]),
    )
    networks = sorted(
        ({"id": n.id, "name": n.name, "driver": str(n.driver)} for n in list(rt.networks.values())),
        key=lambda r: r["id"],
    )
    endpoints: dict[str, list[Any]] = {}
    gossip = agent.control.gossip
    fdb: dict[str, Any] = {}
    vtep = agent.overlay.vtep
    for net in list(rt.networks.values()):
        if gossip is not None and net.scope == "swarm":
            entries = gossip.entries(ENDPOINT_TABLE, net.id)
            endpoints[net.id] = sorted([k, e.owner, e.ltime] for k, e in list(entries.items()))
        if vtep is not None:
            doc = agent.overlay.inspect(net)
            if doc is not None:
                fdb[net.id] = {
                    "arp": doc.get("arp", {}),
                    "fdb": sorted([r["mac"], r["remote_ip"], r["learned"]] for r in doc["fdb"]),
                    "peers": sorted(doc.get("peers", [])),
                }
    vips = sorted(
        [s.name, sorted([nid, str(vip)] for nid, vip in s.vips)]
        for s in list(agent.service_names.services)
    )
    return {
        "containers": containers,
        "networks": networks,
        "members": agent.control.members_view(),
        "endpoints": endpoints,
        "fdb": fdb,
        "vips": {"services": vips, "sandboxes": sorted(agent.lb.sandboxes)},
    }
