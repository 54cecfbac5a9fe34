"""A manager's persistent copy of the swarm state: the state's records in SQLite.

The state machine says what changed (`Change` records); this file only writes them, one batch per
transaction, in WAL mode with synchronous=FULL: a crash or `kill -9` leaves either the whole
command or none of it, and a restarted manager loads exactly what it had answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from overlaynet.cluster.state import KINDS, Change, ClusterState
from overlaynet.durable import open_durable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    key  TEXT NOT NULL,
    doc  TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_INDEX = "index"


class ClusterStore:
    """The records of one swarm's desired state and the change index they correspond to."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._db = open_durable(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _write(self, changes: Iterable[Change]) -> None:
        for change in changes:
            if change.doc is None:
                self._db.execute(
                    "DELETE FROM records WHERE kind = ? AND key = ?", (change.kind, change.key)
                )
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO records (kind, key, doc) VALUES (?, ?, ?)",
                    (change.kind, change.key, json.dumps(change.doc, sort_keys=True)),
                )

    def _set_index(self, index: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_INDEX, str(index))
        )

    def apply(self, changes: list[Change], index: int) -> None:
        """Persist one command's changes; `index` is the state's index after them."""
        if not changes:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._write(changes)
            self._set_index(index)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def replace(self, records: list[Change], index: int) -> None:
        """Replace everything with a full snapshot (a follower catching up with its leader)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM records")
            self._write(records)
            self._set_index(index)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def save(self, state: ClusterState) -> None:
        """Persist what `state` changed since the last save (drains its pending changes)."""
        self.apply(state.take_changes(), state.index)

    def load(self) -> ClusterState:
        """The state as last committed (an empty state for a new store)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (_INDEX,)).fetchone()
        index = 0 if row is None else int(row[0])
        order = {kind: i for i, kind in enumerate(KINDS)}
        rows = self._db.execute("SELECT kind, key, doc FROM records ORDER BY rowid").fetchall()
        records = [Change(kind, key, json.loads(doc)) for kind, key, doc in rows]
        records.sort(key=lambda c: order.get(c.kind, len(order)))
        return ClusterState.from_records(records, index)
