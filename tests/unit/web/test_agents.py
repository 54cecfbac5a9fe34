"""Asking one agent: what is asked, and what a silent or odd agent turns into (never a crash)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from overlaynet import api
from overlaynet.errors import NotFound
from overlaynet.lab import LabHost
from overlaynet.web import agents

HOST = LabHost("node1", "192.168.0.11")
OVERLAY_DOC = {"Name": "ov", "Containers": {}, "Overlay": {"VNI": 4097, "VTEP": "x:4789"}}


def agent(answers: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]], Any]:
    """An `ask` that answers from a table (an exception is raised) and records the calls."""
    calls: list[tuple[str, dict[str, Any]]] = []

    async def ask(op: str, **args: Any) -> Any:
        calls.append((op, args))
        answer = answers[op]
        if isinstance(answer, Exception):
            raise answer
        return answer

    return calls, ask


SWARM_ANSWERS: dict[str, Any] = {
    "info": {"Swarm": {"NodeID": "n1"}, "Gossip": {"Members": [{"name": "n1"}]}},
    "network.ls": [
        {"id": "h", "name": "host", "driver": "host"},
        {"id": "ov", "name": "ov", "driver": "overlay"},
    ],
    "container.ls": [{"id": "c1", "names": "web", "state": "running"}],
    "network.inspect": OVERLAY_DOC,
    "gossip.endpoints": [{"name": "web"}],
    "dns.records": {"Network": "ov", "Records": []},
    "network.lb": {"Network": "ov", "VIPs": []},
}


async def test_a_swarm_host_is_asked_for_its_tables_and_not_for_undrawn_networks() -> None:
    calls, ask = agent(SWARM_ANSWERS)
    rep = await agents.ask_host(HOST, ask)
    assert rep.answered
    assert calls == [
        ("info", {}),
        ("network.ls", {}),
        ("container.ls", {"all": True}),
        ("network.inspect", {"network": "ov"}),
        ("gossip.endpoints", {"network": "ov"}),
        ("dns.records", {"network": "ov"}),
        ("network.lb", {"network": "ov"}),
    ]
    assert rep.members == [{"name": "n1"}]
    assert rep.endpoints == {"ov": [{"name": "web"}]}
    assert rep.dns == {"ov": {"Network": "ov", "Records": []}}
    assert rep.lb == {"ov": {"Network": "ov", "VIPs": []}}


async def test_a_network_removed_between_ls_and_inspect_is_skipped() -> None:
    _, ask = agent({**SWARM_ANSWERS, "network.inspect": NotFound("no such network: ov")})
    rep = await agents.ask_host(HOST, ask)
    assert rep.answered and rep.network_docs == {} and rep.endpoints == {}


@pytest.mark.parametrize(
    ("answers", "error"),
    [
        ({"info": api.AgentDown("refused")}, "no agent: refused"),
        ({**SWARM_ANSWERS, "network.ls": {"not": "a list"}}, "network.ls answered a dict"),
        ({**SWARM_ANSWERS, "container.ls": ["row"]}, "rows that are not objects"),
        ({"info": ConnectionResetError("reset")}, "ConnectionResetError: reset"),
    ],
)
async def test_a_host_that_fails_is_reported_with_why(answers: dict[str, Any], error: str) -> None:
    _, ask = agent(answers)
    rep = await agents.ask_host(HOST, ask)
    assert not rep.answered
    assert rep.error is not None and error in rep.error


def test_rounds_stretch_with_the_lab_so_the_call_rate_stays_bounded() -> None:
    assert agents.round_interval(3) == agents.POLL_INTERVAL
    assert agents.round_interval(50) == 50 / agents.HOST_POLLS_PER_SECOND
    for hosts in (1, 10, 50, 200):
        assert hosts / agents.round_interval(hosts) <= agents.HOST_POLLS_PER_SECOND


# ---- `call` against a real Unix socket ---------------------------------------------------


async def serve_once(
    path: Path,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """A one-connection stand-in agent on a real Unix socket."""
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(path))
    sock.listen(4)
    listener = trio.SocketListener(sock)
    task_status.started()
    async with listener:
        stream = await listener.accept()
        async with stream:
            await handler(stream)


async def test_call_speaks_the_agents_line_protocol(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"
    seen: list[bytes] = []

    async def handler(stream: trio.SocketStream) -> None:
        seen.append(await stream.receive_some(65536))
        await stream.send_all(api.encode_result({"host": "node1"}))

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_once, path, handler)
        assert await agents.call(path, "ping") == {"host": "node1"}
    assert seen == [api.encode_request("ping", {})]


async def test_call_raises_the_agents_own_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        await stream.send_all(api.encode_error("not_found", "no such network: x"))

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_once, path, handler)
        with pytest.raises(NotFound, match="no such network"):
            await agents.call(path, "network.inspect", network="x")


async def test_call_to_no_agent_is_agent_down(tmp_path: Path) -> None:
    with pytest.raises(api.AgentDown):
        await agents.call(tmp_path / "nobody.sock", "ping")


async def test_an_agent_that_hangs_up_without_answering_is_agent_down(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_once, path, handler)
        with pytest.raises(api.AgentDown, match="without answering"):
            await agents.call(path, "ping")


async def test_an_agent_that_never_answers_times_out(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    path = tmp_path / "agent.sock"

    async def handler(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_once, path, handler)
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError):
            await agents.call(path, "ping")
        assert trio.current_time() - start == pytest.approx(agents.CALL_TIMEOUT)
        nursery.cancel_scope.cancel()


async def test_an_endless_answer_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "agent.sock"

    async def handler(stream: trio.SocketStream) -> None:
        await stream.receive_some(65536)
        chunk = b"x" * 65536
        with trio.move_on_after(5):
            for _ in range(agents.MAX_ANSWER_BYTES // len(chunk) + 2):
                await stream.send_all(chunk)

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_once, path, handler)
        with pytest.raises(agents.BadAnswer, match="over"):
            await agents.call(path, "info")
        nursery.cancel_scope.cancel()


async def test_an_agent_killed_with_the_request_unread_is_agent_down(tmp_path: Path) -> None:
    # Closing a Unix socket with unread data resets the peer (ECONNRESET), as a killed agent
    # does to the watch it holds open: trio says BrokenResourceError, which is no OSError.
    path = tmp_path / "agent.sock"

    async def handler(stream: trio.SocketStream) -> None:
        await trio.sleep(0.05)  # the request arrives and is never read

    async with trio.open_nursery() as nursery:
        await nursery.start(serve_once, path, handler)
        with pytest.raises(api.AgentDown, match="reset"):
            await agents.call(path, "watch", cursor=0)
