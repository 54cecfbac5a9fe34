"""Placement: which node each pending task goes to, or why none can take it.

swarmkit's scheduler, pure: every node runs through the same filters in the same order (ready
and active, placement constraints, free host-mode ports); the first filter a node fails is
counted, and a task no node passes stays pending with swarmkit's own explanation (its filters'
`Explain`), e.g. "no suitable node (1 node not available for new tasks; host-mode port already
in use on 2 nodes)". Among the nodes that pass, the task goes to the one with the fewest tasks
of its service, then the fewest tasks overall (swarmkit's spread), ties broken by `rand`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from overlaynet.cluster.errors import Availability
from overlaynet.cluster.services import NodeFacts, Protocol, Service, matches_all
from overlaynet.cluster.tasks import Task, TaskState
from overlaynet.cluster.tokens import RandomBytes

# Bytes of randomness per tie-break: ties among 2^64 are not a concern.
_TIE_BYTES = 8


@dataclass(frozen=True)
class NodeView:
    """A node as the scheduler sees it: what constraints match, its availability (node
    update), and whether it is up (gossip says alive).

    `unknown`: gossip has no word on it yet (it just joined, or this manager just started and
    has not heard from it). Such a node gets no new tasks, but keeps the ones it has: swarmkit
    gives nodes a grace period after a leader starts for the same reason, or every task would
    move the moment a manager restarted."""

    facts: NodeFacts
    availability: Availability
    ready: bool
    unknown: bool = False

    @property
    def id(self) -> str:
        return self.facts.id

    @property
    def takes_new_tasks(self) -> bool:
        return self.ready and self.availability is Availability.ACTIVE


@dataclass(frozen=True)
class Assign:
    """Place a pending task on a node (its state becomes assigned)."""

    task_id: str
    node_id: str


@dataclass(frozen=True)
class StayPending:
    """No node can take the task now; `reason` is what `service ps` shows in ERROR."""

    task_id: str
    reason: str


Placement = Assign | StayPending


def _explain(count: int, what: str) -> str:
    return f"1 node {what}" if count == 1 else f"{count} nodes {what}"


def _explain_after(count: int, what: str) -> str:
    return f"{what} on 1 node" if count == 1 else f"{what} on {count} nodes"


def explain(not_ready: int, constraints: int, ports: int) -> str:
    """swarmkit's wording (scheduler/filter.go Explain, pipeline.go): one clause per filter
    that turned nodes away, in filter order."""
    parts = []
    if not_ready:
        parts.append(_explain(not_ready, "not available for new tasks"))
    if constraints:
        parts.append(_explain_after(constraints, "scheduling constraints not satisfied"))
    if ports:
        parts.append(_explain_after(ports, "host-mode port already in use"))
    if not parts:
        return "no suitable node (no nodes in the swarm)"
    return f"no suitable node ({'; '.join(parts)})"


def schedule(
    services: Mapping[str, Service],
    tasks: Iterable[Task],
    nodes: Iterable[NodeView],
    *,
    rand: RandomBytes,
) -> list[Placement]:
    """One scheduling pass over every pending task (slot order, then id), placing each in
    turn so the next one sees it. StayPending is returned only when the reason changed, so a
    second pass over an unchanged cluster returns nothing."""
    node_list = sorted(nodes, key=lambda n: n.id)
    all_tasks = list(tasks)
    per_node: Counter[str] = Counter()
    per_service: Counter[tuple[str, str]] = Counter()
    ports_used: dict[str, set[tuple[int, Protocol]]] = {n.id: set() for n in node_list}
    for t in all_tasks:
        if t.node_id is None:
            continue
        if t.live:
            per_node[t.node_id] += 1
            per_service[(t.service_id, t.node_id)] += 1
        service = services.get(t.service_id)
        if t.holds_node and service is not None:
            ports_used.setdefault(t.node_id, set()).update(service.spec.host_ports)
    pending = [
        t
        for t in all_tasks
        if t.state is TaskState.PENDING
        and t.desired is TaskState.RUNNING
        and t.service_id in services
    ]
    pending.sort(key=lambda t: (t.service_id, t.slot or 0, t.node_id or "", t.id))
    out: list[Placement] = []
    for task in pending:
        service = services[task.service_id]
        wanted_ports = service.spec.host_ports
        not_ready = constraints = ports = 0
        fits: list[NodeView] = []
        for node in node_list:
            if task.node_id is not None and node.id != task.node_id:
                continue  # a global task belongs to its node
            if not node.takes_new_tasks:
                not_ready += 1
            elif not matches_all(service.spec.constraints, node.facts):
                constraints += 1
            elif wanted_ports & ports_used[node.id]:
                ports += 1
            else:
                fits.append(node)
        if not fits:
            reason = explain(not_ready, constraints, ports)
            if reason != task.message:
                out.append(StayPending(task.id, reason))
            continue
        best = min(
            fits,
            key=lambda n: (
                per_service[(task.service_id, n.id)],
                per_node[n.id],
                rand(_TIE_BYTES),
            ),
        )
        out.append(Assign(task.id, best.id))
        per_node[best.id] += 1
        per_service[(task.service_id, best.id)] += 1
        ports_used[best.id] |= wanted_ports
    return out
