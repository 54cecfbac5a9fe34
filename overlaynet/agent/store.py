"""The agent's persistent state: networks and containers as JSON documents in SQLite.

SQLite in WAL mode with synchronous=FULL, so a `kill -9` at any point leaves either the old or the
new record, never half of one; the agent's start-up reconciles the kernel with what is here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from overlaynet.durable import open_durable
from overlaynet.model import (
    Container,
    Network,
    container_from_doc,
    network_from_doc,
    to_doc,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT NOT NULL,
    doc  TEXT NOT NULL,
    PRIMARY KEY (kind, id),
    UNIQUE (kind, name)
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Store:
    """Networks and containers of one host, keyed by id with unique names."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self._db = open_durable(path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Several writes that land together or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _put(self, kind: str, obj: Network | Container) -> None:
        self._db.execute(
            # Upsert by id only: a second object with the same name must fail, not replace.
            "INSERT INTO objects (kind, id, name, doc) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, id) DO UPDATE SET name = excluded.name, doc = excluded.doc",
            (kind, obj.id, obj.name, json.dumps(to_doc(obj), sort_keys=True)),
        )

    def _docs(self, kind: str) -> list[dict[str, object]]:
        rows = self._db.execute("SELECT doc FROM objects WHERE kind = ? ORDER BY rowid", (kind,))
        return [json.loads(r[0]) for r in rows]

    def _delete(self, kind: str, obj_id: str) -> None:
        self._db.execute("DELETE FROM objects WHERE kind = ? AND id = ?", (kind, obj_id))

    def put_network(self, net: Network) -> None:
        self._put("network", net)

    def delete_network(self, net_id: str) -> None:
        self._delete("network", net_id)

    def networks(self) -> list[Network]:
        return [network_from_doc(d) for d in self._docs("network")]

    def put_container(self, c: Container) -> None:
        self._put("container", c)

    def delete_container(self, cid: str) -> None:
        self._delete("container", cid)

    def containers(self) -> list[Container]:
        return [container_from_doc(d) for d in self._docs("container")]

    def get_meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
