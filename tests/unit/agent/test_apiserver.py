"""The API server without root: a Unix socket in a temporary folder, a stand-in handler."""

from __future__ import annotations

import json
import os
import socket as stdsocket
from collections import Counter
from pathlib import Path

import pytest
import trio
import trio.testing

from overlaynet import api
from overlaynet.agent import requests as rq
from overlaynet.agent.apiserver import ApiServer, bind_unix
from overlaynet.agent.locks import KeyedLocks
from overlaynet.api import Request


async def _connect(path: Path) -> trio.SocketStream:
    sock = trio.socket.socket(stdsocket.AF_UNIX, stdsocket.SOCK_STREAM)
    await sock.connect(str(path))
    return trio.SocketStream(sock)


async def _reply(stream: trio.SocketStream) -> dict[str, object]:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = await stream.receive_some(65536)
        assert chunk, "the server closed without answering"
        buf += chunk
    doc: dict[str, object] = json.loads(buf)
    return doc


async def test_a_request_whose_client_hung_up_is_cancelled(tmp_path: Path) -> None:
    started, cancelled = trio.Event(), trio.Event()

    async def handle(req: Request, fds: tuple[int, ...]) -> bytes:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    counters: Counter[str] = Counter()
    server = ApiServer(bind_unix(tmp_path / "api.sock"), rq.REQUESTS, handle, counters)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        stream = await _connect(tmp_path / "api.sock")
        await stream.send_all(api.encode_request("container.wait", {"container": "x"}))
        await started.wait()
        await stream.aclose()
        with trio.fail_after(5):
            await cancelled.wait()
        nursery.cancel_scope.cancel()
    assert counters["requests_cancelled_client_gone"] == 1


async def test_a_half_closed_client_still_gets_its_answer(tmp_path: Path) -> None:
    async def handle(req: Request, fds: tuple[int, ...]) -> bytes:
        await trio.sleep(0.05)
        return api.encode_result({"op": req.OP})

    server = ApiServer(bind_unix(tmp_path / "api.sock"), rq.REQUESTS, handle, Counter())
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        stream = await _connect(tmp_path / "api.sock")
        await stream.send_all(api.encode_request("ping", {}))
        await stream.send_eof()
        with trio.fail_after(5):
            assert await _reply(stream) == {"ok": True, "result": {"op": "ping"}}
        nursery.cancel_scope.cancel()


async def test_connections_are_capped_and_the_rest_wait_their_turn(tmp_path: Path) -> None:
    async def handle(req: Request, fds: tuple[int, ...]) -> bytes:
        return api.encode_result("pong")

    server = ApiServer(bind_unix(tmp_path / "api.sock"), rq.REQUESTS, handle, Counter(), 4)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        idle = [await _connect(tmp_path / "api.sock") for _ in range(4)]
        late = await _connect(tmp_path / "api.sock")  # waits in the backlog
        await late.send_all(api.encode_request("ping", {}))
        await trio.testing.wait_all_tasks_blocked()
        assert server.active == 4  # the fifth is not being served
        for s in idle:
            await s.aclose()
        with trio.fail_after(5):
            assert (await _reply(late))["result"] == "pong"
        assert server.peak == 4
        nursery.cancel_scope.cancel()


async def test_wrong_types_are_refused_before_the_handler(tmp_path: Path) -> None:
    seen: list[Request] = []

    async def handle(req: Request, fds: tuple[int, ...]) -> bytes:
        seen.append(req)
        return api.encode_result(None)

    counters: Counter[str] = Counter()
    server = ApiServer(bind_unix(tmp_path / "api.sock"), rq.REQUESTS, handle, counters)
    line = b'{"op": "container.rm", "args": {"container": "keepme", "force": "false"}}'
    reply = json.loads(await server.dispatch(line))
    assert reply["ok"] is False and "must be true or false" in reply["error"]
    assert seen == [] and counters["bad_arguments"] == 1
    reply = json.loads(await server.dispatch(b'{"op": "container.rm", "args": {"container": "k"}}'))
    assert reply["ok"] is True and seen == [rq.ContainerRm("k")]


async def test_locks_of_different_objects_never_wait_for_each_other() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    release_a = trio.Event()

    async def slow_a() -> None:
        async with locks.hold("a"):
            order.append("a start")
            await release_a.wait()
            order.append("a end")

    async def quick(key: str) -> None:
        async with locks.hold(key):
            order.append(f"{key} ran")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(slow_a)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(quick, "a")
        nursery.start_soon(quick, "b")
        await trio.testing.wait_all_tasks_blocked()
        assert order == ["a start", "b ran"]  # b ran while a is held; the second a waits
        release_a.set()
    assert order == ["a start", "b ran", "a end", "a ran"]
    assert len(locks) == 0  # no lock outlives its users


async def test_descriptors_sent_with_a_request_reach_the_handler_and_are_closed(
    tmp_path: Path,
) -> None:
    got: list[tuple[int, ...]] = []

    async def handle(req: Request, fds: tuple[int, ...]) -> bytes:
        got.append(fds)
        os.write(fds[1], b"written by the agent")
        return api.encode_result({"ExitCode": 0})

    read_end, write_end = os.pipe()
    server = ApiServer(bind_unix(tmp_path / "api.sock"), rq.REQUESTS, handle, Counter())
    client = api.Client(tmp_path / "api.sock", timeout=5)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            args = {"container": "c", "cmd": ["true"]}
            res = await trio.to_thread.run_sync(
                lambda: client.call_attached("container.exec", (0, write_end, 2), **args)
            )
            nursery.cancel_scope.cancel()
        assert res == {"ExitCode": 0}
        assert os.read(read_end, 100) == b"written by the agent"
        (fds,) = got
        assert len(fds) == 3 and write_end not in fds  # the agent's own copies…
        for fd in fds:  # …closed once the request ended
            with pytest.raises(OSError):
                os.fstat(fd)
    finally:
        os.close(read_end)
        os.close(write_end)
