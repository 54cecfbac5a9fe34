"""The real Raft engine (PySyncObj through raft.RaftLog) on loopback, no root: three members
elect a leader, replicate entries to all, elect another when the leader stops, and a member
without the swarm's password is shut out. Waits are bounded; speed is not under test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from overlaynet.cluster.raft import RaftLog, raft_password

from .loopback import HOST, free_port

# Bound on every wait for an election or a commit on a busy shared machine.
CONVERGE = 20.0
ROOT_KEY = "11" * 32


class Member:
    def __init__(self, addr: str, partners: list[str], password: str, journal: Path) -> None:
        self.entries: list[tuple[int, str]] = []
        self.log = RaftLog(addr, partners, password, journal, self._on_entry)

    def _on_entry(self, raft_index: int, text: str) -> None:
        self.entries.append((raft_index, text))

    def texts(self) -> list[str]:
        return [t for _, t in self.entries]


async def until(check: object, seconds: float = CONVERGE) -> bool:
    assert callable(check)
    with trio.move_on_after(seconds):
        while not check():
            await trio.sleep(0.05)
        return True
    return False


@pytest.fixture
async def three(tmp_path: Path) -> AsyncIterator[list[Member]]:
    addrs = [f"{HOST}:{free_port()}" for _ in range(3)]
    members = [
        Member(a, addrs, raft_password(ROOT_KEY), tmp_path / f"{i}.journal")
        for i, a in enumerate(addrs)
    ]
    for m in members:
        await m.log.start()
    try:
        yield members
    finally:
        for m in members:
            m.log.close()


def leaders(members: list[Member]) -> list[Member]:
    return [m for m in members if m.log.is_leader]


async def submit(member: Member, text: str) -> tuple[bool, str]:
    outcome: list[tuple[bool, str]] = []
    member.log.submit(text, lambda ok, why: outcome.append((ok, why)))
    assert await until(lambda: outcome)
    return outcome[0]


async def test_three_members_elect_one_leader_and_replicate_to_all(three: list[Member]) -> None:
    assert await until(lambda: len(leaders(three)) == 1)
    (leader,) = leaders(three)
    assert await submit(leader, '{"n": 1}') == (True, "success")
    assert await until(lambda: all(m.texts() == ['{"n": 1}'] for m in three))
    # Every member applied it at the same Raft index.
    assert len({m.entries[0][0] for m in three}) == 1
    status = leader.log.status()
    assert status.is_leader and status.leader == leader.log.self_addr
    assert status.members == sorted(m.log.self_addr for m in three)


async def test_another_leader_takes_over_and_commits_with_two_of_three(
    three: list[Member],
) -> None:
    assert await until(lambda: len(leaders(three)) == 1)
    (old,) = leaders(three)
    old.log.close()
    rest = [m for m in three if m is not old]
    assert await until(lambda: len(leaders(rest)) == 1)
    (new,) = leaders(rest)
    assert await submit(new, "after") == (True, "success")
    assert await until(lambda: all(m.texts() == ["after"] for m in rest))
    assert old.texts() == []


async def test_a_member_without_the_password_gets_nothing(tmp_path: Path) -> None:
    addrs = [f"{HOST}:{free_port()}" for _ in range(3)]
    passwords = [raft_password(ROOT_KEY), raft_password(ROOT_KEY), raft_password("22" * 32)]
    members = [
        Member(a, addrs, p, tmp_path / f"{i}.journal")
        for i, (a, p) in enumerate(zip(addrs, passwords, strict=True))
    ]
    try:
        for m in members:
            await m.log.start()
        right, stranger = members[:2], members[2]
        assert await until(lambda: len(leaders(right)) == 1)
        assert await submit(leaders(right)[0], "secret") == (True, "success")
        assert await until(lambda: all(m.texts() == ["secret"] for m in right))
        assert stranger.texts() == [] and not stranger.log.is_leader
        assert not stranger.log.status().partners.get(right[0].log.self_addr)
    finally:
        for m in members:
            m.log.close()


def test_the_password_is_the_root_keys_own_and_differs_per_swarm() -> None:
    assert raft_password(ROOT_KEY) == raft_password(ROOT_KEY)
    assert raft_password(ROOT_KEY) != raft_password("22" * 32)
    assert ROOT_KEY not in raft_password(ROOT_KEY)
