"""What a manager says when a write it forwarded to the Raft leader meets no quorum
(manager._via_raft_leader), over a replica whose leader goes away mid-write."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from overlaynet.cluster.errors import ClusterError, ErrorKind
from overlaynet.cluster.manager import ManagerServer
from overlaynet.cluster.replication import RaftStatus
from overlaynet.cluster.store import ClusterStore

ME, LEADER, THIRD = "127.0.0.1:1", "127.0.0.2:1", "127.0.0.3:1"


class _LeaderGone:
    """A follower's view of Raft: LEADER leads until the forwarded write fails, then no
    manager leads and neither other manager is reachable."""

    def __init__(self, _server: ManagerServer) -> None:
        self.leader: str | None = LEADER
        self.raft = SimpleNamespace(self_addr=ME)
        self.is_leader = False
        self.on_applied: Any = None

    async def wait_leader(self) -> str | None:
        return self.leader

    def status(self) -> RaftStatus:
        up = self.leader is not None
        return RaftStatus(ME, 2, 5, 5, self.leader, False, {LEADER: up, THIRD: False})


async def test_a_write_the_leader_may_have_logged_is_not_said_to_be_lost(tmp_path: Path) -> None:
    # The leader took the forwarded write and then lost its quorum: the forward came back
    # UNAVAILABLE and the follower said "the write was not made", though the leader's log
    # may still commit it (6bbe33c made the leader's own line say so).
    replicas: list[_LeaderGone] = []

    def replica(server: ManagerServer) -> Any:
        replicas.append(_LeaderGone(server))
        return replicas[-1]

    server = ManagerServer(ClusterStore(tmp_path / "m.db"), "127.0.0.1", replica=replica)

    async def forward(op: str, node_id: str | None, args: dict[str, Any], rid: str | None) -> Any:
        replicas[0].leader = None
        raise ClusterError(ErrorKind.UNAVAILABLE, "the swarm's Raft leader could not do it now")

    server._forward = forward  # type: ignore[method-assign]
    with pytest.raises(ClusterError) as caught:
        await server._via_raft_leader("network.create", "n1", {"name": "q1"}, "rid-1")
    said = caught.value.message
    assert caught.value.kind is ErrorKind.UNAVAILABLE
    assert said.startswith("no quorum: 1 of 3 managers reachable, 2 needed; ")
    assert "not made" not in said and "look before retrying" in said
