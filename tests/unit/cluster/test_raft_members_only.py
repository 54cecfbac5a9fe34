"""A holder of the Raft password that is not a member (a removed manager keeps its copy of the
root key) gets nothing from the managers' Raft ports: no read-only feed of the log, and no
PySyncObj admin command (add/remove a member, hand over leadership). Real PySyncObj on
loopback, no root; waits are bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from pysyncobj import SyncObjConf  # type: ignore[import-untyped]
from pysyncobj.utility import TcpUtility, UtilityException  # type: ignore[import-untyped]

from overlaynet.cluster.raft import _ReplicatedLog, raft_password

from .loopback import HOST, free_port
from .test_raft_engine import ROOT_KEY, Member, leaders, submit, until

PASSWORD = raft_password(ROOT_KEY)
# Long enough for a read-only node to connect and be sent entries several times over.
LISTEN = 3.0


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[list[Member]]:
    addrs = [f"{HOST}:{free_port()}" for _ in range(2)]
    members = [Member(a, addrs, PASSWORD, tmp_path / f"{i}.journal") for i, a in enumerate(addrs)]
    for m in members:
        await m.log.start()
    try:
        assert await until(lambda: len(leaders(members)) == 1)
        yield members
    finally:
        for m in members:
            m.log.close()


async def test_a_read_only_node_with_the_password_is_sent_no_entries(two: list[Member]) -> None:
    heard: list[str] = []
    conf = SyncObjConf(password=PASSWORD, useFork=False, connectionRetryTime=0.2)
    addrs = [m.log.self_addr for m in two]
    spy = await trio.to_thread.run_sync(
        _ReplicatedLog, None, addrs, conf, lambda _i, text: heard.append(text)
    )
    try:
        (leader,) = leaders(two)
        assert await submit(leader, "secret") == (True, "success")
        await trio.sleep(LISTEN)
        assert heard == []
        assert all(m.texts() == ["secret"] for m in two)
    finally:
        spy.destroy()


async def test_admin_commands_with_the_password_are_refused(two: list[Member]) -> None:
    (leader,) = leaders(two)
    rogue = f"{HOST}:{free_port()}"
    for command in (["add", rogue], ["remove", two[1].log.self_addr], ["transfer", rogue]):
        tool = TcpUtility(password=PASSWORD, timeout=2.0)
        with pytest.raises(UtilityException):
            await trio.to_thread.run_sync(tool.executeCommand, leader.log.self_addr, command)
    await trio.sleep(0.5)
    assert leader.log.status().members == sorted(m.log.self_addr for m in two)
    assert await submit(leader, "still") == (True, "success")
