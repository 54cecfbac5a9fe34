"""One lock per object (container, network), made on first use and dropped when unused.

Issue 18: one agent-wide lock made a `run` wait 29 s behind `stop -t 30` of another container
and delayed gossip learning as long. Requests on the same object still go one at a time (a
`rm -f` waits for the `stop` in progress, as Docker serialises them); different objects never
wait for each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: dict[str, trio.Lock] = {}
        self._users: dict[str, int] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(key, trio.Lock())
        self._users[key] = self._users.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[key] -= 1
            if not self._users[key]:
                # Nobody holds or waits for it: no lock outlives its last user.
                del self._users[key], self._locks[key]

    def __len__(self) -> int:
        return len(self._locks)
