"""Services in the cluster state: create/scale/rm, node labels, worker reports and the leader's
orchestration pass (tasks, their addresses, placement, release). Every refusal changes nothing."""

from __future__ import annotations

import dataclasses
from ipaddress import IPv4Address

import pytest

from overlaynet.cluster import ipam
from overlaynet.cluster.invariants import allocated_uses, duplicate_addresses
from overlaynet.cluster.services import (
    ServiceMode,
    ServiceSpec,
    parse_constraint,
    parse_publish,
)
from overlaynet.cluster.state import (
    MANAGED,
    ClusterState,
    ErrorKind,
    Role,
    lb_endpoint_id,
    vip_endpoint_id,
)
from overlaynet.cluster.tasks import TaskState, TaskStateError
from overlaynet.cluster.tokens import RandomBytes

from .helpers import converge, refused, seeded_rand, snapshot

NOW = 1_700_000_000.0


@pytest.fixture
def rand() -> RandomBytes:
    return seeded_rand(3)


@pytest.fixture
def state(rand: RandomBytes) -> ClusterState:
    s = ClusterState()
    s.init(hostname="node1", addr="192.168.0.11", now=NOW, rand=rand)
    for i in (2, 3):
        s.join_node(
            hostname=f"node{i}", addr=f"192.168.0.1{i}", role=Role.WORKER, now=NOW, rand=rand
        )
    s.create_network("atsea", now=NOW, rand=rand)
    s.take_changes()
    return s


def ready(state: ClusterState, **overrides: str) -> dict[str, str]:
    """Gossip's word on every node: Ready unless overridden by hostname."""
    return {n.id: overrides.get(n.hostname, "Ready") for n in state.nodes.values()}


def node_id(state: ClusterState, hostname: str) -> str:
    return state.find_node(hostname).id


def web(**kw: object) -> ServiceSpec:
    fields: dict[str, object] = {"name": "web", "image": "nginx", "networks": ("atsea",)}
    fields.update(kw)
    return ServiceSpec(**fields)  # type: ignore[arg-type]


def live(state: ClusterState, service_id: str) -> list[tuple[int | None, str, TaskState]]:
    return sorted(
        (t.slot, state.nodes[t.node_id].hostname if t.node_id else "", t.state)
        for t in state.tasks_of(service_id)
        if t.live
    )


# ----- create -----


def test_create_resolves_networks_to_ids_assigns_ports_and_a_vip_per_network(
    state: ClusterState, rand: RandomBytes
) -> None:
    service = state.create_service(
        web(ports=(parse_publish("8080:80"), parse_publish("53/udp"))), now=NOW, rand=rand
    )
    atsea, ingress = state.find_network("atsea"), state.find_network("ingress")
    assert service.spec.networks == (atsea.id,)
    assert [(p.published, p.target) for p in service.spec.ports] == [(8080, 80), (30000, 53)]
    assert [n.name for n in state.service_networks(service)] == ["ingress", "atsea"]
    vips = state.vips_of(service)
    assert [(v.network_id, v.ip, v.node_id) for v in vips] == [
        (ingress.id, "10.255.0.2", MANAGED),
        (atsea.id, "10.0.0.2", MANAGED),
    ]
    assert all(v.endpoint_id == vip_endpoint_id(service.id) for v in vips)
    # Nobody's address: a worker can neither release it nor take it with it when it leaves.
    refused(
        state,
        ErrorKind.FORBIDDEN,
        "a node may release only its own",
        state.release_address,
        "atsea",
        vip_endpoint_id(service.id),
        node_id(state, "node2"),
    )


def test_a_dnsrr_service_gets_no_vip_and_host_ports_do_not_join_ingress(
    state: ClusterState, rand: RandomBytes
) -> None:
    db = state.create_service(
        ServiceSpec(
            name="database",
            image="db",
            networks=("atsea",),
            endpoint_mode="dnsrr",  # type: ignore[arg-type]
            ports=(parse_publish("mode=host,target=1433"),),
        ),
        now=NOW,
        rand=rand,
    )
    assert state.vips_of(db) == []
    assert [n.name for n in state.service_networks(db)] == ["atsea"]
    assert db.spec.ports[0].published == 1433


