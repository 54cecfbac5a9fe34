"""PySyncObj's tick thread: it keeps committing after trio's worker thread that built the object
has ended, and it wakes rarely on a lone manager (woken by what it must do) and at the heartbeat
with partners (issue 15).

PySyncObj's tick thread stops once the thread that built its object is gone; RaftLog builds it in
a trio worker thread, which trio's thread cache ends after IDLE_TIMEOUT idle (10 s). Before the
fix a manager's Raft stopped ~10 s after its start when nothing else ran in that worker, and
every later write timed out (issue 15: a 100-host swarm lab did not form). The cache's timeout is
shortened here so the worker ends within the test; waits are bounded, speed is not under test.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from trio._core import _thread_cache

from overlaynet.cluster.raft import LONE_TICK, TICK, RaftLog, raft_password

from .loopback import HOST, free_port
from .test_raft_engine import CONVERGE, ROOT_KEY, until

# trio's worker threads end this long after their last job (instead of 10 s).
SHORT_IDLE = 0.1


def _ignore(index: int, text: str) -> None:
    return None


def _trio_workers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("Trio thread")]


async def test_a_lone_manager_commits_after_the_builder_thread_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_thread_cache, "IDLE_TIMEOUT", SHORT_IDLE)
    entries: list[tuple[int, str]] = []
    log = RaftLog(
        f"{HOST}:{free_port()}",
        [],
        raft_password(ROOT_KEY),
        tmp_path / "lone.journal",
        lambda index, text: entries.append((index, text)),
    )
    await log.start()
    try:
        assert await until(lambda: log.is_leader)
        # Every trio worker (the one that built the object among them) ends once idle.
        assert await until(lambda: not _trio_workers()), "trio's worker threads did not end"
        assert log._obj is not None and log._obj.tick_thread_alive()

        outcome: list[tuple[bool, str]] = []
        log.submit("after the builder ended", lambda ok, why: outcome.append((ok, why)))
        assert await until(lambda: bool(outcome), CONVERGE), "the entry was never committed"
        assert outcome == [(True, "success")]
        assert [text for _, text in entries] == ["after the builder ended"]
    finally:
        log.close()
        await log.wait_closed()


async def test_a_lone_manager_ticks_rarely_and_still_commits_and_closes(tmp_path: Path) -> None:
    log = RaftLog(
        f"{HOST}:{free_port()}", [], raft_password(ROOT_KEY), tmp_path / "lone.journal", _ignore
    )
    await log.start()
    try:
        assert await until(lambda: log.is_leader)
        assert log._conf.autoTickPeriod == LONE_TICK
        # Submitted entries wake its thread: committed though it ticks once a second.
        outcomes: list[tuple[bool, str]] = []
        for i in range(3):
            log.submit(f"entry {i}", lambda ok, why: outcomes.append((ok, why)))
        assert await until(lambda: len(outcomes) == 3)
        assert outcomes == [(True, "success")] * 3
    finally:
        log.close()
    assert await log.wait_closed()


async def test_managers_with_partners_tick_at_the_heartbeat(tmp_path: Path) -> None:
    addrs = [f"{HOST}:{free_port()}" for _ in range(2)]
    logs = [
        RaftLog(a, addrs, raft_password(ROOT_KEY), tmp_path / f"{i}.journal", _ignore)
        for i, a in enumerate(addrs)
    ]
    for log in logs:
        await log.start()
    try:
        assert await until(lambda: any(log.is_leader for log in logs))
        assert [log._conf.autoTickPeriod for log in logs] == [TICK, TICK]
    finally:
        for log in logs:
            log.close()
