"""Actions (web/actions.py, app.py): off unless --allow-actions (403), JSON from the page's own
origin only, and only toward the lab's own containers. Plus the watchers (agents.py) that feed
the view from each agent's `watch`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from overlaynet import api
from overlaynet.lab import LabHost
from overlaynet.web import actions, agents
from overlaynet.web.app import make_app
from overlaynet.web.hub import Hub
from overlaynet.web.model import HostReport, View, build_view
from tests.unit.web.reports import OVERLAY, report


def lab_view() -> View:
    return build_view("lab", [report("node1", containers=[("a", "running")]), report("node2")], {})


async def post(
    app: Any, path: str, body: bytes, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    raw_headers = [(b"host", b"127.0.0.1:8080")]
    raw_headers += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    sent = False
    status = 0
    out = bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.extend(message.get("body", b""))

    await app(scope, receive, send)
    return status, json.loads(out) if out else None


JSON = {"content-type": "application/json"}
CAPTURE = json.dumps({"network": OVERLAY}).encode()


@pytest.mark.parametrize("path", ["/api/actions/capture", "/api/actions/ping"])
async def test_actions_are_forbidden_without_allow_actions(path: str) -> None:
    hub = Hub("lab")
    hub.update(lab_view(), 1.0)
    status, doc = await post(make_app(hub), path, CAPTURE, JSON)
    assert status == 403
    assert "--allow-actions" in doc["error"]
    assert hub.counters["actions_refused"] == 1


async def test_the_snapshot_says_whether_actions_are_allowed() -> None:
    assert Hub("lab").snapshot()["actions"] is False
    hub = Hub("lab")
    make_app(hub, allow_actions=True)
    assert hub.snapshot()["actions"] is True


async def test_a_foreign_origin_may_not_act() -> None:
    app = make_app(Hub("lab"), allow_actions=True)
    status, _ = await post(
        app, "/api/actions/capture", CAPTURE, {**JSON, "origin": "http://evil.example"}
    )
    assert status == 403


async def test_a_form_post_is_refused() -> None:
    # A cross-site HTML form can send this content type without a preflight; JSON it cannot.
    app = make_app(Hub("lab"), allow_actions=True)
    status, _ = await post(
        app, "/api/actions/capture", b"network=x", {"content-type": "text/plain"}
    )
    assert status == 415


async def test_an_unknown_network_is_a_clear_error() -> None:
    hub = Hub("lab")
    hub.update(lab_view(), 1.0)
    app = make_app(hub, allow_actions=True)
    status, doc = await post(app, "/api/actions/capture", b'{"network": "nope"}', JSON)
    assert status == 400 and "no overlay network 'nope'" in doc["error"]
    status, doc = await post(app, "/api/actions/capture", b"[1]", JSON)
    assert status == 400 and "JSON object" in doc["error"]


def test_a_ping_goes_only_to_the_labs_own_containers() -> None:
    view = lab_view()
    ok = {"host": "node1", "container": "a", "target": "10.0.1.2"}
    assert actions.ping_spec(ok, view) == actions.PingSpec("node1", "a", "10.0.1.2")
    assert actions.ping_spec({"network": OVERLAY}, view) is None
    with pytest.raises(actions.ActionRefused, match="no address of this lab"):
        actions.ping_spec({**ok, "target": "8.8.8.8"}, view)
    with pytest.raises(actions.ActionRefused, match="no IPv4 address"):
        actions.ping_spec({**ok, "target": "-f"}, view)
    with pytest.raises(actions.ActionRefused, match="no container 'b'"):
        actions.ping_spec({**ok, "container": "b"}, view)


# ---- the watchers ---------------------------------------------------------------------------


class FakeAgents:
    """Stands in for `agents.call`: `watch` answers from a script, reads are counted."""

    def __init__(self, watch_answers: list[Any]) -> None:
        self.watch_answers = watch_answers
        self.watch_args: list[dict[str, Any]] = []
        self.down = False  # the agent went away: asking it answers an error report

    async def call(self, socket_path: Path, op: str, **args: Any) -> Any:
        assert op == "watch"
        self.watch_args.append(args)
        if not self.watch_answers:
            await trio.sleep_forever()
        answer = self.watch_answers.pop(0)
        if isinstance(answer, Exception):
            self.down = isinstance(answer, api.AgentDown)
            raise answer
        return answer


async def run_watcher(
    monkeypatch: pytest.MonkeyPatch, fake: FakeAgents, rounds: int
) -> tuple[Hub, list[str]]:
    hub = Hub("lab")
    asked: list[str] = []

    async def ask_host(host: LabHost, ask: Any) -> HostReport:
        asked.append(host.name)
        if fake.down:
            return HostReport(host.name, host.ip, error="no agent: refused")
        return report(host.name)

    monkeypatch.setattr(agents, "call", fake.call)
    monkeypatch.setattr(agents, "ask_host", ask_host)
    poller = agents.Poller(hub, "lab")
    poller.hosts = [LabHost("node1", "192.168.0.11")]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(poller.watch, poller.hosts[0])
        while len(fake.watch_args) < rounds:
            await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    return hub, asked


async def test_a_watch_answer_with_changes_asks_that_host_and_moves_the_cursor(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeAgents(
        [
            {"epoch": "e", "generation": 3, "changed": {"containers": []}},
            {"epoch": "e", "generation": 3, "changed": {}},
            {"epoch": "e", "generation": 4, "changed": {"fdb": {}}},
        ]
    )
    hub, asked = await run_watcher(monkeypatch, fake, 4)
    assert asked == ["node1", "node1"]  # the answer without changes asked nothing
    assert [a["cursor"] for a in fake.watch_args] == [0, 3, 3, 4]
    assert fake.watch_args[1]["epoch"] == "e"
    assert hub.cursors == {"node1": 4}
    assert hub.counters["asks_fed"] == 2
    assert "host/node1" in hub.view


async def test_an_agent_without_watch_is_polled(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    from overlaynet.errors import InvalidArgument

    fake = FakeAgents([InvalidArgument("unknown operation 'watch'")])
    hub, asked = await run_watcher(monkeypatch, fake, 2)
    assert hub.counters["watch_unsupported"] == 1
    assert hub.counters["asks_polled"] == 1 and asked == ["node1"]


async def test_an_agent_that_goes_away_is_asked_once_then_retried_from_a_new_epoch(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    fake = FakeAgents(
        [
            {"epoch": "e", "generation": 2, "changed": {"containers": []}},
            api.AgentDown("refused"),
            api.AgentDown("refused"),
        ]
    )
    hub, _ = await run_watcher(monkeypatch, fake, 4)
    assert hub.counters["watch_failures"] == 2
    assert hub.counters["asks_down"] == 1  # the second failure, already reported, asks nothing
    assert fake.watch_args[-1]["epoch"] == "" and fake.watch_args[-1]["cursor"] == 0


@pytest.mark.parametrize(
    "answer",
    [[], {"epoch": 1, "generation": 0, "changed": {}}, {"epoch": "e", "generation": -1}],
)
def test_a_malformed_watch_answer_is_refused(answer: Any) -> None:
    with pytest.raises((agents.BadAnswer, KeyError)):
        agents.read_watch(answer)
