"""Random histories of services on the cluster state: create, scale, rm, nodes going Down and
coming back, drains, removals, worker reports (good, stale and forged), with the leader's pass
after each. Invariants at every step: a refusal changes nothing, no IP or MAC twice in a network,
every managed address belongs to a task that has not ended or to a VIP of a service that is still
there or still has a task running; once everything is up again, replicas converge; the recorded
changes replay into the same state; a pass right after a pass changes nothing."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.cluster.invariants import allocated_uses, duplicate_addresses
from overlaynet.cluster.services import (
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    parse_publish,
)
from overlaynet.cluster.state import (
    LB_PREFIX,
    MANAGED,
    VIP_PREFIX,
    ClusterError,
    ClusterState,
    Role,
)
from overlaynet.cluster.tasks import TaskState

from .helpers import converge, seeded_rand, snapshot, work

HOSTS = ["node1", "node2", "node3"]
SPECS = {
    "web": ServiceSpec(
        name="web",
        image="nginx",
        replicas=2,
        networks=("atsea",),
        ports=(parse_publish("8080:80"),),
        restart=RestartPolicy(delay=1),
    ),
    "db": ServiceSpec(
        name="db",
        image="db",
        networks=("atsea",),
        endpoint_mode="dnsrr",  # type: ignore[arg-type]
        ports=(parse_publish("mode=host,target=1433"),),
        restart=RestartPolicy(delay=0),
    ),
    "mon": ServiceSpec(name="mon", image="x", mode=ServiceMode.GLOBAL, networks=("atsea",)),
}

COMMANDS = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(sorted(SPECS))),
    st.tuples(st.just("scale"), st.sampled_from(sorted(SPECS)), st.integers(0, 4)),
    st.tuples(st.just("rm"), st.sampled_from(sorted(SPECS))),
    st.tuples(st.just("status"), st.sampled_from(HOSTS[1:]), st.sampled_from(["Ready", "Down"])),
    st.tuples(st.just("avail"), st.sampled_from(HOSTS), st.sampled_from(["active", "drain"])),
    st.tuples(st.just("noderm"), st.sampled_from(HOSTS[1:])),
    st.tuples(st.just("work")),
    st.tuples(st.just("work")),
    st.tuples(
        st.just("report"),
        st.integers(0, 50),
        st.sampled_from(["failed", "running", "starting", "complete", "shutdown", "rejected"]),
        st.booleans(),
    ),
)


class History:
    def __init__(self) -> None:
        self.rand = seeded_rand(11)
        self.state = ClusterState()
        self.state.init(hostname="node1", addr="10.99.0.1", now=0.0, rand=self.rand)
        for i, host in enumerate(HOSTS[1:], start=2):
            self.state.join_node(
                hostname=host, addr=f"10.99.0.{i}", role=Role.WORKER, now=0.0, rand=self.rand
            )
        # A small subnet, so that freed addresses are soon handed out again.
        self.state.create_network("atsea", now=0.0, rand=self.rand, subnet="10.0.9.0/26")
        self.status = {n.id: "Ready" for n in self.state.nodes.values()}
        self.now = 1.0

    def node(self, host: str) -> str:
        return self.state.find_node(host).id

    def run(self, cmd: tuple[Any, ...]) -> None:
        s, op = self.state, cmd[0]
        if op == "create":
            s.create_service(SPECS[cmd[1]], now=self.now, rand=self.rand)
        elif op == "scale":
            s.update_service(cmd[1], now=self.now, replicas=cmd[2])
        elif op == "rm":
            s.remove_service(cmd[1], now=self.now)
        elif op == "status":
            self.status[self.node(cmd[1])] = cmd[2]
        elif op == "avail":
            s.update_node(cmd[1], now=self.now, availability=cmd[2])
        elif op == "noderm":
            node = s.find_node(cmd[1])
            s.remove_node(node.id, alive=self.status.get(node.id) != "Down")
            self.status.pop(node.id, None)
        elif op == "work":
            work(s, self.status, self.now)
        elif op == "report":
            tasks = sorted(s.tasks.values(), key=lambda t: t.id)
            if tasks:
                task = tasks[cmd[1] % len(tasks)]
                # A forged report comes from a node the task is not on.
                sender = task.node_id or "nobody"
                if cmd[3]:
                    sender = next((n for n in s.nodes if n != task.node_id), "nobody")
                s.report_task(sender, task.id, cmd[2], now=self.now)


def check(state: ClusterState) -> None:
    assert duplicate_addresses(allocated_uses(state)) == []
    running_services = {t.service_id for t in state.tasks.values() if not t.state.final}
    for (_, endpoint_id), alloc in state.allocations.items():
        assert alloc.node_id == MANAGED
        if endpoint_id.startswith(VIP_PREFIX):
            service_id = endpoint_id[len(VIP_PREFIX) :]
            assert service_id in state.services or service_id in running_services
        elif endpoint_id.startswith(LB_PREFIX):
            assert endpoint_id[len(LB_PREFIX) :] in state.nodes
        else:
            task = state.tasks[endpoint_id]
            assert not task.state.final, "an ended task still holds an address"
    for task in state.tasks.values():
        service = state.services.get(task.service_id)
        if service is None or task.state.final or task.state is TaskState.NEW:
            continue
        for network in state.service_networks(service):
            assert (network.id, task.id) in state.allocations, "a placed task has no address"


@settings(max_examples=int(os.environ.get("SVC_EXAMPLES", "300")), deadline=None)
@given(st.lists(COMMANDS, max_size=60))
def test_random_service_histories_keep_the_invariants(commands: list[tuple[Any, ...]]) -> None:
    h = History()
    log = h.state.take_changes()
    for cmd in commands:
        before = snapshot(h.state)
        try:
            h.run(cmd)
        except ClusterError:
            assert snapshot(h.state) == before, f"refused {cmd} changed the state"
            assert h.state.take_changes() == []
        h.state.orchestrate(h.status, now=h.now, rand=h.rand)
        # One pass does all there is to do: a second at the same moment changes nothing.
        assert not h.state.orchestrate(h.status, now=h.now, rand=h.rand)
        h.now += 1.0
        log += h.state.take_changes()
        check(h.state)

    # Everything comes back up: every service converges to what it asks for.
    for node in list(h.state.nodes.values()):
        h.state.update_node(node.id, now=h.now, availability="active")
    h.status = {n: "Ready" for n in h.state.nodes}
    converge(h.state, h.status, h.rand, h.now)
    log += h.state.take_changes()
    check(h.state)
    nodes = len(h.state.nodes)
    for service in h.state.services.values():
        running = [
            t for t in h.state.tasks_of(service.id) if t.live and t.state is TaskState.RUNNING
        ]
        if service.spec.mode is ServiceMode.GLOBAL:
            assert sorted(t.node_id for t in running) == sorted(h.state.nodes)  # type: ignore[type-var]
        elif service.spec.host_ports:
            # One task per node at most: they all want port 1433.
            assert len(running) == min(service.spec.replicas or 0, nodes)
        else:
            assert len(running) == service.spec.replicas
    # Removed services leave nothing behind once their tasks have stopped.
    assert {t.service_id for t in h.state.tasks.values()} <= set(h.state.services)

    replayed = ClusterState()
    for change in log:
        replayed.apply(change)
    assert snapshot(replayed) == snapshot(h.state)
