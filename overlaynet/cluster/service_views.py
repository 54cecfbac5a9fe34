"""What managers answer about services: the documents `service ls/ps/inspect` print, and the
task list a worker runs. Pure functions of the cluster state, so every manager (leader or
follower) answers the same from the same copy.

`service_inspect` follows Docker's JSON layout (ID, Version, CreatedAt, Spec, Endpoint), with
Docker's units (durations in nanoseconds, RFC 3339 timestamps); the rest are flat rows with
lower-case keys like the other manager replies, carrying both what the CLI prints (`replicas`
"2/3", `current_state` "Running") and the raw values behind it (`running`, `since`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import UTC, datetime
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from overlaynet.cluster import ipam, lbidle
from overlaynet.cluster.services import (
    HealthCheck,
    PortConfig,
    PublishMode,
    Service,
    ServiceMode,
    UpdateConfig,
    spec_doc,
)
from overlaynet.cluster.state import Allocation, ClusterState, OverlayNetwork
from overlaynet.cluster.tasks import Task, TaskState, task_name

# Docker's API gives durations in nanoseconds (Go's time.Duration).
_NS = 1_000_000_000
# The scheduler's reasons start so (scheduler.explain); `service ps` shows them in ERROR, as
# Docker shows "no suitable node (…)" for a task it cannot place.
_NO_NODE = "no suitable node"


def timestamp(ts: float) -> str:
    """Docker's CreatedAt: RFC 3339 in UTC with nanoseconds ("2026-11-29T16:53:51.123456Z")."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ns(seconds: float) -> int:
    return round(seconds * _NS)


def _port_doc(port: PortConfig) -> dict[str, Any]:
    return {
        "Protocol": port.protocol.value,
        "TargetPort": port.target,
        "PublishedPort": port.published,
        "PublishMode": port.mode.value,
    }


def _port_row(port: PortConfig) -> dict[str, Any]:
    return {
        "protocol": port.protocol.value,
        "target": port.target,
        "published": port.published,
        "mode": port.mode.value,
    }


def _ports_text(ports: Iterable[PortConfig]) -> str:
    return ", ".join(str(p) for p in ports)


def _vip_addr(alloc: Allocation, network: OverlayNetwork) -> str:
    """A VIP as Docker prints it: with its network's prefix ("10.0.1.2/24")."""
    return f"{alloc.ip}/{IPv4Network(network.subnet).prefixlen}"


def _update_doc(update: UpdateConfig) -> dict[str, Any]:
    return {
        "Parallelism": update.parallelism,
        "Delay": _ns(update.delay),
        "FailureAction": update.failure_action.value,
        "Monitor": _ns(update.monitor),
        "MaxFailureRatio": update.max_failure_ratio,
        "Order": update.order.value,
    }


def _health_doc(health: HealthCheck) -> dict[str, Any]:
    return {
        "Test": list(health.test),
        "Interval": _ns(health.interval),
        "Timeout": _ns(health.timeout),
        "Retries": health.retries,
        "StartPeriod": _ns(health.start_period),
    }


def service_inspect(state: ClusterState, service: Service) -> dict[str, Any]:
    """`service inspect`: Docker's layout (api/types/swarm Service), with UpdateStatus and
    PreviousSpec once the service has been updated."""
    doc = _service_doc(state, service)
    status = state.update_status.get(service.id)
    if status is not None:
        update_status = {
            "State": status.state.value,
            "StartedAt": timestamp(status.started_at),
            "Message": status.message,
        }
        if status.completed_at is not None:
            update_status["CompletedAt"] = timestamp(status.completed_at)
        doc["UpdateStatus"] = update_status
        if status.previous_spec is not None:
            previous = dataclasses.replace(service, spec=status.previous_spec)
            doc["PreviousSpec"] = _service_doc(state, previous)["Spec"]
    return doc


