"""The ASGI app, driven through ASGI itself under trio: routes, headers, and the event stream
(snapshot first, coalesced patches at a bounded rate, a slot freed when the browser goes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing

from overlaynet.web.app import make_app
from overlaynet.web.feed import SEND_INTERVAL
from overlaynet.web.hub import Hub
from overlaynet.web.model import View, build_view
from overlaynet.web.server import allowed_hosts
from tests.unit.web.reports import report


@dataclass
class Exchange:
    """One HTTP request to the app: what it sent back, as it arrives."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    done: bool = False
    disconnect: trio.Event = field(default_factory=trio.Event)
    arrived: trio.Event = field(default_factory=trio.Event)

    def messages(self) -> list[tuple[str, Any]]:
        """The server-sent events received so far: (event name, decoded data)."""
        out = []
        for block in bytes(self.body).decode().split("\n\n"):
            lines = dict(
                line.split(": ", 1)
                for line in block.splitlines()
                if ": " in line and line[0] != ":"
            )
            if "event" in lines:
                out.append((lines["event"], json.loads(lines["data"])))
        return out


async def request(
    app: Any, path: str, exchange: Exchange, method: str = "GET", host: str = "127.0.0.1"
) -> None:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", host.encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent_request = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_request
        if not sent_request:
            sent_request = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await exchange.disconnect.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            exchange.status = message["status"]
            exchange.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message["type"] == "http.response.body":
            exchange.body += message.get("body", b"")
            exchange.done = not message.get("more_body", False)
            exchange.arrived.set()
            exchange.arrived = trio.Event()

    await app(scope, receive, send)


async def get(app: Any, path: str, **kwargs: Any) -> Exchange:
    exchange = Exchange()
    await request(app, path, exchange, **kwargs)
    return exchange


def three(*names: str) -> View:
    ctrs = [(n, "running") for n in names]
    return build_view("lab", [report("node1"), report("node2", containers=ctrs)], {})


async def test_the_page_is_served_with_a_policy_that_allows_only_its_own_files() -> None:
    app = make_app(Hub("lab"))
    page = await get(app, "/")
    assert page.status == 200
    assert b"/static/vendor/cytoscape.min.js" in page.body
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert (await get(app, "/static/vendor/cytoscape.min.js")).status == 200
    assert (await get(app, "/static/app.js")).status == 200


async def test_it_is_read_only() -> None:
    app = make_app(Hub("lab"))
    for path in ("/", "/api/state", "/events"):
        assert (await get(app, path, method="POST")).status == 405


async def test_a_foreign_host_name_is_refused_when_bound_to_loopback() -> None:
    # DNS rebinding: a page elsewhere resolving its own name to 127.0.0.1.
    app = make_app(Hub("lab"), allowed_hosts("127.0.0.1"))
    assert (await get(app, "/api/state", host="evil.example")).status == 400
    assert (await get(app, "/api/state", host="localhost:8080")).status == 200


async def test_the_state_is_the_hubs_view() -> None:
    hub = Hub("lab")
    hub.update(three("web"), 1.0)
    state = json.loads((await get(make_app(hub), "/api/state")).body)
    assert state["lab"] == "lab"
    assert state["view"]["ctr/node2/node2-web"]["name"] == "web"


async def test_the_stream_starts_with_a_snapshot_then_coalesces_changes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Hub("lab")
    hub.update(three(), 1.0)
    app = make_app(hub)
    exchange = Exchange()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, app, "/events", exchange)
        while not exchange.messages():
            await exchange.arrived.wait()
        assert exchange.headers["content-type"].startswith("text/event-stream")
        assert exchange.body.startswith(b"retry: ")
        ((kind, snapshot),) = exchange.messages()
        assert kind == "snapshot" and "ctr/node2/node2-a" not in snapshot["view"]
        # The first change goes out at once; three more within the interval fold into one.
        hub.update(three("a"), 2.0)
        while len(exchange.messages()) < 2:
            await exchange.arrived.wait()
        sent_first = trio.current_time()
        hub.update(three("a", "b"), 3.0)
        hub.update(three("a", "b", "c"), 4.0)
        hub.update(three("b", "c"), 5.0)
        while len(exchange.messages()) < 3:
            await exchange.arrived.wait()
        assert trio.current_time() - sent_first >= SEND_INTERVAL
        first, second = (data for kind, data in exchange.messages()[1:])
        assert list(first["set"]) == ["ctr/node2/node2-a", "endpoints/node2"]
        assert "ctr/node2/node2-b" in second["set"] and "ctr/node2/node2-c" in second["set"]
        assert second["del"] == ["ctr/node2/node2-a"]
        created = [e["text"] for e in second["events"] if "created" in e["text"]]
        assert created == [
            "node2: container b (alpine) created, running",
            "node2: container c (alpine) created, running",
        ]
        exchange.disconnect.set()
    assert hub.subscribers == set()


async def test_browsers_past_the_limit_are_refused_and_a_slot_frees_on_disconnect() -> None:
    hub = Hub("lab", max_clients=1)
    hub.update(three(), 1.0)
    app = make_app(hub)
    first = Exchange()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(request, app, "/events", first)
        while not first.messages():
            await first.arrived.wait()
        refused = await get(app, "/events")
        assert refused.status == 503
        first.disconnect.set()
    assert not hub.full
    assert hub.counters["clients_refused"] == 1
