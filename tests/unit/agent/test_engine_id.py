"""The agent's engine ID (docker's `info` ID): made once, kept in the state folder."""

from __future__ import annotations

import uuid
from pathlib import Path

from overlaynet.agent import engine_id


def test_made_once_and_kept_across_restarts(tmp_path: Path) -> None:
    state = tmp_path / "node1"
    first = engine_id.load_or_create(state)
    assert str(uuid.UUID(first)) == first
    assert (state / engine_id.FILE_NAME).read_text() == first + "\n"
    assert engine_id.load_or_create(state, make=lambda: "other") == first
    assert [p.name for p in state.iterdir()] == [engine_id.FILE_NAME]


def test_an_empty_file_gets_a_new_id(tmp_path: Path) -> None:
    (tmp_path / engine_id.FILE_NAME).write_text("\n")
    assert engine_id.load_or_create(tmp_path, make=lambda: "e1") == "e1"
    assert engine_id.load_or_create(tmp_path, make=lambda: "e2") == "e1"
