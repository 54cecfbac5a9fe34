"""A worker's periodic polls share one state.snapshot (issue 15): the role check fetches it, a
data-key poll right after takes it when it may be that old; an ordinary snapshot still asks."""

from __future__ import annotations

from pathlib import Path

from overlaynet.agent.swarm import SwarmMember

from .loopback import Swarm

# Older than the test can take: the role check's answer serves the poll after it.
MAX_AGE = 60.0


async def test_the_role_check_s_snapshot_serves_a_poll_right_after(
    swarm: Swarm, tmp_path: Path
) -> None:
    member = SwarmMember(tmp_path / "node2", "node2")
    member.state_dir.mkdir()
    member.joined = await swarm.join("node2", "10.9.0.2")
    member.advertise_addr = "10.9.0.2"
    requests = swarm.server.stats["requests"]

    await member.follow_role()
    assert swarm.server.stats["requests"] == requests + 1
    shared = await member.snapshot(max_age=MAX_AGE)
    assert swarm.server.stats["requests"] == requests + 1
    assert shared["node"]["role"] == "worker" and shared["cluster_id"] == swarm.init.cluster_id

    fresh = await member.snapshot()
    assert swarm.server.stats["requests"] == requests + 2
    assert fresh["index"] == shared["index"]
    member.client().close()
