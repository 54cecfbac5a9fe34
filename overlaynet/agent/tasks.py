"""The worker's task runner: the tasks the managers assign to this node become containers.

`plan` is the pure core: the managers' `task.assigned` answer and this host's task containers
in, the actions that bring them together out (start, report, stop, remove), time passed in.
`TaskRunner` is the thin trio shell, a child of the agent's nursery while the host is in a
swarm: it polls `task.assigned`, carries the actions out through the agent and reports each
task's progress (accepted → preparing → starting → running → complete/failed/shutdown).

A task's container is named `<service>.<slot>.<task id>` (Docker's name), so the task id
travels with the container: a restarted agent finds its tasks' containers again by name and
never starts a task twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from overlaynet.agent import hostcore
from overlaynet.agent import requests as rq
from overlaynet.agent.containers import TASK_LABEL as TASK_LABEL
from overlaynet.agent.health import (
    UNHEALTHY_ERROR,
    Health,
    ProbeResult,
    TaskHealth,
    probe_argv,
)
from overlaynet.agent.health import probe as run_probe
from overlaynet.agent.runtime import Allocation
from overlaynet.agent.servicedns import PortRow
from overlaynet.cluster.tasks import TaskState
from overlaynet.errors import ApiError, Conflict
from overlaynet.model import Container, Network, Status
from overlaynet.names import OBJECT_NAME_MAX, new_id

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent

log = logging.getLogger("overlaynet.agent.tasks")

# How long the worker waits before asking the managers again after an ask that failed (no
# manager, an election) or that they could not hold (no index in the answer): twice a second
# costs one small request per node.
POLL_INTERVAL = 0.5
# The gap between two long-polled asks. The managers hold each until the assignment moves, so
# the worker asks again at once: a new assignment, and every other node's task that starts
# serving (VIP and DNS backends), reach it without a poll interval's delay (measured 0.5 s at
# each step of a `service create`). The gap only bounds a busy swarm's rate: 20 asks/s/node.
LONG_POLL_GAP = 0.05
# While a long-polled `task.assigned` is held, a change of this host's task containers wakes
# the runner (`poke`, from the agent's state changes: a process that ended is one); this is
# only the safety net's period for a change no poke announced. It was a 0.1 s poll: ten
# wake-ups a second on every idle worker (issue 15).
LOCAL_RECHECK = 2.0
# Outside a swarm the runner sleeps until swarm init/join pokes it; this is only the safety
# net's period (it was a POLL_INTERVAL loop: two wake-ups a second on every agent, issue 15).
IDLE_RECHECK = 5.0
# Docker's default grace period before SIGKILL when a task is shut down (ContainerSpec
# StopGracePeriod, 10 s); tests and `service rm` wait for it, so it stays Docker's.
STOP_GRACE = 10.0
# How long a task being stopped waits for the managers to say every node has dropped it from
# DNS and its VIPs (update.DrainWatch) before it is stopped anyway: a node that gossip calls
# Ready but whose agent no longer asks must not keep a task running forever. Docker's stop
# grace period is the same order of time.
DRAIN_WAIT_MAX = 10.0


class BadAssignment(ValueError):
    """A `task.assigned` entry that does not parse: counted and skipped, the rest goes on."""


@dataclass(frozen=True)
class TaskNetwork:
    """A task's endpoint on one swarm network, allocated by the managers."""

    network_id: str
    network_name: str
    vni: int
    subnet: str
    gateway: str
    ingress: bool
    ip: str
    mac: str
    # The load balancer's idle-connection timeout on this network (lb entries only; None: the
    # kernel's default): cluster/lbidle.py.
    idle_timeout: int | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> TaskNetwork:
        return cls(
            network_id=_str(doc, "network_id"),
            network_name=_str(doc, "network_name"),
            vni=_int(doc, "vni"),
            subnet=_str(doc, "subnet"),
            gateway=_str(doc, "gateway"),
            ingress=bool(doc.get("ingress", False)),
            ip=_str(doc, "ip"),
            mac=_str(doc, "mac"),
            idle_timeout=_int(doc, "idle_timeout") if doc.get("idle_timeout") else None,
        )