def _service_doc(state: ClusterState, service: Service) -> dict[str, Any]:
    spec = service.spec
    container: dict[str, Any] = {
        "Image": spec.image,
        "Args": list(spec.command),
        "Env": list(spec.env),
    }
    if spec.healthcheck is not None:
        container["Healthcheck"] = _health_doc(spec.healthcheck)
    mode: dict[str, Any]
    if spec.mode is ServiceMode.GLOBAL:
        mode = {"Global": {}}
    else:
        mode = {"Replicated": {"Replicas": spec.replicas}}
    endpoint_spec = {
        "Mode": spec.endpoint_mode.value,
        "Ports": [_port_doc(p) for p in spec.ports],
    }
    vips = [
        {"NetworkID": a.network_id, "Addr": _vip_addr(a, state.networks[a.network_id])}
        for a in state.vips_of(service)
    ]
    return {
        "ID": service.id,
        "Version": {"Index": service.version},
        "CreatedAt": timestamp(service.created),
        "UpdatedAt": timestamp(service.updated),
        "Spec": {
            "Name": spec.name,
            "Labels": {},
            "TaskTemplate": {
                "ContainerSpec": container,
                "RestartPolicy": {
                    "Condition": spec.restart.condition.value,
                    "Delay": _ns(spec.restart.delay),
                    "MaxAttempts": spec.restart.max_attempts,
                },
                "Placement": {"Constraints": [str(c) for c in spec.constraints]},
                "Networks": [{"Target": n} for n in spec.networks],
            },
            "Mode": mode,
            "UpdateConfig": _update_doc(spec.update),
            "RollbackConfig": _update_doc(spec.rollback),
            "EndpointSpec": endpoint_spec,
        },
        "Endpoint": {
            "Spec": endpoint_spec,
            # Docker lists here only what the routing mesh publishes.
            "Ports": [_port_doc(p) for p in spec.ports if p.mode is PublishMode.INGRESS],
            "VirtualIPs": vips,
        },
    }


def service_row(state: ClusterState, service: Service) -> dict[str, Any]:
    """One line of `service ls`: ID, NAME, MODE, REPLICAS (running/desired), IMAGE, PORTS."""
    tasks = state.tasks_of(service.id)
    running = sum(1 for t in tasks if t.live and t.state is TaskState.RUNNING)
    if service.spec.mode is ServiceMode.GLOBAL:
        # Docker: one per node that should run it, i.e. the live tasks once a pass has run.
        desired = sum(1 for t in tasks if t.live)
    else:
        desired = service.spec.replicas or 0
    ingress = [p for p in service.spec.ports if p.mode is PublishMode.INGRESS]
    return {
        "id": service.id,
        "name": service.spec.name,
        "mode": service.spec.mode.value,
        "replicas": f"{running}/{desired}",
        "running": running,
        "desired": desired,
        "image": service.spec.image,
        "ports": _ports_text(ingress),
    }


def _error_of(task: Task) -> str:
    if task.error:
        return task.error
    if task.state in (TaskState.NEW, TaskState.PENDING) and (
        task.message.startswith(_NO_NODE) or task.message.startswith("no address")
    ):
        return task.message
    return ""


# The error a worker reports for a task whose health check failed (agent/health.py).
_UNHEALTHY = "dockerexec: unhealthy container"


def _health_of(service: Service, task: Task) -> str | None:
    """What `service ps` says of a task's health check: a worker reports a task with a check
    running only once healthy, and fails it as unhealthy; starting until then."""
    if _UNHEALTHY in task.error:
        return "unhealthy"
    check = service.spec.healthcheck
    if check is None or check.disabled or task.desired is not TaskState.RUNNING:
        return None
    if task.state is TaskState.RUNNING:
        return "healthy"
    if task.state is TaskState.STARTING and task.container_id:
        return "starting"
    return None


def task_rows(state: ClusterState, service: Service) -> list[dict[str, Any]]:
    """`service ps`: every task of the service kept in history, grouped by slot (by node for
    global services), newest first in each group; `history` marks the older ones (Docker's
    `\\_ web.1`)."""
    tasks = state.tasks_of(service.id)
    host_ports = [p for p in service.spec.ports if p.mode is PublishMode.HOST]

    def group(t: Task) -> tuple[int, str]:
        if t.slot is not None:
            return (t.slot, "")
        return (0, state.nodes[t.node_id].hostname if t.node_id in state.nodes else "")

    tasks.sort(key=lambda t: (group(t), -t.created, t.id))
    rows = []
    seen: set[tuple[int, str]] = set()
    for task in tasks:
        node = state.nodes.get(task.node_id or "")
        rows.append(
            {
                "id": task.id,
                "name": task_name(service.spec.name, task),
                "service_id": service.id,
                "service_name": service.spec.name,
                "slot": task.slot,
                "image": service.spec.image,
                "node_id": task.node_id,
                "node": node.hostname if node is not None else "",
                "desired_state": task.desired.value.capitalize(),
                "current_state": task.state.value.capitalize(),
                "state": task.state.value,
                "since": task.updated,
                "created": task.created,
                "error": _error_of(task),
                "message": task.message,
                "ports": _ports_text(host_ports) if task.holds_node else "",
                "history": group(task) in seen,
                "attempt": task.attempt,
                "container_id": task.container_id,
                "exit_code": task.exit_code,
                "health": _health_of(service, task),
            }
        )
        seen.add(group(task))
    return rows


