"""Deterministic discrete-event simulator: many GossipNodes on an in-memory network with loss,
delay, duplication, crashes and partitions, on a virtual clock. Used by tests and benchmarks."""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from overlaynet.gossip.config import ENVELOPE_OVERHEAD, GOSSIP_PORT, SwimConfig
from overlaynet.gossip.node import GossipEvent, GossipNode, PushPullRequest
from overlaynet.wire.gossip import Address, MalformedGossip

# A TCP exchange carries a 4-byte length in front of each direction's envelope (service.py).
STREAM_OVERHEAD = 4 + ENVELOPE_OVERHEAD

Observer = Callable[[str, GossipEvent, float], None]


@dataclass
class LinkModel:
    """What the simulated underlay does to each datagram."""

    loss: float = 0.0
    delay: float = 0.0005  # one-way, a LAN hop
    jitter: float = 0.0005
    duplicate: float = 0.0


@dataclass
class SimNode:
    node: GossipNode
    crashed: bool = False
    scheduled: float = float("inf")
    bytes_sent: int = 0
    bytes_received: int = 0
    datagrams_sent: int = 0
    events: list[tuple[float, GossipEvent]] = field(default_factory=list)


class Simulator:
    """A virtual-time network of gossip nodes. Everything is seeded: same inputs, same run."""

    def __init__(
        self,
        config: SwimConfig,
        seed: int = 0,
        link: LinkModel | None = None,
        keep_events: bool = False,
    ) -> None:
        self.config = config
        self.seed = seed
        self.link = link or LinkModel()
        self.keep_events = keep_events
        self.rng = random.Random(f"net-{seed}")
        self.now = 0.0
        self.nodes: dict[str, SimNode] = {}
        self.by_addr: dict[Address, str] = {}
        self.groups: dict[str, int] = {}
        self.observers: list[Observer] = []
        self.dropped_malformed = 0
        self._heap: list[tuple[float, int, str, object]] = []
        self._order = 0

    # ---- building ----------------------------------------------------------------------

    def add_node(self, name: str) -> GossipNode:
        index = len(self.nodes) + 1
        addr = (f"10.{index >> 16 & 255}.{index >> 8 & 255}.{index & 255}", GOSSIP_PORT)
        rng = random.Random(f"node-{self.seed}-{name}")
        node = GossipNode(name, addr, self.config, rng, self.now)
        self.nodes[name] = SimNode(node)
        self.by_addr[addr] = name
        self._service(name)
        return node

    def node(self, name: str) -> GossipNode:
        return self.nodes[name].node

    def live_names(self) -> list[str]:
        return [n for n, s in self.nodes.items() if not s.crashed]

    def join(self, name: str, seeds: list[str]) -> None:
        self.node(name).start_join([self.node(s).addr for s in seeds])
        self._service(name)

    def bootstrap_converged(self, networks: tuple[str, ...] = ()) -> None:
        """Start from a cluster where everyone already knows everyone and every node is in
        `networks` (large-N benchmarks)."""
        records = [r for s in self.nodes.values() for r in s.node.membership.records()]
        events = [
            s.node.tables.join_network(network) for s in self.nodes.values() for network in networks
        ]
        for name, sim_node in self.nodes.items():
            sim_node.node.bootstrap(records, events, self.now)
            sim_node.node.drain_events()
            self._service(name)

    # ---- faults ------------------------------------------------------------------------

    def crash(self, name: str) -> None:
        """Stop a node dead: no more timers, no answers (kill -9)."""
        self.nodes[name].crashed = True

    def partition(self, *groups: set[str]) -> None:
        """Only nodes in the same group can talk; nodes in no group form one more group."""
        self.groups = {n: i for i, g in enumerate(groups) for n in g}

    def heal(self) -> None:
        self.groups = {}

    def connected(self, a: str, b: str) -> bool:
        return self.groups.get(a, -1) == self.groups.get(b, -1)

    # ---- commands on a node ------------------------------------------------------------

    def act(self, name: str, command: Callable[[GossipNode, float], None]) -> None:
        """Run a local command (set_entry, join_network, leave ...) on a node, now."""
        command(self.node(name), self.now)
        self._service(name)

    # ---- running -----------------------------------------------------------------------

    def run_until(self, until: float, stop: Callable[[], bool] | None = None) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            at, _, kind, payload = heapq.heappop(heap)
            self.now = at
            if kind == "timer":
                self._fire_timer(payload, at)  # type: ignore[arg-type]
            elif kind == "datagram":
                self._deliver(payload, at)  # type: ignore[arg-type]
            else:
                self._push_pull(payload)  # type: ignore[arg-type]
            if stop is not None and stop():
                return
        self.now = max(self.now, until)

    def run_for(self, seconds: float, stop: Callable[[], bool] | None = None) -> None:
        self.run_until(self.now + seconds, stop)

    # ---- internals ---------------------------------------------------------------------

    def _push(self, at: float, kind: str, payload: object) -> None:
        self._order += 1
        heapq.heappush(self._heap, (at, self._order, kind, payload))

    def _fire_timer(self, name: str, at: float) -> None:
        sim_node = self.nodes[name]
        if sim_node.crashed or sim_node.scheduled != at:
            return  # superseded by an earlier deadline
        sim_node.scheduled = float("inf")
        sim_node.node.handle_timer(at)
        self._service(name)

    def _deliver(self, item: tuple[str, Address, bytes], at: float) -> None:
        source, addr, data = item
        target = self.by_addr.get(addr)
        if target is None:
            return
        sim_node = self.nodes[target]
        if sim_node.crashed or not self.connected(source, target):
            return
        sim_node.bytes_received += len(data) + ENVELOPE_OVERHEAD
        try:
            sim_node.node.receive_datagram(data, self.nodes[source].node.addr, at)
        except MalformedGossip:
            self.dropped_malformed += 1
        self._service(target)

    def _push_pull(self, item: tuple[str, PushPullRequest]) -> None:
        source, request = item
        target = self.by_addr.get(request.addr)
        if target is None or self.nodes[source].crashed:
            return
        if self.nodes[target].crashed or not self.connected(source, target):
            return  # the TCP connect times out
        a, b = self.nodes[source], self.nodes[target]
        ours = a.node.push_pull_payload(request.join)
        theirs = b.node.push_pull_payload(False)
        b.node.merge_push_pull(ours, self.now)
        a.node.merge_push_pull(theirs, self.now)
        for sim_node, sent, got in ((a, ours, theirs), (b, theirs, ours)):
            sim_node.bytes_sent += len(sent) + STREAM_OVERHEAD
            sim_node.bytes_received += len(got) + STREAM_OVERHEAD
        self._service(source)
        self._service(target)

    def _service(self, name: str) -> None:
        """Collect what a node produced and schedule its next timer."""
        sim_node = self.nodes[name]
        node = sim_node.node
        link = self.link
        for addr, data in node.drain_datagrams():
            sim_node.bytes_sent += len(data) + ENVELOPE_OVERHEAD
            sim_node.datagrams_sent += 1
            copies = 2 if link.duplicate and self.rng.random() < link.duplicate else 1
            for _ in range(copies):
                if link.loss and self.rng.random() < link.loss:
                    continue
                delay = link.delay + link.jitter * self.rng.random()
                self._push(self.now + delay, "datagram", (name, addr, data))
        for request in node.drain_push_pulls():
            rtt = 2 * (link.delay + link.jitter * self.rng.random())
            self._push(self.now + rtt, "push_pull", (name, request))
        events = node.drain_events()
        if events:
            if self.keep_events:
                sim_node.events.extend((self.now, e) for e in events)
            for observer in self.observers:
                for event in events:
                    observer(name, event, self.now)
        if sim_node.crashed:
            return
        deadline = node.next_deadline()
        if deadline < sim_node.scheduled:
            sim_node.scheduled = max(deadline, self.now)
            self._push(sim_node.scheduled, "timer", name)
