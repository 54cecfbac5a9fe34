"""The agent's engine ID (docker's `info` ID): made once, kept in the state folder."""

from __future__ import annotations

import uuid
from pathlib import Path

from overlaynet import paths
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


def test_the_file_is_owner_only_as_everything_in_the_state_folder(tmp_path: Path) -> None:
    # Written with the umask's 0644, the next make_private_dir of the folder (an agent's
    # restart) warned "narrowed the mode of .../engine-id to owner only (it holds secrets)".
    state = tmp_path / "node1"
    engine_id.load_or_create(state)
    assert (state / engine_id.FILE_NAME).stat().st_mode & 0o777 == paths.PRIVATE_FILE_MODE
    assert paths.make_private_dir(state) == []