def test_create_refusals_change_nothing(state: ClusterState, rand: RandomBytes) -> None:
    state.create_service(web(ports=(parse_publish("8080:80"),)), now=NOW, rand=rand)
    state.create_service(
        ServiceSpec(name="db", image="db", ports=(parse_publish("mode=host,target=1433"),)),
        now=NOW,
        rand=rand,
    )
    atsea = state.find_network("atsea")
    cases: list[tuple[ErrorKind, str, ServiceSpec]] = [
        (ErrorKind.CONFLICT, "service web already exists", web()),
        (ErrorKind.NOT_FOUND, "network nope not found", web(name="a", networks=("nope",))),
        (
            ErrorKind.INVALID,
            "ingress network ingress explicitly",
            web(name="a", networks=("ingress",)),
        ),
        (ErrorKind.INVALID, "atsea is given twice", web(name="a", networks=("atsea", atsea.id))),
        (
            ErrorKind.CONFLICT,
            "port 8080/tcp is already in use",
            web(name="a", ports=(parse_publish("8080:81"),)),
        ),
        (
            ErrorKind.CONFLICT,
            "port 8080/tcp is already in use",
            web(name="a", ports=(parse_publish("mode=host,published=8080,target=80"),)),
        ),
        (
            ErrorKind.CONFLICT,
            "port 1433/tcp is already in use",
            web(name="a", ports=(parse_publish("1433:1433"),)),
        ),
    ]
    for kind, match, spec in cases:
        refused(state, kind, match, state.create_service, spec, now=NOW, rand=rand)


def test_two_host_mode_services_may_share_a_port(state: ClusterState, rand: RandomBytes) -> None:
    for name in ("a", "b"):
        state.create_service(
            ServiceSpec(name=name, image="x", ports=(parse_publish("mode=host,target=1433"),)),
            now=NOW,
            rand=rand,
        )
    assert len(state.services) == 2


def test_a_network_without_a_free_address_refuses_the_vip(
    state: ClusterState, rand: RandomBytes
) -> None:
    # A /30 has two usable addresses: the gateway and one more.
    state.create_network("tiny", now=NOW, rand=rand, subnet="10.0.9.0/30")
    state.create_service(web(name="one", networks=("tiny",)), now=NOW, rand=rand)
    refused(
        state,
        ErrorKind.CONFLICT,
        "network tiny: no addresses left",
        state.create_service,
        web(name="two", networks=("tiny",)),
        now=NOW,
        rand=rand,
    )


# ----- the orchestration pass -----


def test_a_pass_makes_tasks_with_an_address_per_network_and_places_them(
    state: ClusterState, rand: RandomBytes
) -> None:
    service = state.create_service(
        web(replicas=3, ports=(parse_publish("8080:80"),)), now=NOW, rand=rand
    )
    assert state.orchestrate(ready(state), now=NOW + 1, rand=rand)
    tasks = state.tasks_of(service.id)
    assert sorted(t.slot for t in tasks) == [1, 2, 3]  # type: ignore[type-var]
    assert {t.state for t in tasks} == {TaskState.ASSIGNED}
    # Spread: one replica per node.
    assert sorted(state.nodes[t.node_id].hostname for t in tasks if t.node_id) == [
        "node1",
        "node2",
        "node3",
    ]
    for task in tasks:
        for network in state.service_networks(service):
            alloc = state.allocations[(network.id, task.id)]
            assert alloc.node_id == MANAGED
            assert ipam.mac_for(IPv4Address(alloc.ip)) == "02:42:" + ":".join(
                f"{int(o):02x}" for o in alloc.ip.split(".")
            )
    assert duplicate_addresses(allocated_uses(state)) == []
    # Nothing left to do: a second pass changes nothing.
    state.take_changes()
    assert not state.orchestrate(ready(state), now=NOW + 2, rand=rand)
    assert state.take_changes() == []


def test_the_pass_is_deterministic_given_now_and_rand(rand: RandomBytes) -> None:
    def build(seed: int) -> ClusterState:
        r = seeded_rand(seed)
        s = ClusterState()
        s.init(hostname="node1", addr="192.168.0.11", now=NOW, rand=r)
        s.join_node(hostname="node2", addr="192.168.0.12", role=Role.WORKER, now=NOW, rand=r)
        s.create_service(ServiceSpec(name="w", image="x", replicas=5), now=NOW, rand=r)
        s.orchestrate(ready(s), now=NOW, rand=r)
        return s

    assert snapshot(build(9)) == snapshot(build(9))


