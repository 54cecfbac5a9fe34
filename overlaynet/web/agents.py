"""Ask every agent of a lab what it has, over its Unix socket, at a bounded rate.

The agents have no subscribe operation yet, so the server polls their read-only operations
(info, network.ls, network.inspect, container.ls, gossip.endpoints) and turns the answers into
diffs itself; the browser never polls. Each round asks every host at once (at most
`MAX_CONCURRENT_CALLS` sockets open), joins the answers into one view and hands it to the hub.
A host that does not answer within `CALL_TIMEOUT` is reported as such for that round; the
server itself keeps running whatever an agent does.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from overlaynet import api
from overlaynet.errors import ApiError
from overlaynet.lab import LabHost, read_hosts
from overlaynet.paths import HostPaths
from overlaynet.web.hub import Hub
from overlaynet.web.model import UNDRAWN_DRIVERS, HostReport, build_view

# A round every half second: a started container shows on the page well within issue 17's 2 s
# (poll + the feed's quarter-second send interval), at a few dozen small calls a second for 3 hosts.
POLL_INTERVAL = 0.5
# Past ~10 hosts the rounds stretch so the agents together answer at most this many host polls
# a second (each is 4 + 2 per network calls): a 50-host lab is polled every 2.5 s.
HOST_POLLS_PER_SECOND = 20.0
# The agent answers reads from memory in milliseconds; one stuck for this long is reported
# unreachable for the round rather than holding the whole view back.
CALL_TIMEOUT = 2.0
# Sockets open at once across all hosts: enough to poll a 3-host lab in parallel, few enough
# that a 50-host lab does not wake every agent in the same instant.
MAX_CONCURRENT_CALLS = 8
# An answer is a few KiB (a manager's network list, an endpoint table of 200 rows ~ 30 KiB).
MAX_ANSWER_BYTES = 4 << 20

Caller = Callable[..., Awaitable[Any]]


class BadAnswer(ValueError):
    """An agent answered something that is not the shape its operation promises."""


def round_interval(hosts: int) -> float:
    return max(POLL_INTERVAL, hosts / HOST_POLLS_PER_SECOND)


async def call(socket_path: Path, op: str, **args: Any) -> Any:
    """One API request over the agent's socket (api's codec, trio's socket, a deadline)."""
    with trio.fail_after(CALL_TIMEOUT):
        try:
            stream = await trio.open_unix_socket(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise api.AgentDown(str(e)) from None
        async with stream:
            await stream.send_all(api.encode_request(op, args))
            answer = bytearray()
            while not answer.endswith(b"\n"):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise api.AgentDown("the agent closed the connection without answering")
                answer += chunk
                if len(answer) > MAX_ANSWER_BYTES:
                    raise BadAnswer(f"answer to {op} is over {MAX_ANSWER_BYTES} bytes")
    return api.decode_response(bytes(answer))


async def ask_host(host: LabHost, ask: Caller) -> HostReport:
    """Everything the page shows of one host, or a report saying why it did not answer.

    `ask(op, **args)` sends one request to this host's agent.
    """
    try:
        info = _expect(await ask("info"), dict, "info")
        networks = _expect(await ask("network.ls"), list, "network.ls")
        containers = _expect(await ask("container.ls", all=True), list, "container.ls")
        docs: dict[str, Mapping[str, Any]] = {}
        for row in networks:
            if row.get("driver") in UNDRAWN_DRIVERS:
                continue
            doc = await _optional(ask, "network.inspect", network=row["id"])
            if doc is not None:
                docs[row["id"]] = _expect(doc, dict, "network.inspect")
        members = _expect((info.get("Gossip") or {}).get("Members", []), list, "info")
        endpoints: dict[str, Sequence[Mapping[str, Any]]] = {}
        if info.get("Swarm"):
            for net_id, doc in docs.items():
                if "VTEP" not in (doc.get("Overlay") or {}):
                    continue  # an overlay this host has not joined has no table here
                rows = await _optional(ask, "gossip.endpoints", network=net_id)
                if rows is not None:
                    endpoints[net_id] = _expect(rows, list, "gossip.endpoints")
    except api.AgentDown as e:
        return HostReport(host.name, host.ip, error=f"no agent: {e}")
    except trio.TooSlowError:
        return HostReport(host.name, host.ip, error=f"no answer within {CALL_TIMEOUT:g} s")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        # A socket error, bad JSON, or an answer of the wrong shape: that host is unknown
        # this round, the rest of the view goes on.
        return HostReport(host.name, host.ip, error=f"{type(e).__name__}: {e}")
    return HostReport(
        host.name,
        host.ip,
        info=info,
        networks=networks,
        network_docs=docs,
        containers=containers,
        members=members,
        endpoints=endpoints,
    )


async def _optional(ask: Caller, op: str, **args: Any) -> Any:
    """An answer, or None when the agent refuses (a network removed since network.ls)."""
    try:
        return await ask(op, **args)
    except ApiError:
        return None


def _expect(value: Any, kind: type, op: str) -> Any:
    if not isinstance(value, kind):
        raise BadAnswer(f"{op} answered a {type(value).__name__}, not a {kind.__name__}")
    if isinstance(value, list) and not all(isinstance(row, dict) for row in value):
        raise BadAnswer(f"{op} answered a list with rows that are not objects")
    return value


class Poller:
    """The rounds: ask every host of the lab, build the view, give it to the hub."""

    def __init__(self, hub: Hub, lab: str) -> None:
        self.hub = hub
        self.lab = lab
        self.limiter = trio.CapacityLimiter(MAX_CONCURRENT_CALLS)

    def _asker(self, host: LabHost) -> Caller:
        socket_path = HostPaths(host.name, self.lab).socket

        async def ask(op: str, **args: Any) -> Any:
            async with self.limiter:
                self.hub.counters["calls"] += 1
                return await call(socket_path, op, **args)

        return ask

    async def poll_once(self) -> int:
        """One round; returns how many hosts the lab has."""
        hosts = read_hosts(self.lab)
        reports: dict[str, HostReport] = {}

        async def one(host: LabHost) -> None:
            reports[host.name] = await ask_host(host, self._asker(host))

        async with trio.open_nursery() as nursery:
            for host in hosts:
                nursery.start_soon(one, host)
        ordered = [reports[h.name] for h in hosts]
        self.hub.counters["unanswered"] += sum(1 for r in ordered if not r.answered)
        self.hub.update(build_view(self.lab, ordered, self.hub.view), time.time())
        return len(hosts)

    async def run(self) -> None:
        while True:
            started = trio.current_time()
            hosts = await self.poll_once()
            await trio.sleep_until(started + round_interval(hosts))
