"""The `swarm` fixture: a leader serving on loopback for the duration of one test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from overlaynet.cluster.manager import init_swarm
from overlaynet.cluster.store import ClusterStore

from .loopback import HOST, Swarm, free_port, serve


@pytest.fixture
async def swarm(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Swarm]:
    port = free_port()
    store = ClusterStore(tmp_path / "leader.db")
    init = init_swarm(store, hostname="node1", advertise_addr=HOST, port=port)
    status: dict[str, str] = {}
    server, scope = await serve(nursery, store, port, status.get)
    swarm = Swarm(tmp_path, nursery, init, f"{HOST}:{port}", port, server, scope, status)
    yield swarm
    swarm.scope.cancel()