def test_converged_replicas_run_and_ps_reports_them(state: ClusterState, rand: RandomBytes) -> None:
    service = state.create_service(web(replicas=2), now=NOW, rand=rand)
    converge(state, ready(state), rand, NOW)
    assert [s for _, _, s in live(state, service.id)] == [TaskState.RUNNING] * 2
    assert all(t.container_id == f"c-{t.id}" for t in state.tasks_of(service.id))


def test_scale_changes_the_spec_and_the_pass_follows(
    state: ClusterState, rand: RandomBytes
) -> None:
    service = state.create_service(web(replicas=1), now=NOW, rand=rand)
    now = converge(state, ready(state), rand, NOW)
    scaled = state.update_service("web", now=now, replicas=5)
    assert (scaled.spec.replicas, scaled.version) == (5, 2)
    now = converge(state, ready(state), rand, now)
    assert [slot for slot, _, _ in live(state, service.id)] == [1, 2, 3, 4, 5]
    state.update_service(service.id[:6], now=now, replicas=2)
    converge(state, ready(state), rand, now)
    assert [slot for slot, _, _ in live(state, service.id)] == [1, 2]
    # Scaled-down tasks have stopped, so their addresses are free again.
    managed = [a for a in state.allocations.values() if a.node_id == MANAGED]
    # The VIP, two tasks' addresses and the three nodes' load-balancer endpoints on atsea.
    assert len(managed) == 1 + 2 + 3
    assert duplicate_addresses(allocated_uses(state)) == []


def test_scale_refusals_change_nothing(state: ClusterState, rand: RandomBytes) -> None:
    state.create_service(web(), now=NOW, rand=rand)
    state.create_service(
        ServiceSpec(name="mon", image="x", mode=ServiceMode.GLOBAL), now=NOW, rand=rand
    )
    refused(state, ErrorKind.INVALID, "replicas", state.update_service, "web", now=NOW, replicas=-1)
    refused(
        state, ErrorKind.INVALID, "at most", state.update_service, "web", now=NOW, replicas=10**6
    )
    refused(
        state,
        ErrorKind.INVALID,
        "scale can only be used with replicated mode",
        state.update_service,
        "mon",
        now=NOW,
        replicas=2,
    )
    refused(
        state, ErrorKind.NOT_FOUND, "service nope not found", state.update_service, "nope", now=NOW
    )
    state.take_changes()
    assert state.update_service("web", now=NOW, replicas=1).version == 1
    assert state.take_changes() == []


def test_remove_shuts_tasks_down_and_frees_addresses_and_vips_once_they_stopped(
    state: ClusterState, rand: RandomBytes
) -> None:
    service = state.create_service(
        web(replicas=3, ports=(parse_publish("8080:80"),)), now=NOW, rand=rand
    )
    now = converge(state, ready(state), rand, NOW)
    # node3 is down: its task cannot stop, so its addresses and the VIPs stay taken.
    status = ready(state, node3="Down")
    state.remove_service("web", now=now)
    assert all(t.desired is TaskState.SHUTDOWN for t in state.tasks_of(service.id))
    now = converge(state, status, rand, now)
    (stuck,) = state.tasks_of(service.id)
    assert stuck.node_id == node_id(state, "node3") and stuck.state is TaskState.RUNNING
    assert len(state.vips_of(service)) == 2
    assert {a.endpoint_id for a in state.allocations.values()} == {
        stuck.id,
        vip_endpoint_id(service.id),
        # Nodes keep their load-balancer endpoints while a task may still be balanced to.
        *(lb_endpoint_id(n) for n in state.nodes),
    }
    refused(state, ErrorKind.CONFLICT, "have not stopped yet", state.remove_network, "atsea")
    # node3 comes back, stops its task: everything is released and the task record goes.
    converge(state, ready(state), rand, now)
    assert state.tasks == {} and state.allocations == {}
    state.remove_network("atsea")


def test_remove_of_a_never_placed_service_ends_its_tasks_at_once(
    state: ClusterState, rand: RandomBytes
) -> None:
    state.create_service(
        web(constraints=(parse_constraint("node.hostname==nowhere"),)), now=NOW, rand=rand
    )
    state.orchestrate(ready(state), now=NOW, rand=rand)
    (task,) = state.tasks.values()
    assert task.state is TaskState.PENDING
    assert task.message == "no suitable node (scheduling constraints not satisfied on 3 nodes)"
    state.remove_service("web", now=NOW)
    assert state.tasks[task.id].state is TaskState.SHUTDOWN
    state.orchestrate(ready(state), now=NOW, rand=rand)
    assert state.tasks == {} and state.allocations == {}


