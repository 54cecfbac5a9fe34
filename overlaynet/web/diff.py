"""Two views of the cluster -> the patch between them and the timeline events that explain it.

Pure: `now` is an argument. A patch sets whole records and deletes keys; records are small (a
container, one host's member table), so sending a changed record whole keeps the page simple
and a coalesced backlog exact (feed.py).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from overlaynet.web.model import Record, View


@dataclass
class Patch:
    """Records to set (whole) and keys to delete; applying it to the old view gives the new."""

    records: dict[str, Record] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(self.records or self.removed)

    def merge(self, later: Patch) -> None:
        """Fold a later patch into this one: per key, the later word wins."""
        for key, rec in later.records.items():
            self.removed.discard(key)
            self.records[key] = rec
        for key in later.removed:
            self.records.pop(key, None)
            self.removed.add(key)

    def to_json(self) -> dict[str, Any]:
        """The wire form the page reads: {"set": {key: record}, "del": [key, …]}."""
        return {"set": self.records, "del": sorted(self.removed)}


def diff(old: Mapping[str, Record], new: Mapping[str, Record]) -> Patch:
    return Patch(
        records={k: v for k, v in new.items() if old.get(k) != v},
        removed={k for k in old if k not in new},
    )


def apply(view: Mapping[str, Record], patch: Patch) -> View:
    out = {k: v for k, v in view.items() if k not in patch.removed}
    out.update(patch.records)
    return out


class Level(enum.StrEnum):
    INFO = "info"
    WARN = "warn"  # something went away or went bad: the page shows it in red


@dataclass(frozen=True)
class Event:
    """One line of the timeline."""

    t: float
    kind: str  # host, container, network, gossip, endpoint
    host: str
    text: str
    level: Level = Level.INFO

    def to_json(self) -> dict[str, Any]:
        return {
            "t": self.t,
            "kind": self.kind,
            "host": self.host,
            "text": self.text,
            "level": str(self.level),
        }


# Host states that are bad news.
_BAD_HOST_STATES = ("Down", "Suspect", "Unreachable")


def events(old: Mapping[str, Record], new: Mapping[str, Record], now: float) -> list[Event]:
    """What changed, in words. Records of a silent host (`stale`) tell nothing new: the host's
    own event says it went silent."""
    if not old:
        return []  # the first view is the starting picture, not a change
    out: list[Event] = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if before == after or (before or {}).get("stale") or (after or {}).get("stale"):
            continue
        kind = (after or before or {}).get("kind")
        if kind == "host":
            out.extend(_host_events(before, after, now))
        elif kind == "container":
            out.extend(_container_events(before, after, now))
        elif kind == "network":
            out.extend(_network_events(before, after, now))
        elif kind == "members":
            out.extend(_member_events(before, after, now))
        elif kind == "endpoints":
            out.extend(_endpoint_events(before, after, now))
    return out


def _host_events(before: Record | None, after: Record | None, now: float) -> Iterator[Event]:
    if after is None:
        assert before is not None
        yield Event(now, "host", before["name"], f"{before['name']} left the lab", Level.WARN)
        return
    name = after["name"]
    if before is None:
        yield Event(now, "host", name, f"{name} ({after['ip']}) joined the lab: {after['state']}")
        return
    if before["agent"] != after["agent"]:
        if after["agent"] == "down":
            text = f"{name}: agent stopped answering ({after['error']})"
            yield Event(now, "host", name, text, Level.WARN)
        else:
            yield Event(now, "host", name, f"{name}: agent answers again")
    if before["state"] != after["state"]:
        level = Level.WARN if after["state"] in _BAD_HOST_STATES else Level.INFO
        yield Event(now, "host", name, f"{name}: {before['state']} → {after['state']}", level)
    if before["role"] != after["role"] and after["role"]:
        yield Event(now, "host", name, f"{name}: swarm {after['role']}")


def _container_events(before: Record | None, after: Record | None, now: float) -> Iterator[Event]:
    if after is None:
        assert before is not None
        text = f"{before['host']}: container {before['name']} removed"
        yield Event(now, "container", before["host"], text, Level.WARN)
        return
    host, name = after["host"], after["name"]
    if before is None:
        text = f"{host}: container {name} ({after['image']}) created"
        if after["state"] != "created":
            text += f", {after['state']}"
        yield Event(now, "container", host, text)
        return
    if before["state"] != after["state"]:
        level = Level.WARN if after["state"] == "exited" else Level.INFO
        text = f"{host}: container {name} {before['state']} → {after['state']}"
        yield Event(now, "container", host, text, level)
    nets_before = {n["name"]: n["ip"] for n in before["networks"]}
    nets_after = {n["name"]: n["ip"] for n in after["networks"]}
    for net in sorted(set(nets_after) - set(nets_before)):
        text = f"{host}: container {name} attached to {net} {nets_after[net]}".rstrip()
        yield Event(now, "container", host, text)
    for net in sorted(set(nets_before) - set(nets_after)):
        yield Event(now, "container", host, f"{host}: container {name} detached from {net}")


def _network_events(before: Record | None, after: Record | None, now: float) -> Iterator[Event]:
    rec = after or before
    assert rec is not None
    where = rec.get("host", "")
    label = f"{rec['driver']} network {rec['name']}"
    if after is None:
        yield Event(now, "network", where, f"{label} removed" + (f" on {where}" if where else ""))
        return
    if before is None:
        extra = f" (VNI {after['vni']})" if after.get("vni") is not None else ""
        yield Event(
            now, "network", where, f"{label}{extra} created" + (f" on {where}" if where else "")
        )
        return
    hosts_before, hosts_after = set(before.get("hosts", ())), set(after.get("hosts", ()))
    for host in sorted(hosts_after - hosts_before):
        yield Event(now, "network", host, f"{host} joined {label} (VTEP up)")
    for host in sorted(hosts_before - hosts_after):
        yield Event(now, "network", host, f"{host} left {label}")


def _member_events(before: Record | None, after: Record | None, now: float) -> Iterator[Event]:
    rec = after or before
    assert rec is not None
    observer = rec["host"]
    old = {r["node"]: r for r in (before or {}).get("rows", ())}
    new = {r["node"]: r for r in (after or {}).get("rows", ())}
    for node in sorted(set(old) | set(new)):
        a, b = old.get(node), new.get(node)
        if a == b:
            continue
        who = _member_name(b or a)
        if b is None:
            yield Event(now, "gossip", observer, f"{observer} gossip: forgot {who}")
        elif a is None:
            text = f"{observer} gossip: {who} {b['state']} (incarnation {b['incarnation']})"
            yield Event(now, "gossip", observer, text)
        elif a["state"] != b["state"]:
            level = Level.INFO if b["state"] == "alive" else Level.WARN
            text = f"{observer} gossip: {who} {a['state']} → {b['state']}"
            if a["incarnation"] != b["incarnation"]:
                text += f" (incarnation {b['incarnation']})"
            yield Event(now, "gossip", observer, text, level)
        elif a["incarnation"] != b["incarnation"]:
            text = f"{observer} gossip: {who} incarnation {a['incarnation']} → {b['incarnation']}"
            yield Event(now, "gossip", observer, text)


def _member_name(row: Record | None) -> str:
    assert row is not None
    return str(row["host"] or row["addr"] or row["node"])


def _endpoint_events(before: Record | None, after: Record | None, now: float) -> Iterator[Event]:
    rec = after or before
    assert rec is not None
    observer = rec["host"]
    old_tables = (before or {}).get("tables", {})
    new_tables = (after or {}).get("tables", {})
    for net in sorted(set(old_tables) | set(new_tables)):
        old = {(r["name"], r["ip"]): r for r in old_tables.get(net, ())}
        new = {(r["name"], r["ip"]): r for r in new_tables.get(net, ())}
        for key in sorted(set(new) - set(old)):
            r = new[key]
            text = (
                f"{observer} endpoint table {net}: + {r['name']} {r['ip']} on {r['host']} "
                f"(Lamport {r['ltime']})"
            )
            yield Event(now, "endpoint", observer, text)
        for key in sorted(set(old) - set(new)):
            r = old[key]
            text = f"{observer} endpoint table {net}: − {r['name']} {r['ip']}"
            yield Event(now, "endpoint", observer, text, Level.WARN)
