"""A manager's persistent copy of the swarm state: the state's records in SQLite.

The state machine says what changed (`Change` records); this file only writes them, one batch per
transaction, in WAL mode with synchronous=FULL: a crash or `kill -9` leaves either the whole
command or none of it, and a restarted manager loads exactly what it had answered.

Beside the records it keeps the leader's request log: the answer to every write, keyed by
(sender, request id), committed in the same transaction as the write's changes. A write that is
repeated (a client's retry, or a captured frame replayed, even after a restart) gets the first
answer and changes nothing. Under Raft (raft_replica.py) every manager writes the answers it
applies from the log, so a new leader knows them too, and the store also keeps its position in
the log (the last Raft index and entry applied), in the same transaction as what they brought.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    ts  REAL NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_ts ON requests (ts);
"""
_INDEX = "index"
# Where this copy is in the managers' Raft log (replication.py): the last log index applied and
# the id of the last entry applied.
_RAFT_INDEX = "raft_index"
_RAFT_TIP = "raft_tip"


@dataclass(frozen=True)
class Answered:
    """One write's answer, remembered under "<sender>/<request id>" until `forget_before`."""

    key: str
    ts: float
    doc: dict[str, Any]
    # Entries older than this are dropped in the same transaction: frames that old are refused
    # as stale anyway, so their request ids can no longer come back.
    forget_before: float


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

    def apply(
        self,
        changes: list[Change],
        index: int,
        answered: Answered | None = None,
        raft: tuple[int, str | None] | None = None,
    ) -> None:
        """Persist one command's changes (`index` is the state's index after them) and, for a
        remote write, its answer: both or neither. `raft` is the Raft log position and entry id
        they came from (replication.py), in the same transaction: a restart replays nothing
        twice."""
        if not changes and answered is None and raft is None:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if raft is not None:
                self._set_raft(*raft)
            if changes:
                self._write(changes)
                self._set_index(index)
            if answered is not None:
                self._db.execute("DELETE FROM requests WHERE ts < ?", (answered.forget_before,))
                self._db.execute(
                    "INSERT OR REPLACE INTO requests (key, ts, doc) VALUES (?, ?, ?)",
                    (answered.key, answered.ts, json.dumps(answered.doc, sort_keys=True)),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def replace(
        self, records: list[Change], index: int, raft: tuple[int, str | None] | None = None
    ) -> None:
        """Replace everything with a full snapshot (a follower catching up with its leader)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if raft is not None:
                self._set_raft(*raft)
            self._db.execute("DELETE FROM records")
            self._write(records)
            self._set_index(index)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _set_raft(self, raft_index: int, tip: str | None) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_RAFT_INDEX, str(raft_index))
        )
        if tip is not None:
            self._db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (_RAFT_TIP, tip)
            )

    def mark_raft(self, raft_index: int) -> None:
        """A Raft entry at `raft_index` was looked at and refused (replication.Verdict.STALE):
        remember it was seen, change nothing else."""
        self.apply([], 0, raft=(raft_index, None))

    def forget_raft(self) -> None:
        """A new Raft log starts (`swarm init --force-new-cluster`): this copy has applied none
        of its entries yet; its records stay, and become the new log's genesis."""
        self._db.execute("DELETE FROM meta WHERE key IN (?, ?)", (_RAFT_INDEX, _RAFT_TIP))

    def raft_position(self) -> tuple[int, str | None]:
        """The last Raft log index applied here (0: none) and the last entry applied (None:
        not even the genesis)."""
        rows = dict(
            self._db.execute(
                "SELECT key, value FROM meta WHERE key IN (?, ?)", (_RAFT_INDEX, _RAFT_TIP)
            ).fetchall()
        )
        return int(rows.get(_RAFT_INDEX, 0)), rows.get(_RAFT_TIP)

    def answered(self, key: str) -> dict[str, Any] | None:
        """The remembered answer to the write "<sender>/<request id>", if it ran."""
        row = self._db.execute("SELECT doc FROM requests WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        doc: dict[str, Any] = json.loads(row[0])
        return doc

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
