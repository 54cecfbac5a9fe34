"""tcp/2377 under a slowloris (issue 18): strangers trickling bytes hold a bounded number of
slots for a bounded time, and the swarm's own nodes keep being served meanwhile.

Limits are scaled down (24 connections instead of 256) so the test stays small; the behaviour
does not depend on the numbers. Hostile connections come from 127.0.0.2-9: eight "hosts".
"""

from __future__ import annotations

from functools import partial

import pytest
import trio

from overlaynet.cluster import manager

from .loopback import Swarm, connect_from, eventually

HOSTILE_SOURCES = [f"127.0.0.{i}" for i in range(2, 10)]
PER_SOURCE_ATTEMPTS = 6
LIMITS = {
    "MAX_CONNECTIONS": 24,
    "AUTH_RESERVE": 8,
    "MAX_PER_SOURCE": 4,
    # Long enough for the whole attack to be set up before the first stranger is dropped.
    "FIRST_FRAME_TIMEOUT": 3.0,
}
# A frame header announcing 200 bytes, never completed: one byte at a time, as in the report.
TRICKLE = b"\x00\x00\x00\xc8ONCM\x02\x02\x00" + bytes(200)
TRICKLE_INTERVAL = 0.2


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in LIMITS.items():
        monkeypatch.setattr(manager, name, value, raising=False)


async def _trickle(source: str, port: int, admitted: list[str], closed: list[str]) -> None:
    """One slowloris connection: a byte every TRICKLE_INTERVAL until the server hangs up.
    Still open after its first byte means admitted (a refusal is a frame, then EOF)."""
    try:
        stream = await connect_from(source, port)
    except OSError:
        closed.append(source)
        return
    async with stream:
        try:
            for i, byte in enumerate(TRICKLE):
                await stream.send_all(bytes([byte]))
                with trio.move_on_after(TRICKLE_INTERVAL) as quiet:
                    await stream.receive_some(4096)
                if not quiet.cancelled_caught:
                    break  # a refusal frame, or the end of the stream
                if i == 0:
                    admitted.append(source)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    closed.append(source)


def _settled(admitted: list[str], closed: list[str], started: int) -> bool:
    """Every connection started so far is known to be in, or out."""
    return len(admitted) + len(closed) == started


async def test_slowloris_is_bounded_and_nodes_are_still_served(
    swarm: Swarm, small_limits: None
) -> None:
    server = swarm.server
    worker = await swarm.join("node2", "10.9.0.2")
    admitted: list[str] = []
    closed: list[str] = []
    before = server.stats["accepted"]
    async with trio.open_nursery() as nursery:
        # One "host" after the other, so which cap refuses whom is deterministic.
        for n, source in enumerate(HOSTILE_SOURCES, 1):
            for _ in range(PER_SOURCE_ATTEMPTS):
                nursery.start_soon(_trickle, source, swarm.port, admitted, closed)
            await eventually(partial(_settled, admitted, closed, n * PER_SOURCE_ATTEMPTS))

        # Four per address, until strangers hold every slot outside the reserve (24 - 8).
        assert [admitted.count(s) for s in HOSTILE_SOURCES] == [4, 4, 4, 4, 0, 0, 0, 0]
        assert server.connections() == {"open": 16, "unauthenticated": 16}
        rejections = server.rejections()
        assert rejections["over_cap_source"] == 4 * 2
        assert rejections["over_cap_unauthenticated"] == 4 * 6
        assert server.stats["accepted"] - before == 16

        # The swarm's nodes still get in while the strangers trickle: 127.0.0.1 is a node's
        # address (the leader's), and the worker authenticated from there when it joined.
        assert len(await swarm.leader_client.call("node.ls")) == 2
        snapshot = await swarm.client(worker.node_id, worker.credential).call("state.snapshot")
        assert snapshot["node"]["hostname"] == "node2"
        assert server.connections()["unauthenticated"] > 0, "the attack had ended already"

        # A frame must be whole within FIRST_FRAME_TIMEOUT: a byte now and then does not
        # keep a slot. Every admitted stranger is dropped, and counted.
        await eventually(lambda: len(closed) == len(HOSTILE_SOURCES) * PER_SOURCE_ATTEMPTS)
    assert server.stats["accepted"] - before - 2 == len(admitted)  # less the two calls
    assert server.rejections()["first_frame_timeout"] == len(admitted)
    assert server.connections() == {"open": 0, "unauthenticated": 0}


async def test_a_trickled_first_frame_is_dropped_at_its_deadline(
    swarm: Swarm, small_limits: None
) -> None:
    """Before: every byte reset a 10 s idle timer, so a byte each 5 s held a slot for ever."""
    stream = await connect_from("127.0.0.2", swarm.port)
    sent = 0
    async with stream:
        with trio.fail_after(5 * LIMITS["FIRST_FRAME_TIMEOUT"]):
            try:
                while True:
                    await stream.send_all(TRICKLE[sent : sent + 1])
                    sent += 1
                    with trio.move_on_after(TRICKLE_INTERVAL):
                        if not await stream.receive_some(4096):
                            break
            except (trio.BrokenResourceError, OSError):
                pass
    assert sent < len(TRICKLE)
    assert swarm.server.rejections()["first_frame_timeout"] == 1
