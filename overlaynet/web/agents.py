"""Keep the server's view of every agent of a lab current: fed by each agent's `watch`.

Each host has a watcher: it long-polls the agent's `watch` operation (agent/watch.py, at most
`WATCH_WAIT` per call) with the cursor of the last change it saw. When the agent answers that
something changed (a new generation), the watcher asks that host, and only that host, for what
the page shows (info, network.ls, container.ls, network.inspect, gossip.endpoints, dns.records,
network.lb) and hands the joined view to the hub; the browser never polls. One slow safety
round (`SAFETY_INTERVAL`) asks every host anyway: it refreshes counters (the FDB's frames and
bytes, which are no change of state) and picks up hosts added to the lab. An agent without
`watch` (an older one) is polled at the old rate instead.

A host that does not answer within `CALL_TIMEOUT` is reported as such; the server itself keeps
running whatever an agent does.
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

# An agent without `watch` is polled every half second (the first version's rate): a started
# container shows on the page well within issue 17's 2 s.
POLL_INTERVAL = 0.5
# Past ~10 hosts the polled rounds stretch so the agents together answer at most this many host
# polls a second (each is 4 + 4 per network calls): a 50-host lab is polled every 2.5 s.
HOST_POLLS_PER_SECOND = 20.0
# The agent's own bound on one `watch` (agent/watch.py MAX_WAIT): asking for longer is refused.
WATCH_WAIT = 1.0
# The safety round: counters on the tables move with every frame but are no change of state,
# so they are refreshed this often; also the bound on a change some agent failed to report.
SAFETY_INTERVAL = 10.0
# An agent that did not answer is asked again after this (it may be restarting).
RETRY_INTERVAL = 1.0
# The agent answers reads from memory in milliseconds; one stuck for this long is reported
# unreachable rather than holding the whole view back. Longer than WATCH_WAIT, with margin.
CALL_TIMEOUT = 2.0
# Sockets open at once across all hosts for the reads (a watch holds none of these): enough for
# a 3-host lab in parallel, few enough that a 50-host lab does not wake every agent at once.
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
            answer = bytearray()
            try:
                await stream.send_all(api.encode_request(op, args))
                while not answer.endswith(b"\n"):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        raise api.AgentDown("the agent closed the connection without answering")
                    answer += chunk
                    if len(answer) > MAX_ANSWER_BYTES:
                        raise BadAnswer(f"answer to {op} is over {MAX_ANSWER_BYTES} bytes")
            except trio.BrokenResourceError as e:
                # A killed agent resets the connection a watch holds open (ECONNRESET).
                raise api.AgentDown(f"the agent reset the connection: {e.__cause__ or e}") from None
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
        nodes: Sequence[Mapping[str, Any]] = ()
        if (info.get("Swarm") or {}).get("Role") == "manager":
            # A manager lists every node's availability (`node update --availability drain`).
            answer = await _optional(ask, "node.ls")
            if answer is not None:
                nodes = _expect(answer, list, "node.ls")
        endpoints: dict[str, Sequence[Mapping[str, Any]]] = {}
        if info.get("Swarm"):
            for net_id, doc in docs.items():
                if "VTEP" not in (doc.get("Overlay") or {}):
                    continue  # an overlay this host has not joined has no table here
                rows = await _optional(ask, "gossip.endpoints", network=net_id)
                if rows is not None:
                    endpoints[net_id] = _expect(rows, list, "gossip.endpoints")
        dns: dict[str, Mapping[str, Any]] = {}
        lb: dict[str, Mapping[str, Any]] = {}
        for net_id, doc in docs.items():
            overlay = doc.get("Overlay")
            if overlay is not None and "VTEP" not in overlay:
                continue  # an overlay only the managers know here: no tables on this host
            answer = await _optional(ask, "dns.records", network=net_id)
            if answer is not None:
                dns[net_id] = _expect(answer, dict, "dns.records")
            if overlay is not None:
                answer = await _optional(ask, "network.lb", network=net_id)
                if answer is not None:
                    lb[net_id] = _expect(answer, dict, "network.lb")
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
        dns=dns,
        lb=lb,
        nodes=nodes,
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
    """Every host's watcher and the safety round; each new host report rebuilds the view."""

    def __init__(self, hub: Hub, lab: str, safety_interval: float = SAFETY_INTERVAL) -> None:
        self.hub = hub
        self.lab = lab
        self.safety_interval = safety_interval
        self.limiter = trio.CapacityLimiter(MAX_CONCURRENT_CALLS)
        self.hosts: list[LabHost] = []
        self.reports: dict[str, HostReport] = {}
        # Per host: the agent's epoch and the generation of the last change asked about.
        self.cursors: dict[str, tuple[str, int]] = {}
        self._watched: set[str] = set()

    def _asker(self, host: LabHost) -> Caller:
        socket_path = HostPaths(host.name, self.lab).socket

        async def ask(op: str, **args: Any) -> Any:
            async with self.limiter:
                self.hub.counters["calls"] += 1
                return await call(socket_path, op, **args)

        return ask

    def _publish(self) -> None:
        ordered = [self.reports[h.name] for h in self.hosts if h.name in self.reports]
        self.hub.cursors = {name: gen for name, (_, gen) in self.cursors.items()}
        self.hub.update(build_view(self.lab, ordered, self.hub.view), time.time())

    async def refresh(self, host: LabHost, why: str) -> HostReport:
        """Ask one host again (`why`: fed, polled, down) and rebuild the view."""
        report = await ask_host(host, self._asker(host))
        self.hub.counters[f"asks_{why}"] += 1
        self.reports[host.name] = report
        self._publish()
        return report

    async def poll_once(self) -> int:
        """The safety round: every host at once; returns how many hosts the lab has."""
        self.hosts = read_hosts(self.lab)
        reports: dict[str, HostReport] = {}

        async def one(host: LabHost) -> None:
            reports[host.name] = await ask_host(host, self._asker(host))

        async with trio.open_nursery() as nursery:
            for host in self.hosts:
                nursery.start_soon(one, host)
        self.reports = reports
        self.hub.counters["safety_rounds"] += 1
        self.hub.counters["unanswered"] += sum(1 for r in reports.values() if not r.answered)
        self._publish()
        return len(self.hosts)

    async def watch(self, host: LabHost) -> None:
        """One host's watcher: a `watch` call after another; a change asks the host again."""
        socket_path = HostPaths(host.name, self.lab).socket
        while True:
            epoch, cursor = self.cursors.get(host.name, ("", 0))
            try:
                answer = await call(
                    socket_path, "watch", epoch=epoch, cursor=cursor, timeout=WATCH_WAIT
                )
                epoch, cursor, changed = read_watch(answer)
            except ApiError:
                # No `watch` on that agent (an older one): poll it as the first version did.
                self.hub.counters["watch_unsupported"] += 1
                await self.refresh(host, "polled")
                await trio.sleep(round_interval(len(self.hosts)))
                continue
            except (api.AgentDown, trio.TooSlowError, OSError, ValueError, KeyError):
                self.hub.counters["watch_failures"] += 1
                self.cursors.pop(host.name, None)  # a restarted agent starts a new epoch
                previous = self.reports.get(host.name)
                if previous is None or previous.answered:
                    await self.refresh(host, "down")  # the page learns why from ask_host
                await trio.sleep(RETRY_INTERVAL)
                continue
            self.hub.counters["watch_calls"] += 1
            if changed:
                self.hub.counters["watch_changes"] += 1
                self.cursors[host.name] = (epoch, cursor)
                await self.refresh(host, "fed")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:
                for host in self.hosts:
                    if host.name not in self._watched:
                        self._watched.add(host.name)
                        nursery.start_soon(self.watch, host)
                await trio.sleep(self.safety_interval)
                await self.poll_once()


def read_watch(answer: Any) -> tuple[str, int, list[str]]:
    """A `watch` answer -> (epoch, generation, names of the changed parts)."""
    answer = _expect(answer, dict, "watch")
    epoch, generation, changed = answer["epoch"], answer["generation"], answer["changed"]
    if not isinstance(epoch, str) or not isinstance(generation, int) or generation < 0:
        raise BadAnswer("watch answered no epoch and generation")
    if not isinstance(changed, dict):
        raise BadAnswer("watch answered changed parts that are not an object")
    return epoch, generation, sorted(changed)