def test_remove_network_is_refused_while_a_service_uses_it(
    state: ClusterState, rand: RandomBytes
) -> None:
    state.create_service(web(replicas=0, endpoint_mode="dnsrr"), now=NOW, rand=rand)
    refused(
        state,
        ErrorKind.CONFLICT,
        "network atsea is in use by service web",
        state.remove_network,
        "atsea",
    )
    refused(state, ErrorKind.NOT_FOUND, "service x not found", state.remove_service, "x", now=NOW)


def test_a_down_node_s_tasks_move_and_keep_their_addresses_until_stopped(
    state: ClusterState, rand: RandomBytes
) -> None:
    service = state.create_service(web(replicas=3), now=NOW, rand=rand)
    now = converge(state, ready(state), rand, NOW)
    (old,) = [t for t in state.tasks_of(service.id) if t.node_id == node_id(state, "node2")]
    now = converge(state, ready(state, node2="Down"), rand, now)
    hosts = [h for _, h, _ in live(state, service.id)]
    assert len(hosts) == 3 and "node2" not in hosts
    # The old task may still run behind a partition: its address is not given out again.
    assert state.tasks[old.id].desired is TaskState.SHUTDOWN
    assert (state.find_network("atsea").id, old.id) in state.allocations
    assert duplicate_addresses(allocated_uses(state)) == []
    # node2 is removed for good: the task is orphaned and its address freed.
    state.remove_node("node2", alive=False)
    state.orchestrate(ready(state), now=now, rand=rand)
    assert state.tasks[old.id].state is TaskState.ORPHANED
    assert (state.find_network("atsea").id, old.id) not in state.allocations


def test_a_node_gossip_does_not_know_keeps_its_tasks_but_gets_no_new_ones(
    state: ClusterState, rand: RandomBytes
) -> None:
    service = state.create_service(web(replicas=3), now=NOW, rand=rand)
    now = converge(state, ready(state), rand, NOW)
    before = live(state, service.id)
    # A restarted leader has not heard from node3 yet: "Unknown" is not "Down".
    status = ready(state, node3="Unknown")
    assert not state.orchestrate(status, now=now, rand=rand)
    assert live(state, service.id) == before
    state.update_service("web", now=now, replicas=5)
    converge(state, status, rand, now)
    assert sorted(h for _, h, _ in live(state, service.id)) == [
        "node1",
        "node1",
        "node2",
        "node2",
        "node3",
    ]


def test_a_failed_task_is_replaced_after_the_restart_delay(
    state: ClusterState, rand: RandomBytes
) -> None:
    service = state.create_service(web(), now=NOW, rand=rand)
    now = converge(state, ready(state), rand, NOW)
    (task,) = state.tasks_of(service.id)
    assert task.node_id is not None
    state.report_task(task.node_id, task.id, "failed", now=now, error="exit 1", exit_code=1)
    state.orchestrate(ready(state), now=now, rand=rand)
    (new,) = [t for t in state.tasks_of(service.id) if t.live]
    assert (new.slot, new.attempt, new.not_before) == (1, 1, now + 5.0)
    failed = state.tasks[task.id]
    assert (failed.state, failed.error, failed.exit_code) == (TaskState.FAILED, "exit 1", 1)
    # The failed task's address is free again; the new one has its own.
    assert (state.find_network("atsea").id, task.id) not in state.allocations
    assert (state.find_network("atsea").id, new.id) in state.allocations


def test_a_full_network_leaves_new_tasks_waiting_with_the_reason(
    state: ClusterState, rand: RandomBytes
) -> None:
    state.create_network("tiny", now=NOW, rand=rand, subnet="10.0.9.0/29")  # 5 free after gw
    state.create_service(
        web(networks=("tiny",), replicas=6, endpoint_mode="dnsrr"), now=NOW, rand=rand
    )
    state.orchestrate(ready(state), now=NOW, rand=rand)
    waiting = [t for t in state.tasks.values() if t.state is TaskState.NEW]
    assert len(waiting) == 1
    assert waiting[0].message.startswith("no address for the task: network tiny: no addresses")


