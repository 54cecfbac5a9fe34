"""A swarm's secrets (gossip key, join secrets, root key, node credentials) are owner-only."""

from __future__ import annotations

import os
import stat
import subprocess

from overlaynet import lab as labmod
from overlaynet.paths import HostPaths
from tests.integration.labs import Lab


def _as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
        capture_output=True,
        text=True,
        check=False,
    )


def test_state_files_cannot_be_read_by_another_user(swarm3: Lab) -> None:
    state = HostPaths("node1", swarm3.name).state_dir
    secrets = [state / name for name in ("cluster.db", "state.db", "swarm.json")]
    secrets += [p for p in state.iterdir() if p.name.endswith(("-wal", "-shm"))]
    assert (state / "cluster.db-wal").exists()  # the WAL holds the secrets as they are written
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        out = _as_nobody("cat", str(path))
        assert out.returncode != 0 and "Permission denied" in out.stderr, path
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    # Positive control: the same command as root reads the file.
    assert subprocess.run(["cat", str(state / "swarm.json")], capture_output=True).returncode == 0


def test_wider_modes_are_narrowed_when_the_agent_starts(swarm3: Lab) -> None:
    state = HostPaths("node2", swarm3.name).state_dir
    labmod.stop_agent(swarm3.name, "node2")
    os.chmod(state, 0o755)
    os.chmod(state / "swarm.json", 0o644)
    labmod.up(swarm3.name, 3)  # restarts the stopped agent
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "swarm.json").stat().st_mode) == 0o600
    assert "narrowed the mode" in (state / "agent.log").read_text()
