"""The ASGI app: the page, its static files, the current state, and the event stream.

Read-only: every route is GET (Starlette answers 405 to anything else), and nothing here can
reach an agent; the page learns only what the poller put in the hub.

The stream is server-sent events (text/event-stream): a `snapshot` message first (the whole
view and the recent timeline), then `patch` messages, at most one per `SEND_INTERVAL`, each the
coalesced backlog of that browser (feed.py). A comment line every `HEARTBEAT` seconds lets a
proxy or the browser see the stream is alive. The browser's EventSource reconnects by itself
after `RETRY_MS` and gets a fresh snapshot, so a lost message is never a lost state.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from overlaynet.web.feed import SEND_INTERVAL
from overlaynet.web.hub import Hub, TooManyClients

STATIC = Path(__file__).parent / "static"
# Long enough to be no load, short enough that a dead connection is found within a minute.
HEARTBEAT = 15.0
# The browser waits this long before reconnecting a broken stream.
RETRY_MS = 2000
# The page loads only its own files: no CDN (the lab may be offline), no inline script.
# Cytoscape sets element styles from script, which 'unsafe-inline' for styles allows.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def sse(event: str, data: Any) -> str:
    """One server-sent event; JSON has no raw newlines, so one data line carries it."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


async def stream(hub: Hub, send_interval: float = SEND_INTERVAL) -> AsyncIterator[str]:
    """One browser's event stream, for as long as it stays connected."""
    try:
        sub = hub.subscribe()
    except TooManyClients as e:
        # Lost the race for the last slot after the route checked: say so and end.
        yield sse("refused", {"error": str(e)})
        return
    try:
        yield f"retry: {RETRY_MS}\n" + sse("snapshot", hub.snapshot())
        last_sent = -math.inf
        while True:
            with trio.move_on_after(HEARTBEAT):
                await sub.wait()
            if not sub.feed.pending:
                yield ": keep-alive\n\n"
                continue
            # Rate limit: changes that arrive within the interval wait and fold into one message.
            await trio.sleep_until(last_sent + send_interval)
            message = sub.feed.take()
            last_sent = trio.current_time()
            if message is not None:
                yield sse("patch", message)
    finally:
        hub.unsubscribe(sub)


def make_app(hub: Hub, allowed_hosts: Sequence[str] = ("*",)) -> Starlette:
    """The app for one hub. `allowed_hosts` guards a loopback-bound server against DNS
    rebinding (a web page elsewhere naming 127.0.0.1 under its own host name)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers=_no_store())

    async def state(request: Request) -> Response:
        return JSONResponse(hub.snapshot(), headers=_no_store())

    async def stats(request: Request) -> Response:
        return JSONResponse(hub.stats(), headers=_no_store())

    async def events(request: Request) -> Response:
        if hub.full:
            hub.counters["clients_refused"] += 1
            return JSONResponse({"error": "too many browsers watching"}, status_code=503)
        headers = {**_no_store(), "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(hub), media_type="text/event-stream", headers=headers)

    return Starlette(
        routes=[
            Route("/", index),
            Route("/api/state", state),
            Route("/api/stats", stats),
            Route("/events", events),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)),
            Middleware(_SecurityHeaders),
        ],
    )


def _no_store() -> dict[str, str]:
    return {"Cache-Control": "no-store"}


class _SecurityHeaders:
    """Adds the content security policy and no-sniff to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CSP.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