def test_global_services_follow_node_labels(state: ClusterState, rand: RandomBytes) -> None:
    service = state.create_service(
        ServiceSpec(
            name="mon",
            image="x",
            mode=ServiceMode.GLOBAL,
            constraints=(parse_constraint("node.labels.zone==a"),),
        ),
        now=NOW,
        rand=rand,
    )
    now = converge(state, ready(state), rand, NOW)
    assert live(state, service.id) == []
    state.update_node("node2", now=now, label_add={"zone": "a"})
    state.update_node("node3", now=now, label_add={"zone": "a", "ssd": ""})
    now = converge(state, ready(state), rand, now)
    assert [h for _, h, _ in live(state, service.id)] == ["node2", "node3"]
    node3 = state.update_node("node3", now=now, label_rm=["zone"])
    assert dict(node3.labels) == {"ssd": ""}
    converge(state, ready(state), rand, now)
    assert [h for _, h, _ in live(state, service.id)] == ["node2"]


def test_label_refusals_change_nothing(state: ClusterState) -> None:
    refused(
        state,
        ErrorKind.NOT_FOUND,
        "key 'zone' doesn't exist in node2's labels",
        state.update_node,
        "node2",
        now=NOW,
        label_rm=["zone"],
    )
    for key in ("", "has space", "=x", "k" * 200):
        refused(
            state,
            ErrorKind.INVALID,
            "invalid label",
            state.update_node,
            "node2",
            now=NOW,
            label_add={key: "v"},
        )
    refused(
        state,
        ErrorKind.INVALID,
        "too long",
        state.update_node,
        "node2",
        now=NOW,
        label_add={"k": "v" * 5000},
    )


# ----- worker reports -----


def test_reports_move_a_task_forward_only_and_only_from_its_node(
    state: ClusterState, rand: RandomBytes
) -> None:
    state.create_service(web(), now=NOW, rand=rand)
    state.orchestrate(ready(state), now=NOW, rand=rand)
    (task,) = state.tasks.values()
    assert task.node_id is not None
    mine, other = task.node_id, next(n for n in state.nodes if n != task.node_id)
    done = state.report_task(mine, task.id, "running", now=NOW + 1, container_id="abc123")
    assert (done.state, done.container_id, done.updated) == (TaskState.RUNNING, "abc123", NOW + 1)
    refused(
        state,
        ErrorKind.FORBIDDEN,
        "a node reports only its own tasks",
        state.report_task,
        other,
        task.id,
        "failed",
        now=NOW,
    )
    stale = refused(
        state,
        ErrorKind.INVALID,
        "only moves forward",
        state.report_task,
        mine,
        task.id,
        "starting",
        now=NOW,
    )
    assert isinstance(stale, TaskStateError)
    # A duplicate of the report already applied is stale too.
    refused(
        state,
        ErrorKind.INVALID,
        "only moves forward",
        state.report_task,
        mine,
        task.id,
        "running",
        now=NOW,
    )
    for bad in ("orphaned", "pending", "bogus"):
        refused(
            state,
            ErrorKind.INVALID,
            "a worker cannot report state",
            state.report_task,
            mine,
            task.id,
            bad,
            now=NOW,
        )
    refused(
        state,
        ErrorKind.INVALID,
        "invalid container id",
        state.report_task,
        mine,
        task.id,
        "complete",
        now=NOW,
        container_id="a b",
    )
    refused(
        state,
        ErrorKind.NOT_FOUND,
        "task nope not found",
        state.report_task,
        mine,
        "nope",
        "running",
        now=NOW,
    )
    ended = state.report_task(mine, task.id, "complete", now=NOW + 2, exit_code=0, error="x" * 5000)
    assert ended.exit_code == 0 and len(ended.error) == 512
    refused(
        state,
        ErrorKind.INVALID,
        "final state",
        state.report_task,
        mine,
        task.id,
        "running",
        now=NOW,
    )


# ----- persistence and replay -----


