"""`service update` / `service rollback` in the cluster state and the manager's typed requests:
a rolling update carried out by the leader's orchestration pass, UpdateStatus and PreviousSpec
in `service inspect`, the automatic rollback, and refusals that change nothing."""

from __future__ import annotations

import pytest

from overlaynet.cluster import requests as rq
from overlaynet.cluster.errors import ClusterError
from overlaynet.cluster.service_views import service_inspect
from overlaynet.cluster.services import ServiceSpec
from overlaynet.cluster.state import ClusterState, Role
from overlaynet.cluster.tasks import TaskState, transition
from overlaynet.cluster.tokens import RandomBytes

from ..cluster.helpers import converge, seeded_rand, snapshot, work

NOW = 1_700_000_000.0


@pytest.fixture
def rand() -> RandomBytes:
    return seeded_rand(5)


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


def ready(state: ClusterState) -> dict[str, str]:
    return {n.id: "Ready" for n in state.nodes.values()}


def update_req(**args: object) -> rq.ServiceUpdate:
    req = rq.decode("service.update", {"service": "web", **args})
    assert isinstance(req, rq.ServiceUpdate)
    return req


def started(state: ClusterState, rand: RandomBytes, **create: object) -> float:
    req = rq.decode(
        "service.create", {"name": "web", "image": "web:1", "networks": ["atsea"], **create}
    )
    assert isinstance(req, rq.ServiceCreate)
    state.create_service(req.spec(), now=NOW, rand=rand)
    return converge(state, ready(state), rand, NOW)


def settle(state: ClusterState, rand: RandomBytes, now: float) -> float:
    """Passes and worker rounds, a second apart, until no rollout is active (the monitor
    period passes with nothing else changing, so `converge` alone stops short of it)."""
    for _ in range(200):
        state.orchestrate(ready(state), now=now, rand=rand)
        work(state, ready(state), now)
        now += 1.0
        if not any(s.state.active for s in state.update_status.values()):
            return now
    raise AssertionError(f"rollout stuck: {state.update_status}")


def images(state: ClusterState) -> list[int]:
    service = state.find_service("web")
    return sorted(t.spec_version for t in state.tasks_of(service.id) if t.live)


def test_update_image_rolls_out_and_inspect_shows_status_and_previous_spec(
    state: ClusterState, rand: RandomBytes
) -> None:
    now = started(state, rand, replicas=3, update_monitor=2.0)
    req = update_req(image="web:2", env_add=["A=1"], update_parallelism=2)
    service = state.change_service("web", req.new_spec, now=now)
    assert service.spec.image == "web:2" and service.spec.update.parallelism == 2
    doc = service_inspect(state, service)
    assert doc["UpdateStatus"]["State"] == "updating"
    assert doc["UpdateStatus"]["Message"] == "update in progress"
    assert doc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "web:1"
    settle(state, rand, now)
    assert images(state) == [service.version] * 3
    doc = service_inspect(state, state.find_service("web"))
    assert doc["UpdateStatus"]["State"] == "completed" and "CompletedAt" in doc["UpdateStatus"]
    assert doc["UpdateStatus"]["Message"] == "update completed"


def test_scale_through_update_starts_no_rollout(state: ClusterState, rand: RandomBytes) -> None:
    now = started(state, rand, replicas=2)
    before = {t.id for t in state.tasks.values() if t.live}
    state.change_service("web", update_req(replicas=3).new_spec, now=now)
    assert state.update_status == {}
    converge(state, ready(state), rand, now)
    assert before <= {t.id for t in state.tasks.values() if t.live}


def test_an_update_whose_tasks_fail_rolls_back_by_itself(
    state: ClusterState, rand: RandomBytes
) -> None:
    now = started(state, rand, replicas=3, update_failure_action="rollback")
    original = state.find_service("web").spec
    state.change_service("web", update_req(image="bad:2").new_spec, now=now)
    for _ in range(200):
        state.orchestrate(ready(state), now=now, rand=rand)
        work(state, ready(state), now)
        # The bad image's tasks die as soon as they run (what a worker reports for them).
        for t in list(state.tasks.values()):
            image = state.find_service("web").spec.image
            if t.state is TaskState.RUNNING and t.spec_version >= 2 and image == "bad:2":
                state.tasks[t.id] = transition(t, TaskState.FAILED, now=now, error="bad")
        now += 1.0
        status = state.update_status.get(state.find_service("web").id)
        if status is not None and status.state.value == "rollback_completed":
            break
    service = state.find_service("web")
    assert service.spec == original
    status = state.update_status[service.id]
    assert status.state.value == "rollback_completed"
    doc = service_inspect(state, service)
    assert doc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"] == "bad:2"


