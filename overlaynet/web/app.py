"""The ASGI app: the page, its static files, the current state, and the event stream.

Read-only by default: every route but the actions is GET (Starlette answers 405 to anything
else), and nothing here can reach an agent; the page learns only what the watchers put in the
hub. The actions (POST /api/actions/capture, /api/actions/ping, /api/actions/trace: a bounded
underlay capture, a ping between the lab's containers, a trace from one of them to a lab
address or name; actions.py, trace.py; one at a time) answer 403 unless the server was
started with `--allow-actions`. They take JSON only (a cross-site form cannot send it without a CORS
preflight, which this server never grants) and refuse a foreign Origin.

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

from overlaynet.trace.run import CallFailed
from overlaynet.web import actions, packets
from overlaynet.web import trace as web_trace
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


def make_app(
    hub: Hub, allowed_hosts: Sequence[str] = ("*",), allow_actions: bool = False
) -> Starlette:
    """The app for one hub. `allowed_hosts` guards a loopback-bound server against DNS
    rebinding (a web page elsewhere naming 127.0.0.1 under its own host name)."""
    hub.actions = allow_actions
    action_lock = trio.Lock()

    async def action_body(request: Request) -> dict[str, Any] | Response:
        """The JSON body of an action, or the response that refuses it."""
        if not allow_actions:
            hub.counters["actions_refused"] += 1
            return JSONResponse(
                {"error": "actions are off: start the server with --allow-actions"},
                status_code=403,
            )
        origin = request.headers.get("origin")
        if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
            return JSONResponse({"error": f"origin {origin} may not act here"}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0] != "application/json":
            return JSONResponse({"error": "send the action as application/json"}, status_code=415)
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
        return body

    async def capture(request: Request) -> Response:
        body = await action_body(request)
        if isinstance(body, Response):
            return body
        try:
            net = actions.network_of(body, hub.view)
            spec = actions.ping_spec(body, hub.view)
        except actions.ActionRefused as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if action_lock.locked():
            return JSONResponse({"error": "another action is running"}, status_code=409)
        async with action_lock:
            hub.counters["captures"] += 1
            frames, ping_result = await actions.capture_with_ping(hub.lab, spec)
            if hub.refresh is not None:
                await hub.refresh()  # the FDB counters the join quotes include this ping
        decoded = [packets.decode(f) for f in frames]
        shown = [p for p in decoded if p.vni is None or p.vni == net.get("vni")]
        return JSONResponse(
            {
                "network": net.get("name"),
                "vni": net.get("vni"),
                "ping": ping_result,
                "captured": len(frames),
                "packets": [packets.to_json(p, hub.view) for p in shown],
            },
            headers=_no_store(),
        )

    async def ping(request: Request) -> Response:
        body = await action_body(request)
        if isinstance(body, Response):
            return body
        try:
            spec = actions.ping_spec(body, hub.view)
        except actions.ActionRefused as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if spec is None:
            return JSONResponse({"error": "a ping needs host, container, target"}, 400)
        if action_lock.locked():
            return JSONResponse({"error": "another action is running"}, status_code=409)
        async with action_lock:
            hub.counters["pings"] += 1
            return JSONResponse({"ping": await actions.ping(hub.lab, spec)}, headers=_no_store())

    async def trace(request: Request) -> Response:
        body = await action_body(request)
        if isinstance(body, Response):
            return body
        try:
            req = web_trace.trace_request(body, hub.view)
        except web_trace.TraceRefused as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if action_lock.locked():
            return JSONResponse({"error": "another action is running"}, status_code=409)
        async with action_lock:
            hub.counters["traces"] += 1
            try:
                doc = await web_trace.run_in_lab(hub.lab, req, hub.view)
            except CallFailed as e:
                hub.counters["traces_failed"] += 1
                return JSONResponse({"error": str(e)}, status_code=502)
        return JSONResponse(doc, headers=_no_store())

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
            Route("/api/actions/capture", capture, methods=["POST"]),
            Route("/api/actions/ping", ping, methods=["POST"]),
            Route("/api/actions/trace", trace, methods=["POST"]),
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