def service_endpoint(state: ClusterState, service: Service) -> dict[str, Any]:
    """What every worker needs of every service, whether or not it runs one of its tasks:
    the name and VIPs for DNS, the published ports for the routing mesh."""
    return {
        "id": service.id,
        "name": service.spec.name,
        "mode": service.spec.mode.value,
        "endpoint_mode": service.spec.endpoint_mode.value,
        "networks": [n.id for n in state.service_networks(service)],
        "ports": [_port_row(p) for p in service.spec.ports],
        "vips": [{"network_id": a.network_id, "addr": a.ip} for a in state.vips_of(service)],
        # The tasks DNS and the VIPs may send to: running (a task with a health check runs
        # once healthy) and wanted running (one being stopped leaves before its process does).
        "serving": sorted(
            t.id
            for t in state.tasks_of(service.id)
            if t.state is TaskState.RUNNING and t.desired is TaskState.RUNNING
        ),
    }


def _task_networks(state: ClusterState, service: Service, task: Task) -> list[dict[str, Any]]:
    """The task's endpoint on each of its networks, with the service's VIP there (vip mode)."""
    vips = {a.network_id: a.ip for a in state.vips_of(service)}
    out = []
    for network in state.service_networks(service):
        alloc = state.allocations.get((network.id, task.id))
        if alloc is None:
            continue
        out.append({**_endpoint_doc(alloc, network), "vip": vips.get(network.id)})
    return out


def _endpoint_doc(alloc: Allocation, network: OverlayNetwork) -> dict[str, Any]:
    return {
        "network_id": network.id,
        "network_name": network.name,
        "vni": network.vni,
        "subnet": network.subnet,
        "gateway": network.gateway,
        "ingress": network.ingress,
        "ip": alloc.ip,
        "address": f"{alloc.ip}/{IPv4Network(network.subnet).prefixlen}",
        "mac": ipam.mac_for(IPv4Address(alloc.ip)),
    }


def assigned_task(state: ClusterState, service: Service, task: Task) -> dict[str, Any]:
    """Everything a worker needs to run one task (or to stop it: `desired_state` shutdown)."""
    spec = service.spec
    return {
        "id": task.id,
        "service_id": service.id,
        "service_name": spec.name,
        "name": task_name(spec.name, task),
        "slot": task.slot,
        "image": spec.image,
        "command": list(spec.command),
        "env": list(spec.env),
        "desired_state": task.desired.value,
        "state": task.state.value,
        "attempt": task.attempt,
        "not_before": task.not_before,
        "spec_version": task.spec_version,
        "container_id": task.container_id,
        "endpoint_mode": spec.endpoint_mode.value,
        "networks": _task_networks(state, service, task),
        "vips": [{"network_id": a.network_id, "addr": a.ip} for a in state.vips_of(service)],
        "ports": [_port_row(p) for p in spec.ports],
        "restart": spec_doc(spec)["restart"],
        "healthcheck": spec_doc(spec)["healthcheck"],
    }


def assigned_tasks(state: ClusterState, node_id: str) -> dict[str, Any]:
    """`task.assigned`: the node's tasks that are not over (to run, or to stop), in a stable
    order, and every service's endpoint. A function of the state alone, so a worker that
    restarts and asks again gets the same list."""
    mine = [
        t
        for t in state.tasks.values()
        if t.node_id == node_id and not t.state.final and t.service_id in state.services
    ]
    # Tasks of a removed service still have to be stopped: keep them, with what is known.
    orphans = [
        t
        for t in state.tasks.values()
        if t.node_id == node_id and not t.state.final and t.service_id not in state.services
    ]
    mine.sort(key=lambda t: (t.service_id, t.slot or 0, t.id))
    services = sorted(state.services.values(), key=lambda s: (s.spec.name, s.id))
    return {
        "node_id": node_id,
        "index": state.index,
        "tasks": [assigned_task(state, state.services[t.service_id], t) for t in mine],
        "stop": [
            {"id": t.id, "service_id": t.service_id, "container_id": t.container_id}
            for t in sorted(orphans, key=lambda t: t.id)
        ],
        "services": [service_endpoint(state, s) for s in services],
        # This node's load-balancer endpoint on each network with VIPs (its lb_<net> sandbox;
        # on ingress, its ingress sandbox).
        "lb": [
            {
                **_endpoint_doc(a, state.networks[a.network_id]),
                # `--opt lb-idle-timeout` (None: the kernel's default stays): cluster/lbidle.py.
                "idle_timeout": lbidle.from_labels(state.networks[a.network_id].labels),
            }
            for a in state.lb_addresses_of(node_id)
        ],
    }
