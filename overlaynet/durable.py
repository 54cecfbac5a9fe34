"""One way to open a durable SQLite store (the host's and the cluster's)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from overlaynet.paths import PRIVATE_FILE_MODE


def open_durable(path: Path | str, schema: str) -> sqlite3.Connection:
    """SQLite as every store here uses it: autocommit, WAL, a full sync on every commit.

    The file is created owner-only before SQLite opens it: SQLite gives its -wal and -shm files
    the database's own mode, so the secrets in them stay owner-only too."""
    os.close(os.open(path, os.O_CREAT | os.O_RDWR, PRIVATE_FILE_MODE))
    os.chmod(path, PRIVATE_FILE_MODE)
    db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db
