"""`overlaynet lab ui`: Hypercorn's trio worker serving the app, beside the poller, in one
nursery (the server's whole life is visible in `serve`).

Why this stack: the project is trio throughout; Starlette runs on AnyIO, which runs on trio,
and Hypercorn has a native trio worker (`hypercorn.trio.serve`) that a trio program can start
in its own nursery, learning the bound address through `task_status`. Both are maintained
(encode/starlette, pgjones/hypercorn) and small; uvicorn, the usual alternative, is asyncio
only.
"""

from __future__ import annotations

import signal
from collections.abc import Sequence
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from overlaynet.lab import read_hosts
from overlaynet.web.agents import SAFETY_INTERVAL, Poller
from overlaynet.web.app import make_app
from overlaynet.web.hub import Hub

DEFAULT_BIND = "127.0.0.1"
DEFAULT_PORT = 8080
# Event streams never end by themselves: on Ctrl-C give them this long, then cut them.
GRACEFUL_TIMEOUT = 1.0
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


class NoSuchLab(RuntimeError):
    """The lab to show has no hosts (it was never built, or was taken down)."""


def allowed_hosts(bind: str) -> list[str]:
    """Host headers the server accepts: loopback names when bound to loopback, else any."""
    if bind in LOOPBACK_NAMES or bind.startswith("127."):
        return sorted({*LOOPBACK_NAMES, bind})
    return ["*"]


def hypercorn_config(bind: str, port: int) -> Config:
    config = Config()
    host = f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    config.graceful_timeout = GRACEFUL_TIMEOUT
    return config


async def serve(
    lab: str,
    port: int = DEFAULT_PORT,
    bind: str = DEFAULT_BIND,
    *,
    allow_actions: bool = False,
    safety_interval: float = SAFETY_INTERVAL,
    task_status: trio.TaskStatus[Sequence[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Watch the lab and serve the page until cancelled; `task_status` gets the bound URLs
    (port 0 picks a free one) once the first view is built."""
    if not read_hosts(lab):
        raise NoSuchLab(f"lab {lab} has no hosts: build it with `overlaynet lab up --name {lab}`")
    hub = Hub(lab)
    poller = Poller(hub, lab, safety_interval)
    hub.refresh = poller.poll_once
    # The first round before the first browser: the page never starts from an empty view.
    await poller.poll_once()
    # Starlette's and Hypercorn's ASGI type aliases differ in spelling, not in protocol.
    app: Any = make_app(hub, allowed_hosts(bind), allow_actions)
    async with trio.open_nursery() as nursery:

        async def http(task_status: trio.TaskStatus[Sequence[str]]) -> None:
            await hypercorn_serve(app, hypercorn_config(bind, port), task_status=task_status)
            # Hypercorn takes Ctrl-C as its cue for a graceful stop and returns: so do we.
            nursery.cancel_scope.cancel()

        nursery.start_soon(poller.run)
        task_status.started(await nursery.start(http))


def run(
    lab: str, port: int = DEFAULT_PORT, bind: str = DEFAULT_BIND, allow_actions: bool = False
) -> int:
    """The CLI's entry: print the URL, serve until Ctrl-C."""

    if not read_hosts(lab):
        raise NoSuchLab(f"lab {lab} has no hosts: build it with `overlaynet lab up --name {lab}`")

    async def main() -> None:
        # Ctrl-C and SIGTERM both end the server, even where a shell started it with SIGINT
        # ignored (a background job): the handler is trio's, not the inherited disposition.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                urls = await nursery.start(
                    partial(serve, allow_actions=allow_actions), lab, port, bind
                )
                mode = "actions allowed" if allow_actions else "read-only"
                for url in urls:
                    print(
                        f"overlaynet lab ui: lab {lab} at {url}/  ({mode}; Ctrl-C stops it)",
                        flush=True,
                    )
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    try:
        trio.run(main)
    except BaseExceptionGroup as group:
        # A port in use comes out of two nurseries: the CLI wants the one error inside.
        leaf = _only_leaf(group)
        if isinstance(leaf, OSError | NoSuchLab):
            raise leaf from None
        raise
    return 0


def _only_leaf(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error