def test_services_and_tasks_replay_into_an_equal_state(
    state: ClusterState, rand: RandomBytes
) -> None:
    log = state.records()
    state.take_changes()
    state.create_service(web(replicas=2, ports=(parse_publish("8080:80"),)), now=NOW, rand=rand)
    state.update_node("node2", now=NOW, label_add={"zone": "a"})
    now = converge(state, ready(state), rand, NOW)
    state.update_service("web", now=now, replicas=1)
    converge(state, ready(state), rand, now)
    log += state.take_changes()
    replayed = ClusterState()
    for change in log:
        replayed.apply(change)
    assert sorted(replayed.records(), key=lambda c: (c.kind, c.key)) == sorted(
        state.records(), key=lambda c: (c.kind, c.key)
    )
    assert replayed.services == state.services and replayed.tasks == state.tasks
    assert replayed.find_node("node2").labels == {"zone": "a"}


def test_a_node_document_from_before_labels_still_loads(state: ClusterState) -> None:
    from overlaynet.cluster.state import NODE, Change, node_doc

    doc = node_doc(state.find_node("node2"))
    del doc["labels"]
    fresh = ClusterState()
    fresh.apply(Change(NODE, doc["id"], doc))
    assert fresh.nodes[doc["id"]] == dataclasses.replace(state.find_node("node2"), labels={})


def test_removing_a_service_that_never_had_a_task_frees_its_vips(
    state: ClusterState, rand: RandomBytes
) -> None:
    # Found by the property test: with no service and no task left, the pass stopped early and
    # never freed the VIP.
    service = state.create_service(
        ServiceSpec(name="mon", image="x", mode=ServiceMode.GLOBAL, networks=("atsea",)),
        now=NOW,
        rand=rand,
    )
    down = {n.id: "Down" for n in state.nodes.values()}
    state.orchestrate(down, now=NOW, rand=rand)
    assert state.tasks == {} and len(state.vips_of(service)) == 1
    state.remove_service("mon", now=NOW)
    state.orchestrate(down, now=NOW, rand=rand)
    assert state.allocations == {}


def test_the_ingress_subnet_can_be_chosen_and_user_overlays_avoid_it() -> None:
    rand = seeded_rand(5)
    s = ClusterState()
    s.init(hostname="n1", addr="10.9.0.1", now=NOW, rand=rand, ingress_subnet="10.0.0.0/16")
    assert s.find_network("ingress").subnet == "10.0.0.0/16"
    assert s.find_network("ingress").gateway == "10.0.0.1"
    # The first free /24 of 10.0.0.0/8 is past the ingress /16 (moby#33626, #39228).
    assert s.create_network("atsea", now=NOW, rand=rand).subnet == "10.1.0.0/24"
    refused(
        s,
        ErrorKind.CONFLICT,
        "overlaps with ingress",
        s.create_network,
        "clash",
        now=NOW,
        rand=rand,
        subnet="10.0.5.0/24",
    )
    empty = ClusterState()
    for bad in ("10.0.0.0/33", "nonsense", "10.0.0.1/24", "10.0.0.0/31"):
        refused(
            empty,
            ErrorKind.INVALID,
            "--ingress-subnet",
            empty.init,
            hostname="n1",
            addr="10.9.0.1",
            now=NOW,
            rand=rand,
            ingress_subnet=bad,
        )


def test_every_node_gets_a_load_balancer_address_on_each_network_with_vips(
    state: ClusterState, rand: RandomBytes
) -> None:
    db = state.create_service(web(name="db", endpoint_mode="dnsrr", replicas=0), now=NOW, rand=rand)
    state.orchestrate(ready(state), now=NOW, rand=rand)
    assert state.lb_networks() == [] and state.vips_of(db) == []
    app = state.create_service(web(ports=(parse_publish("8080:80"),)), now=NOW, rand=rand)
    now = converge(state, ready(state), rand, NOW)
    assert [n.name for n in state.lb_networks()] == ["atsea", "ingress"]
    for node in state.nodes.values():
        lbs = state.lb_addresses_of(node.id)
        assert [state.networks[a.network_id].name for a in lbs] == ["atsea", "ingress"]
        assert all(a.node_id == MANAGED for a in lbs)
    assert duplicate_addresses(allocated_uses(state)) == []
    # A node that goes away gives its endpoints back.
    node3 = node_id(state, "node3")
    state.remove_node(node3, alive=False)
    state.orchestrate(ready(state), now=now, rand=rand)
    assert state.lb_addresses_of(node3) == []
    # Once no service with a VIP is left and its tasks have stopped, all of them go.
    state.remove_service(app.id, now=now)
    converge(state, ready(state), rand, now)
    assert state.lb_networks() == []
    assert [a.endpoint_id for a in state.allocations.values()] == []