def test_manual_rollback_and_refusals_change_nothing(
    state: ClusterState, rand: RandomBytes
) -> None:
    now = started(state, rand, replicas=1)
    before = snapshot(state)
    with pytest.raises(ClusterError, match="no previous spec"):
        state.rollback_service("web", now=now)
    with pytest.raises(ClusterError, match="update parallelism"):
        state.change_service("web", update_req(update_parallelism=-1).new_spec, now=now)
    with pytest.raises(ClusterError, match="rollback failure action"):
        update_req(rollback_failure_action="rollback").new_spec(state.find_service("web").spec)
    assert snapshot(state) == before
    state.change_service("web", update_req(image="web:2").new_spec, now=now)
    now = settle(state, rand, now)
    state.rollback_service("web", now=now)
    settle(state, rand, now)
    service = state.find_service("web")
    assert service.spec.image == "web:1"
    assert state.update_status[service.id].message == "rollback completed"


def test_health_flags_build_dockers_check() -> None:
    spec = ServiceSpec(name="web", image="web:1")
    check = update_req(health_cmd="wget -q -O- localhost", health_interval=2.0).new_spec(spec)
    assert check.healthcheck is not None
    assert (check.healthcheck.test, check.healthcheck.interval) == (
        ("CMD-SHELL", "wget -q -O- localhost"),
        2.0,
    )
    assert check.healthcheck.retries == 3
    retried = update_req(health_retries=5).new_spec(check)
    assert retried.healthcheck is not None and retried.healthcheck.retries == 5
    assert retried.healthcheck.interval == 2.0
    off = update_req(no_healthcheck=True).new_spec(check)
    assert off.healthcheck is not None and off.healthcheck.disabled
    with pytest.raises(ClusterError, match="need --health-cmd"):
        update_req(health_interval=1.0).new_spec(spec)


def test_publish_add_and_rm(state: ClusterState, rand: RandomBytes) -> None:
    now = started(state, rand, publish=["8080:80"])
    service = state.change_service(
        "web", update_req(publish_add=["9090:90"], publish_rm=["80"]).new_spec, now=now
    )
    assert [(p.published, p.target) for p in service.spec.ports] == [(9090, 90)]
    assert state.update_status[service.id].state.value == "updating"


def test_status_survives_a_replay(state: ClusterState, rand: RandomBytes) -> None:
    now = started(state, rand)
    state.change_service("web", update_req(image="web:2").new_spec, now=now)
    records, index = snapshot(state)
    again = ClusterState.from_records(records, index)
    assert again.update_status == state.update_status


def test_replacement_tasks_never_take_an_address_just_freed(
    state: ClusterState, rand: RandomBytes
) -> None:
    """Serial task addresses (swarmkit's overlay IPAM): a rolling update's new task must not
    get the address of a task that ended a moment ago on another node, while nodes' neighbour
    and forwarding entries may still point at that node (it failed a request in the lab)."""
    now = started(state, rand, replicas=3, update_monitor=0.0)
    service = state.find_service("web")
    net = state.find_network("atsea")

    def addresses() -> dict[str, str]:
        return {
            t.id: state.allocations[(net.id, t.id)].ip
            for t in state.tasks_of(service.id)
            if (net.id, t.id) in state.allocations
        }

    holder = {ip: tid for tid, ip in addresses().items()}
    state.change_service("web", update_req(image="web:2").new_spec, now=now)
    for _ in range(100):
        state.orchestrate(ready(state), now=now, rand=rand)
        work(state, ready(state), now)
        now += 1.0
        for tid, ip in addresses().items():
            # Each address has had one task only, whichever tasks ended meanwhile.
            assert holder.setdefault(ip, tid) == tid, f"{ip} given to {tid} after {holder[ip]}"
        if not state.update_status[service.id].state.active:
            break
    assert len(holder) == 6