@dataclass(frozen=True)
class AssignedTask:
    """One task as the managers assign it to this node."""

    id: str
    service_name: str
    name: str  # `web.2` (replica) or `web.<node id>` (global)
    image: str
    command: tuple[str, ...]
    env: tuple[str, ...]
    desired: TaskState
    state: TaskState
    not_before: float
    networks: tuple[TaskNetwork, ...]
    ports: tuple[PortRow, ...] = ()
    service_id: str = ""
    node_id: str = ""  # this node's id (the answer's `node_id`)

    @property
    def host_ports(self) -> tuple[PortRow, ...]:
        """Ports published on this node only, straight to the task (`mode=host`)."""
        return tuple(p for p in self.ports if p.mode == "host")

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> AssignedTask:
        try:
            not_before = doc.get("not_before")
            return cls(
                id=_str(doc, "id"),
                service_name=_str(doc, "service_name"),
                name=_str(doc, "name"),
                image=_str(doc, "image"),
                command=tuple(str(a) for a in doc.get("command") or ()),
                env=tuple(str(e) for e in doc.get("env") or ()),
                desired=TaskState(_str(doc, "desired_state")),
                state=TaskState(_str(doc, "state")),
                not_before=float(not_before) if not_before is not None else 0.0,
                networks=tuple(TaskNetwork.from_doc(n) for n in doc.get("networks") or ()),
                ports=tuple(PortRow.from_doc(p) for p in doc.get("ports") or ()),
                service_id=str(doc.get("service_id") or ""),
                node_id=str(doc.get("node_id") or ""),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise BadAssignment(f"bad task entry: {e}") from None

    @property
    def container_name(self) -> str:
        return container_name(self.name, self.id)


def container_name(task_name: str, task_id: str) -> str:
    """`<service>.<slot>.<task id>`, Docker's container name for a task; a name longer than a
    container name may be loses characters of its service part, never of the task id."""
    suffix = f".{task_id}"
    return task_name[: OBJECT_NAME_MAX - len(suffix)] + suffix


# The label that marks a task's container and names its task, as Docker's (the name alone
# could be any user's container `a.b.c`, which the runner must never remove): TASK_LABEL,
# defined with the containers (their start leaves the wait for the root to the runner).
# Where containers made before labels carried the marker: a restarted agent still finds them.
TASK_ENV = "OVERLAYNET_TASK_ID"


def task_labels(task: AssignedTask) -> tuple[str, ...]:
    """Docker's labels on a task's container (`--label` form)."""
    return (
        f"com.docker.swarm.node.id={task.node_id}",
        f"com.docker.swarm.service.id={task.service_id}",
        f"com.docker.swarm.service.name={task.service_name}",
        "com.docker.swarm.task=",
        f"{TASK_LABEL}={task.id}",
        f"com.docker.swarm.task.name={task.name}.{task.id}",
    )


def task_id_of(c: Container) -> str | None:
    """The task a container runs (None: not a task's container)."""
    task_id = c.labels.get(TASK_LABEL)
    if task_id is None:
        marker = next((e for e in c.env if e.startswith(TASK_ENV + "=")), None)
        if marker is None:
            return None
        task_id = marker.partition("=")[2]
    return task_id if task_id and c.name.endswith("." + task_id) else None


def local_tasks(containers: Iterable[Container]) -> dict[str, LocalTask]:
    """Task id → its container, among a host's containers."""
    out = {}
    for c in containers:
        task_id = task_id_of(c)
        if task_id is not None:
            ended = c.status == Status.EXITED
            out[task_id] = LocalTask(
                task_id, c.id, c.status == Status.RUNNING, c.exit_code if ended else None
            )
    return out


def task_network(n: TaskNetwork, now: float) -> Network:
    """The host's record of a task's swarm network (brought here with the task)."""
    return hostcore.network_from_swarm(
        {
            "id": n.network_id,
            "name": n.network_name,
            "created": now,
            "subnet": n.subnet,
            "gateway": n.gateway,
            "attachable": False,
            "vni": n.vni,
        }
    )


@dataclass(frozen=True)
class LocalTask:
    """A task's container on this host."""

    task_id: str
    container_id: str
    running: bool
    exit_code: int | None = None  # once it ended (None and not running: never started)


# ---- actions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """Create the task's container on its networks and start it, reporting each step."""

    task: AssignedTask


@dataclass(frozen=True)
class Start:
    """Start a task's container that was made but never started (an agent stopped between)."""

    task_id: str
    container_id: str


@dataclass(frozen=True)
class Report:
    """Tell the managers what became of a task (states in order, the last one final or not)."""

    task_id: str
    states: tuple[TaskState, ...]
    container_id: str | None = None
    exit_code: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Stop:
    """Stop a task's container, then report it shut down."""

    task_id: str
    container_id: str


@dataclass(frozen=True)
class Remove:
    """Remove the container of a task the managers no longer list (over, or gone)."""

    task_id: str
    container_id: str


Action = Run | Start | Report | Stop | Remove


def plan(
    assigned: Sequence[AssignedTask],
    stop: Iterable[str],
    local: Mapping[str, LocalTask],
    now: float,
) -> list[Action]:
    """What to do so this host runs exactly the tasks the managers want running here.

    `assigned`: the node's live tasks; `stop`: ids of tasks of removed services still to be
    stopped; `local`: task id → its container here. Pure: the same inputs, the same actions."""
    actions: list[Action] = []
    listed: set[str] = set()
    for t in assigned:
        listed.add(t.id)
        mine = local.get(t.id)
        if t.desired != TaskState.RUNNING:
            actions += _wind_down(t.id, t.state, mine)
            continue
        if mine is None:
            if t.state.rank >= TaskState.RUNNING.rank:
                # It ran here, and its container is gone (removed by hand, host rebuilt).
                actions.append(
                    Report(t.id, (TaskState.FAILED,), error="task: its container is gone")
                )
            elif now >= t.not_before:
                actions.append(Run(t))
        elif mine.running:
            if t.state != TaskState.RUNNING:
                actions.append(Report(t.id, (TaskState.RUNNING,), mine.container_id))
        elif mine.exit_code is None:
            actions.append(Start(t.id, mine.container_id))
        else:
            actions.append(_ended(t, mine))
    for task_id in stop:
        listed.add(task_id)
        actions += _wind_down(task_id, None, local.get(task_id))
    for task_id, mine in sorted(local.items()):
        if task_id not in listed:
            actions.append(Remove(task_id, mine.container_id))
    return actions


def _wind_down(task_id: str, state: TaskState | None, mine: LocalTask | None) -> list[Action]:
    if mine is not None and mine.running:
        return [Stop(task_id, mine.container_id)]
    if state is not None and state.final:
        return []
    return [Report(task_id, (TaskState.SHUTDOWN,), mine.container_id if mine else None)]


def _ended(t: AssignedTask, mine: LocalTask) -> Report:
    """A task whose process ended: complete (exit 0) or failed, after `running` if the
    managers never heard it ran (complete follows running only)."""
    code = mine.exit_code if mine.exit_code is not None else 0
    before = () if t.state == TaskState.RUNNING else (TaskState.RUNNING,)
    if code == 0:
        return Report(t.id, (*before, TaskState.COMPLETE), mine.container_id, exit_code=0)
    return Report(
        t.id,
        (*before, TaskState.FAILED),
        mine.container_id,
        exit_code=code,
        error=f"task: non-zero exit ({code})",
    )


def parse_assigned(doc: Mapping[str, Any]) -> tuple[list[AssignedTask], list[str], int]:
    """`task.assigned`'s answer → (tasks, ids to stop, entries skipped as unreadable)."""
    tasks, bad = [], 0
    node_id = doc.get("node_id")
    for entry in doc.get("tasks") or ():
        try:
            if isinstance(entry, Mapping) and isinstance(node_id, str):
                entry = {**entry, "node_id": node_id}
            tasks.append(AssignedTask.from_doc(entry))
        except BadAssignment:
            bad += 1
    stop = []
    for entry in doc.get("stop") or ():
        if isinstance(entry, Mapping) and isinstance(entry.get("id"), str):
            stop.append(entry["id"])
        else:
            bad += 1
    return tasks, stop, bad


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc[key]
    if not isinstance(value, str):
        raise TypeError(f"{key} must be a string")
    return value


def _int(doc: Mapping[str, Any], key: str) -> int:
    value = doc[key]
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{key} must be an integer")
    return value


# ---- the shell -----------------------------------------------------------------------------


@dataclass
class TaskHooks:
    """What the runner needs of the agent (the agent's own methods, handed in)."""

    call: Callable[..., Awaitable[Any]]  # a manager operation: call(op, **args)
    local_tasks: Callable[[], dict[str, LocalTask]]
    create: Callable[[AssignedTask], Awaitable[str]]  # → container id (created, not started)
    start: Callable[[str], Awaitable[None]]
    stop: Callable[[str, float], Awaitable[None]]
    remove: Callable[[str], Awaitable[None]]
    active: Callable[[], bool]  # in a swarm: only then are there tasks to run
    # Told every new `task.assigned` answer (the DNS and load-balancer planes follow it).
    on_assigned: Callable[[Mapping[str, Any]], Awaitable[None]] | None = None
    # One health probe inside a container: probe(container id, argv, timeout).
    probe: Callable[[str, Sequence[str], float], Awaitable[ProbeResult]] | None = None


@dataclass(frozen=True)
class FailUnhealthy:
    """A task's container became unhealthy: stop it and report the task failed, as Docker."""

    task_id: str
    container_id: str


@dataclass
class TaskRunner:
    hooks: TaskHooks
    interval: float = POLL_INTERVAL
    counters: Counter[str] = field(default_factory=Counter)
    last_index: int = -1
    # The last assignment read (the published ports of mode=host tasks follow it).
    assigned: list[AssignedTask] = field(default_factory=list)
    health: TaskHealth = field(default_factory=TaskHealth)
    # Where health probes run (they outlive a step: a probe may take its whole timeout).
    _probes: trio.Nursery | None = None
    # Task id -> when its stop was first held until every node had dropped it.
    _draining: dict[str, float] = field(default_factory=dict)
    # Set (and replaced) by `poke`: a waiter takes the current one before it looks, so a poke
    # between its look and its wait is not lost.
    _poked: trio.Event = field(default_factory=trio.Event)

    def poke(self) -> None:
        """Something the runner follows may have changed: this host's containers (the agent
        calls it on every change of its records, a process's end included) or its swarm
        membership (init, join). Cheap: waiters re-read what they wait on."""
        self.counters["pokes"] += 1
        self._poked.set()
        self._poked = trio.Event()

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as probes:
            self._probes = probes
            task_status.started()
            while True:
                poked = self._poked
                held = False
                active = self.hooks.active()
                try:
                    if active:
                        await self.step()
                        # An index to hold on: the next ask waits at the managers, not here.
                        held = self.last_index >= 0
                except ApiError as e:
                    # No manager reachable (an election, a partition): the tasks here go on.
                    self.counters["assigned_failures"] += 1
                    log.debug("task.assigned failed: %s", e)
                if held:
                    await trio.sleep(LONG_POLL_GAP)
                elif active:
                    await trio.sleep(self.interval)
                else:
                    # Not in a swarm: nothing to ask until swarm init/join pokes.
                    self.counters["idle_waits"] += 1
                    with trio.move_on_after(IDLE_RECHECK):
                        await poked.wait()

    def _gate_health(
        self, doc: Mapping[str, Any], local: Mapping[str, LocalTask], actions: list[Action]
    ) -> list[Action | FailUnhealthy]:
        """Health checks and draining on the plan: no `running` report for a task that is not
        healthy yet, unhealthy tasks failed, due probes started, and no stop of a task some
        node still balances to (bounded by DRAIN_WAIT_MAX)."""
        now = time.time()
        entries = [e for e in doc.get("tasks") or () if isinstance(e, Mapping)]
        self.health.follow(entries, [tid for tid, m in local.items() if m.running], now)
        gated: list[Action | FailUnhealthy] = []
        undrained = {str(e.get("id")) for e in entries if e.get("drained") is False}
        self._draining = {t: at for t, at in self._draining.items() if t in undrained}
        for action in actions:
            if isinstance(action, Stop) and action.task_id in undrained:
                since = self._draining.setdefault(action.task_id, now)
                if now - since < DRAIN_WAIT_MAX:
                    # Nodes still send it traffic: stopping now would fail their requests.
                    self.counters["stops_held_for_drain"] += 1
                    continue
            if isinstance(action, Report) and self.health.holds(action.task_id):
                states = tuple(s for s in action.states if s is not TaskState.RUNNING)
                if not states:
                    continue
                action = dataclasses.replace(action, states=states)
            gated.append(action)
        for tid in self.health.unhealthy():
            if tid in local:
                gated.append(FailUnhealthy(tid, local[tid].container_id))
        if self._probes is not None and self.hooks.probe is not None:
            for tid in self.health.due(now):
                if tid in local:
                    self.health.probing.add(tid)
                    self._probes.start_soon(self._probe, tid, local[tid].container_id)
        return gated

    def health_of(self, c: Container) -> Health | None:
        """The health of a task container with a check (None: not a task's, or no check)."""
        task_id = task_id_of(c)
        return None if task_id is None else self.health.states.get(task_id)

    async def _probe(self, task_id: str, container_id: str) -> None:
        try:
            check = self.health.checks.get(task_id)
            if check is None or self.hooks.probe is None:
                return
            result = await self.hooks.probe(container_id, probe_argv(check), check.timeout)
            self.counters["health_probes"] += 1
            if result.exit_code != 0:
                self.counters["health_probe_failures"] += 1
            self.health.record(task_id, result)
        except ApiError as e:
            self.counters["health_probe_errors"] += 1
            log.debug("health probe of %s failed to run: %s", task_id, e)
        finally:
            self.health.probing.discard(task_id)

    async def step(self) -> None:
        doc = await self._assigned()
        self.counters["assigned_polls"] += 1
        index = doc.get("index")
        if isinstance(index, int) and index != self.last_index:
            self.last_index = index
            # One line per new assignment: a convergence's timeline (benchmarks/services.py).
            log.info("assignment", extra={"fields": {"index": index}})
            if self.hooks.on_assigned is not None:
                await self.hooks.on_assigned(doc)
        tasks, stop, bad = parse_assigned(doc)
        self.counters["bad_assignments"] += bad
        self.assigned = tasks
        local = self.hooks.local_tasks()
        actions = self._gate_health(doc, local, plan(tasks, stop, local, time.time()))
        if not actions:
            return
        async with trio.open_nursery() as nursery:
            for action in actions:
                nursery.start_soon(self._carry_out, action)

    async def _assigned(self) -> Mapping[str, Any]:
        """`task.assigned`, long-polled with the index of the last answer (the managers hold
        it until the assignment moves). A change of this host's task containers meanwhile (a
        task's process ended) ends the wait: the plan must see it at once."""
        if self.last_index < 0:
            doc: Mapping[str, Any] = await self.hooks.call("task.assigned")
            return doc
        before = self.hooks.local_tasks()
        answer: list[Mapping[str, Any]] = []
        refused: list[ApiError] = []
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                # A refusal (or no manager) must reach the caller as the plain ApiError it
                # handles, not wrapped in this nursery's exception group.
                try:
                    answer.append(await self.hooks.call("task.assigned", index=self.last_index))
                except ApiError as e:
                    refused.append(e)
                nursery.cancel_scope.cancel()

            async def watch() -> None:
                while True:
                    poked = self._poked
                    if self.hooks.local_tasks() != before:
                        break
                    with trio.move_on_after(LOCAL_RECHECK):
                        await poked.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(ask)
            nursery.start_soon(watch)
        if refused:
            raise refused[0]
        if answer:
            return answer[0]
        self.counters["assigned_woken"] += 1
        doc = await self.hooks.call("task.assigned")
        return doc

    async def _carry_out(self, action: Action | FailUnhealthy) -> None:
        try:
            if isinstance(action, Run):
                await self._run(action.task)
            elif isinstance(action, Start):
                await self.hooks.start(action.container_id)
                if not self.health.holds(action.task_id):
                    await self._report(
                        Report(action.task_id, (TaskState.RUNNING,), action.container_id)
                    )
            elif isinstance(action, FailUnhealthy):
                self.counters["tasks_unhealthy"] += 1
                await self.hooks.stop(action.container_id, STOP_GRACE)
                report = Report(action.task_id, (TaskState.FAILED,), action.container_id, 1)
                await self._report(dataclasses.replace(report, error=UNHEALTHY_ERROR))
            elif isinstance(action, Report):
                await self._report(action)
            elif isinstance(action, Stop):
                await self.hooks.stop(action.container_id, STOP_GRACE)
                await self._report(Report(action.task_id, (TaskState.SHUTDOWN,)))
            else:
                await self.hooks.remove(action.container_id)
                self.counters["containers_removed"] += 1
        except ApiError as e:
            # Tried again on the next poll: the plan is recomputed from what is true then.
            self.counters["action_failures"] += 1
            log.warning("task action failed: %s: %s", type(action).__name__, e)

    async def _run(self, task: AssignedTask) -> None:
        log.info("task accepted", extra={"fields": {"task": task.container_name}})
        created: list[str] = []
        unheard: list[ApiError] = []
        refused: list[ApiError] = []

        async def accepted() -> None:
            try:
                await self._report(Report(task.id, (TaskState.ACCEPTED, TaskState.PREPARING)))
            except ApiError as e:
                unheard.append(e)

        async def create() -> None:
            try:
                created.append(await self.hooks.create(task))
            except ApiError as e:
                refused.append(e)

        # The managers hear `accepted` and `preparing` (a commit each) while the container is
        # made, not before: the create no longer waits for two round trips. Every later
        # state follows both, so the managers see the states in Docker's order.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(accepted)
            nursery.start_soon(create)
        if refused:
            self.counters["tasks_rejected"] += 1
            await self._report(Report(task.id, (TaskState.REJECTED,), error=str(refused[0])))
            return
        if unheard:
            # The managers did not hear it: a container made stays, the next plan starts it.
            raise unheard[0]
        cid = created[0]
        log.info("task created", extra={"fields": {"task": task.container_name}})
        await self._report(Report(task.id, (TaskState.STARTING,), cid))
        try:
            await self.hooks.start(cid)
        except ApiError as e:
            self.counters["tasks_failed_to_start"] += 1
            await self.hooks.remove(cid)
            await self._report(Report(task.id, (TaskState.FAILED,), cid, error=str(e)))
            return
        self.counters["tasks_started"] += 1
        log.info("task started", extra={"fields": {"task": task.container_name}})
        if self.health.holds(task.id):
            return  # reported running once healthy (TaskHealth)
        await self._report(Report(task.id, (TaskState.RUNNING,), cid))
        log.info("task running", extra={"fields": {"task": task.container_name}})

    async def _report(self, report: Report) -> None:
        for state in report.states:
            args: dict[str, Any] = {"task_id": report.task_id, "state": state.value}
            if report.container_id is not None:
                args["container_id"] = report.container_id
            if state.final:
                if report.exit_code is not None:
                    args["exit_code"] = report.exit_code
                if report.error is not None:
                    args["error"] = report.error
            res = await self.hooks.call("task.report", **args)
            if not res.get("accepted", False):
                self.counters["reports_refused"] += 1


@dataclass
class _Flight:
    done: trio.Event = field(default_factory=trio.Event)
    result: Any = None
    error: BaseException | None = None
    finished: bool = False


class SharedCall:
    """Callers that arrive while a call is under way share its answer (or its ApiError); one
    that arrives after it ended makes a new call. The tasks of one assignment are created
    together and each needs the networks' documents (data keys): one `state.snapshot` of the
    whole cluster instead of one per task."""

    def __init__(self, fn: Callable[[], Awaitable[Any]]) -> None:
        self.fn = fn
        self.calls = 0
        self._flight: _Flight | None = None

    async def __call__(self) -> Any:
        while True:
            flight = self._flight
            if flight is None:
                flight = self._flight = _Flight()
                self.calls += 1
                try:
                    flight.result = await self.fn()
                    flight.finished = True
                except ApiError as e:
                    flight.error, flight.finished = e, True
                finally:
                    self._flight = None
                    flight.done.set()
            else:
                await flight.done.wait()
            if flight.error is not None:
                raise flight.error
            if flight.finished:
                return flight.result
            # The caller that made the call was cancelled: make it again.


# Docker's local bridge for swarm containers' way to their host (DESIGN.md: docker_gwbridge).
GWBRIDGE = "docker_gwbridge"


async def ensure_gwbridge(agent: Agent) -> Network:
    """This host's docker_gwbridge, created the first time a swarm sandbox needs it."""
    net = agent.runtime.local_network(GWBRIDGE)
    if net is None:
        with contextlib.suppress(Conflict):  # made meanwhile by another task's start
            await agent.network_create(rq.NetworkCreate(name=GWBRIDGE, driver="bridge"))
        net = agent.runtime.network(GWBRIDGE)
    return net


def agent_hooks(agent: Agent) -> TaskHooks:
    """The runner's hooks on the agent: containers made and removed through its state lock
    and per-container locks, like any request's. A task's addresses are the managers' to free
    (the orchestrator releases them with the task), so removal never calls `ip.release`."""
    rt = agent.runtime
    snapshot = SharedCall(agent.swarm.snapshot)

    async def create(task: AssignedTask) -> str:
        now = time.time()
        nets = [(task_network(n, now), Allocation(new_id(), n.ip, n.mac)) for n in task.networks]
        if nets:
            # An encrypted network's keys reach the VTEP (and its lower MTU the record) before
            # the task attaches, as for `run`: a task never sends plain on it (issue 18).
            docs = {d["id"]: d for d in (await snapshot())["networks"]}
            nets = [
                (agent._with_data_keys(net, docs[net.id]) if net.id in docs else net, alloc)
                for net, alloc in nets
            ]
            await agent._ensure_vtep()  # safe to call concurrently: it starts the VTEP once
        req = rq.ContainerCreate(
            image=task.image,
            cmd=task.command,
            name=task.container_name,
            network=nets[0][0].id if nets else "bridge",
            env=task.env,
            labels=task_labels(task),
        )
        c = await agent._state(partial(rt.task_create, req, nets))
        if task.host_ports:
            # A mode=host port is DNATed from this host to the task: it needs an address the
            # host reaches, on the local bridge Docker gives swarm containers for that.
            try:
                gw = await ensure_gwbridge(agent)
                await agent._state(partial(rt.network_connect, gw.id, c.id))
            except BaseException:
                await remove(c.id)
                raise
        return c.id

    async def start(cid: str) -> None:
        await agent.container_start(rq.ContainerStart(cid))
        # Its set-up (mounts, pivot into the image root) runs on while the state lock is free
        # for this host's other containers; the task is reported running only once it is done,
        # so an `exec` into a running task lands in the image.
        c = rt.containers.get(cid)
        if c is not None:
            await trio.to_thread.run_sync(rt.wait_started, c)

    async def probe(cid: str, argv: Sequence[str], timeout: float) -> ProbeResult:
        # The same way into the container as `exec` (its namespaces through its process).
        c = rt.container(cid)
        exec_argv, env = rt.exec_spec(c, argv, (), None)
        return await run_probe(exec_argv, env, timeout)

    async def stop(cid: str, grace: float) -> None:
        await agent.container_stop(rq.ContainerStop(cid, grace))

    async def remove(cid: str) -> None:
        async with agent._container(cid):
            await agent._state(partial(rt.container_rm, cid, True))

    async def on_assigned(doc: Mapping[str, Any]) -> None:
        agent.lb.set_endpoints(doc)
        if agent.service_names.update(doc):
            async with agent.state_lock:
                await agent._sync_planes()

    return TaskHooks(
        call=agent.swarm.call,
        local_tasks=lambda: local_tasks(list(rt.containers.values())),
        create=create,
        start=start,
        stop=stop,
        remove=remove,
        active=lambda: agent.swarm.in_swarm,
        on_assigned=on_assigned,
        probe=probe,
    )
