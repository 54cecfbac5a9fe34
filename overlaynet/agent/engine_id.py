"""The agent's engine ID: docker's `info` ID line, stable across restarts of the agent.

docker keeps a UUID in /var/lib/docker/engine-id, made on the daemon's first start; `info`
printed an empty `ID:` here outside a swarm (it showed the swarm node's ID, which a host has
only in a swarm). The agent keeps its own the same way, in its state folder.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

from overlaynet import paths

FILE_NAME = "engine-id"


def load_or_create(state_dir: Path, make: Callable[[], str] = lambda: str(uuid.uuid4())) -> str:
    """The ID kept in `state_dir`, made (by `make`) and kept there if there is none or it is
    unreadable; written owner-only to a temporary file and renamed, so a crash leaves no half ID."""
    path = state_dir / FILE_NAME
    try:
        kept = path.read_text().strip()
    except OSError:
        kept = ""
    if kept:
        return kept
    new = make()
    state_dir.mkdir(parents=True, exist_ok=True)
    # Owner-only as everything in the state folder (paths.make_private_dir warns otherwise).
    paths.write_private(path, new + "\n")
    return new
