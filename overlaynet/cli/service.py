"""`overlaynet service …` (Docker's verbs, flags and tables) and `node update --label-add/-rm`.

Parses, asks an agent (which passes service operations on to the managers), prints. `service
logs` reads each task's container output through the agent of the node that runs it.
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from overlaynet import api
from overlaynet.cli import main as cli
from overlaynet.cli import service_names
from overlaynet.cli.health_flags import add_health_flags, duration
from overlaynet.cli.tables import table
from overlaynet.errors import ApiError, NotFound
from overlaynet.humanize import human_duration
from overlaynet.paths import HostPaths

# docker prints ids cut to 12 characters unless --no-trunc (stringid.TruncateID).
SHORT = 12
# Where a generated service name's randomness comes from (a seeded Random in tests).
NAME_RANDOM = random.Random()
# Without --detach, create and scale show progress until the service converged; Docker waits
# forever, a bound keeps a script with a service that never converges from hanging.
CONVERGE_TIMEOUT = 300.0
# How often progress and `logs -f` ask again (a human watching: a few times a second).
POLL = 0.3
# docker's progress bar width (jsonmessage's ProgressMessage: 50 characters).
BAR_WIDTH = 50
# The states a task goes through, in order (the bar fills as it advances).
_STATES = ("new", "pending", "assigned", "accepted", "preparing", "starting", "running")


def _detach_flags(p: argparse.ArgumentParser) -> None:
    """`-d`, `--detach` and Go's `--detach=true|false` (the tutorial types the latter); an
    optional value would swallow the image that follows `--detach`, so each form is a flag
    (argparse matches a whole `--detach=true` before it splits at `=`)."""
    p.add_argument("-d", "--detach", action="store_true", help="return at once")
    for text, value in (("true", True), ("false", False), ("1", True), ("0", False)):
        p.add_argument(
            f"--detach={text}",
            dest="detach",
            action="store_const",
            const=value,
            help=argparse.SUPPRESS,
        )


_HEALTH_SUFFIX = {
    "starting": " (health: starting)",
    "healthy": " (healthy)",
    "unhealthy": " (unhealthy)",
}


def current_state(row: Mapping[str, Any], now: float) -> str:
    """`Running 3 minutes ago`, Docker's CURRENT STATE."""
    ago = human_duration(max(0.0, now - float(row.get("since") or now))).lower()
    # A task's health check, as `docker ps` shows a container's: (health: starting) etc.
    suffix = _HEALTH_SUFFIX.get(str(row.get("health")), "")
    return f"{row['current_state']} {ago} ago{suffix}"


def ps_table(rows: Sequence[Mapping[str, Any]], now: float, trunc: bool = True) -> str:
    """`service ps`'s table: ID, NAME, IMAGE, NODE, DESIRED STATE, CURRENT STATE, ERROR, PORTS."""
    headers = ["ID", "NAME", "IMAGE", "NODE", "DESIRED STATE", "CURRENT STATE", "ERROR", "PORTS"]
    out = []
    for r in rows:
        error = str(r.get("error") or "")
        if trunc and len(error) > 30:
            error = error[:29] + "…"
        name = ("\\_ " if r.get("history") else "") + str(r["name"])
        out.append(
            [
                str(r["id"])[:SHORT] if trunc else str(r["id"]),
                name,
                str(r["image"]),
                str(r.get("node") or ""),
                str(r["desired_state"]),
                current_state(r, now),
                f'"{error}"' if error else "",
                str(r.get("ports") or ""),
            ]
        )
    return table(headers, out)


def ls_table(rows: Sequence[Mapping[str, Any]]) -> str:
    headers = ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    return table(
        headers,
        [
            [str(r["id"])[:SHORT], r["name"], r["mode"], r["replicas"], r["image"], r["ports"]]
            for r in rows
        ],
    )


def pretty(doc: Mapping[str, Any]) -> str:
    """`service inspect --pretty`: Docker's text layout of the fields we have."""
    spec = doc["Spec"]
    template = spec.get("TaskTemplate", {})
    container = template.get("ContainerSpec", {})
    lines = ["", f"ID:\t\t{doc['ID']}", f"Name:\t\t{spec['Name']}"]
    mode = spec.get("Mode", {})
    if "Replicated" in mode:
        lines += ["Service Mode:\tReplicated", f" Replicas:\t{mode['Replicated'].get('Replicas')}"]
    else:
        lines.append("Service Mode:\tGlobal")
    constraints = template.get("Placement", {}).get("Constraints") or []
    lines.append("Placement:")
    if constraints:
        lines.append(f" Constraints:\t{constraints}")
    policy = template.get("RestartPolicy", {})
    if policy:
        lines.append("RestartPolicy:")
        lines.append(f" Condition:\t{policy.get('Condition')}")
        if policy.get("MaxAttempts") is not None:
            lines.append(f" Max Attempts:\t{policy.get('MaxAttempts')}")
    lines += ["ContainerSpec:", f" Image:\t\t{container.get('Image')}"]
    if container.get("Args"):
        lines.append(f" Args:\t\t{' '.join(container['Args'])}")
    if container.get("Env"):
        lines.append(f" Env:\t\t{' '.join(container['Env'])}")
    nets = [n.get("Target", "") for n in template.get("Networks") or []]
    if nets:
        lines.append(f"Networks:\t{' '.join(nets)}")
    endpoint = spec.get("EndpointSpec", {})
    lines.append(f"Endpoint Mode:\t{endpoint.get('Mode', 'vip')}")
    ports = endpoint.get("Ports") or []
    if ports:
        lines.append("Ports:")
        for p in ports:
            lines += [
                f" PublishedPort = {p.get('PublishedPort')}",
                f"  Protocol = {p.get('Protocol')}",
                f"  TargetPort = {p.get('TargetPort')}",
                f"  PublishMode = {p.get('PublishMode')}",
            ]
    return "\n".join(lines).expandtabs(8)


def progress(rows: Sequence[Mapping[str, Any]], desired: int) -> tuple[str, bool]:
    """Docker's progress block for the current task of each slot; (text, converged)."""
    current = [r for r in rows if not r.get("history") and r.get("desired_state") == "Running"]
    running = sum(1 for r in current if r["state"] == "running")
    lines = [f"overall progress: {running} out of {desired} tasks"]
    total = max(desired, len(current))
    for r in current:
        state = str(r["state"])
        step = _STATES.index(state) + 1 if state in _STATES else 0
        filled = BAR_WIDTH * step // len(_STATES)
        bar = "=" * max(0, filled - 1) + (">" if filled else "") + " " * (BAR_WIDTH - filled)
        label = f"{r['slot']}/{total}" if r.get("slot") is not None else str(r["node"])
        lines.append(f"{label}: {state:<9} [{bar}]")
    converged = running == desired and len(current) == desired
    if converged:
        lines.append("verify: Service converged")
    return "\n".join(lines), converged


# ---- commands ------------------------------------------------------------------------------


def _wait_converged(ns: argparse.Namespace, service: str) -> None:
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    shown = ""
    while True:
        rows = cli.call(ns, "service.ps", service=service)
        row = next(r for r in cli.call(ns, "service.ls") if service in (r["id"], r["name"]))
        text, done = progress(rows, int(row["desired"]))
        if text != shown:
            print(text, flush=True)
            shown = text
        if done:
            return
        if time.monotonic() > deadline:
            raise cli.CliError(f"service {service} did not converge in {CONVERGE_TIMEOUT:.0f} s")
        time.sleep(POLL)


_UPDATE_FLAGS = (
    ("parallelism", int),
    ("delay", duration),
    ("monitor", duration),
    ("max-failure-ratio", float),
)


def _health_update_flags(p: argparse.ArgumentParser) -> None:
    """`--health-*`, `--no-healthcheck`, `--update-*` and `--rollback-*` (create and update)."""
    add_health_flags(p)
    for prefix in ("update", "rollback"):
        for name, kind in _UPDATE_FLAGS:
            p.add_argument(f"--{prefix}-{name}", type=kind)
        actions = ["pause", "continue", "rollback"] if prefix == "update" else ["pause", "continue"]
        p.add_argument(f"--{prefix}-failure-action", choices=actions)
        p.add_argument(f"--{prefix}-order", choices=["stop-first", "start-first"])


def _health_update_args(ns: argparse.Namespace) -> dict[str, Any]:
    names = ["health_cmd", "health_interval", "health_timeout", "health_retries"]
    names += ["health_start_period", "no_healthcheck"]
    for prefix in ("update", "rollback"):
        names += [f"{prefix}_{n.replace('-', '_')}" for n, _ in _UPDATE_FLAGS]
        names += [f"{prefix}_failure_action", f"{prefix}_order"]
    return {n: getattr(ns, n) for n in names}


def _wait_updated(ns: argparse.Namespace, service: str) -> None:
    """Without --detach: follow UpdateStatus until the rollout is over (Docker's progress)."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT
    shown = ""
    while time.monotonic() < deadline:
        status = cli.call(ns, "service.inspect", service=service).get("UpdateStatus")
        if status is None:
            return
        text = f"{status['State']}: {status['Message']}"
        if text != shown:
            print(text, flush=True)
            shown = text
        if status["State"] not in ("updating", "rollback_started"):
            if status["State"] in ("paused", "rollback_paused"):
                raise cli.CliError(status["Message"])
            return
        time.sleep(POLL)
    raise cli.CliError(f"service {service} did not finish updating in {CONVERGE_TIMEOUT:.0f} s")


def cmd_update(ns: argparse.Namespace) -> int:
    """`service update [flags] SERVICE`."""
    args: dict[str, Any] = {
        "service": ns.service,
        "image": ns.image,
        "env_add": ns.env_add or [],
        "env_rm": ns.env_rm or [],
        "replicas": ns.replicas,
        "publish_add": ns.publish_add or [],
        "publish_rm": ns.publish_rm or [],
        "force": ns.force,
        **_health_update_args(ns),
    }
    cli.call(ns, "service.update", **args)
    print(ns.service, flush=True)
    if not ns.detach:
        _wait_updated(ns, ns.service)
    return 0


def cmd_rollback(ns: argparse.Namespace) -> int:
    """`service rollback SERVICE`."""
    cli.call(ns, "service.rollback", service=ns.service)
    print(ns.service, flush=True)
    if not ns.detach:
        _wait_updated(ns, ns.service)
    return 0


def cmd_create(ns: argparse.Namespace) -> int:
    args: dict[str, Any] = {
        "name": ns.name,
        "image": ns.image,
        "command": list(ns.command),
        "env": ns.env or [],
        "networks": ns.network or [],
        "publish": ns.publish or [],
        "constraints": ns.constraint or [],
        "replicas": ns.replicas,
        "mode": ns.mode,
        "endpoint_mode": ns.endpoint_mode,
        "restart_condition": ns.restart_condition,
        **_health_update_args(ns),
    }
    if not ns.name:
        # As docker: a generated adjective_surname, one the swarm does not have yet.
        taken = {str(r["name"]) for r in cli.call(ns, "service.ls")}
        args["name"] = service_names.generate(taken, NAME_RANDOM)
    doc = cli.call(ns, "service.create", **args)
    print(doc["ID"], flush=True)
    if not ns.detach:
        _wait_converged(ns, doc["ID"])
    return 0


def cmd_ls(ns: argparse.Namespace) -> int:
    rows = cli.call(ns, "service.ls")
    if ns.quiet:
        for r in rows:
            print(r["id"])
    else:
        print(ls_table(rows))
    return 0


def cmd_ps(ns: argparse.Namespace) -> int:
    rows: list[Any] = []
    for ref in ns.services:
        rows += cli.call(ns, "service.ps", service=ref)
    for f in ns.filter or []:
        key, _, value = f.partition("=")
        if key != "desired-state":
            raise cli.CliError(f"invalid filter {key!r}: service ps filters by desired-state")
        rows = [r for r in rows if str(r["desired_state"]).lower() == value.lower()]
    if ns.quiet:
        for r in rows:
            print(r["id"] if ns.no_trunc else str(r["id"])[:SHORT])
    else:
        print(ps_table(rows, time.time(), trunc=not ns.no_trunc))
    return 0


def cmd_inspect(ns: argparse.Namespace) -> int:
    docs = [cli.call(ns, "service.inspect", service=ref) for ref in ns.services]
    if ns.pretty:
        print("\n".join(pretty(d) for d in docs))
    else:
        print(json.dumps(docs, indent=4))
    return 0


def cmd_scale(ns: argparse.Namespace) -> int:
    wanted: list[tuple[str, int]] = []
    for item in ns.pairs:
        name, sep, count = item.partition("=")
        if not sep or not name or not count.isdigit():
            raise cli.CliError(
                f"invalid scale specifier '{item}'.\nSee 'overlaynet service scale --help'."
            )
        wanted.append((name, int(count)))
    status = 0
    for name, count in wanted:
        try:
            cli.call(ns, "service.scale", service=name, replicas=count)
        except cli.CliError as e:
            print(e, file=sys.stderr)
            status = cli.EXIT_ERROR
            continue
        print(f"{name} scaled to {count}", flush=True)
        if not ns.detach:
            _wait_converged(ns, name)
    return status


def cmd_rm(ns: argparse.Namespace) -> int:
    status = 0
    for ref in ns.services:
        try:
            cli.call(ns, "service.rm", service=ref)
        except cli.CliError as e:
            print(e, file=sys.stderr)
            status = cli.EXIT_ERROR
            continue
        print(ref)
    return status


def log_prefix(row: Mapping[str, Any], trunc: bool = True) -> str:
    """`database.1.<task id>@node1`: whose line it is (Docker cuts the task id to 12)."""
    task_id = str(row["id"])[:SHORT] if trunc else str(row["id"])
    return f"{row['name']}.{task_id}@{row.get('node') or '?'}"


def _node_client(ns: argparse.Namespace, node: str) -> api.Client:
    paths = cli._host_paths(ns)
    return api.Client(HostPaths(node, paths.lab).socket, timeout=cli.DEFAULT_WAIT)


def _tail(data: bytes, lines: int | None) -> bytes:
    if lines is None:
        return data
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def cmd_logs(ns: argparse.Namespace) -> int:
    """Every task's output with its prefix, read through the agent of the task's node."""
    rows = [r for r in cli.call(ns, "service.ps", service=ns.service) if r.get("container_id")]
    width = max((len(log_prefix(r, not ns.no_trunc)) for r in rows), default=0)
    offsets: dict[str, int] = {}
    pending: dict[str, bytes] = {}

    def read(r: Mapping[str, Any], first: bool) -> bool:
        """Print what is new from one task; False when its node cannot be asked."""
        cid = str(r["container_id"])
        try:
            res = _node_client(ns, str(r["node"])).call(
                "container.logs", container=cid, offset=offsets.get(cid, 0)
            )
        except NotFound:
            return True  # the task's container is gone (its task is over): nothing to show
        except (api.AgentDown, ApiError, OSError, TimeoutError):
            return False
        data = base64.b64decode(res["data"])
        offsets[cid] = int(res["offset"])
        if first:
            data = _tail(data, ns.tail)
        text = pending.pop(cid, b"") + data
        lines = text.split(b"\n")
        if lines[-1]:
            pending[cid] = lines[-1]
        prefix = (log_prefix(r, not ns.no_trunc).ljust(width) + "    | ").encode()
        for line in lines[:-1]:
            sys.stdout.buffer.write(prefix + line + b"\n")
        sys.stdout.buffer.flush()
        return True

    unreachable = [r for r in rows if not read(r, True)]
    for r in unreachable:
        print(
            f"overlaynet: cannot read the logs of {log_prefix(r)}: no agent answers for "
            f"{r['node']} from here",
            file=sys.stderr,
        )
    try:
        while ns.follow:
            time.sleep(POLL)
            for r in rows:
                read(r, False)
    except KeyboardInterrupt:
        return 0
    return 0


# ---- the parser ----------------------------------------------------------------------------


def _verb(sub: Any, name: str, help_text: str, fn: Callable[[argparse.Namespace], int]) -> Any:
    p = sub.add_parser(name, help=help_text)
    p.set_defaults(func=fn)
    return p


def lb_table(doc: Mapping[str, Any]) -> str:
    """`network lb NET`'s text: the sandbox, a row per VIP backend, then the nft rules."""
    if doc["Sandbox"] is None:
        return (
            f"network {doc['Network']}: no load balancer on this node (it has no VIPs here, or "
            "no container of this node uses the network)"
        )
    rows = [
        [v["VIP"], v["Service"] or "-", b["Address"], b["Task"] or "-", str(b["Connections"]),
         str(b["Active"])]
        for v in doc["VIPs"]
        for b in v["Backends"] or [{"Address": "-", "Task": "", "Connections": 0, "Active": 0}]
    ]  # fmt: skip
    headers = ["VIP", "SERVICE", "BACKEND", "TASK", "CONNECTIONS", "ACTIVE"]
    head = f"network {doc['Network']}: load balancer {doc['Sandbox']} at {doc['LbAddress']}"
    idle = doc.get("IdleTimeout")
    if idle:
        head += "\n" + idle_text(idle)
    return f"{head}\n{table(headers, rows)}\n\nnft rules as installed:\n{doc['Rules'].rstrip()}"


def idle_text(idle: Mapping[str, Any]) -> str:
    """How long an idle connection through these VIPs lives (Docker's IPVS: 900 s)."""
    seconds = int(idle["Seconds"])
    return (
        f"idle connections kept {seconds} s ({human_duration(seconds)}, {idle['Source']}; "
        f"{idle['Sysctl']} in the sandbox)"
    )


def cmd_network_lb(ns: argparse.Namespace) -> int:
    doc = cli.call(ns, "network.lb", network=ns.network)
    if ns.format == "json":
        print(json.dumps(doc, indent=4))
    else:
        print(lb_table(doc))
    return 0


def register(sub: Any) -> None:
    """Add `service` to the top-level sub-parsers, and labels to `node update`."""
    svc = sub.add_parser("service", help="manage swarm services").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = _verb(svc, "create", "create a service", cmd_create)
    c.add_argument("--name")
    c.add_argument("--replicas", type=int)
    c.add_argument("--mode", choices=["replicated", "global"])
    c.add_argument("--network", action="append")
    c.add_argument("--endpoint-mode", choices=["vip", "dnsrr"])
    c.add_argument("-p", "--publish", action="append")
    c.add_argument("-e", "--env", action="append")
    c.add_argument("--constraint", action="append")
    c.add_argument("--restart-condition", choices=["none", "on-failure", "any"])
    _health_update_flags(c)
    _detach_flags(c)
    c.add_argument("image")
    c.add_argument("command", nargs=argparse.REMAINDER)
    for verb in ("ls", "list"):
        c = _verb(svc, verb, "list services", cmd_ls)
        c.add_argument("-q", "--quiet", action="store_true")
    c = _verb(svc, "ps", "list the tasks of services", cmd_ps)
    c.add_argument("--no-trunc", action="store_true")
    c.add_argument("-q", "--quiet", action="store_true")
    c.add_argument("-f", "--filter", action="append")
    c.add_argument("services", nargs="+")
    c = _verb(svc, "inspect", "service details as JSON", cmd_inspect)
    c.add_argument("--pretty", action="store_true")
    c.add_argument("services", nargs="+")
    c = _verb(svc, "scale", "change the number of replicas", cmd_scale)
    _detach_flags(c)
    c.add_argument("pairs", nargs="+", metavar="SERVICE=REPLICAS")
    c = _verb(svc, "update", "update a service (a rolling update)", cmd_update)
    c.add_argument("--image")
    c.add_argument("--env-add", action="append")
    c.add_argument("--env-rm", action="append")
    c.add_argument("--replicas", type=int)
    c.add_argument("--publish-add", action="append")
    c.add_argument("--publish-rm", action="append")
    c.add_argument("--force", action="store_true")
    _health_update_flags(c)
    _detach_flags(c)
    c.add_argument("service")
    c = _verb(svc, "rollback", "revert a service to its previous spec", cmd_rollback)
    _detach_flags(c)
    c.add_argument("service")
    for verb in ("rm", "remove"):
        c = _verb(svc, verb, "remove services", cmd_rm)
        c.add_argument("services", nargs="+")
    c = _verb(svc, "logs", "output of a service's tasks", cmd_logs)
    c.add_argument("-f", "--follow", action="store_true")
    c.add_argument("--tail", type=lambda v: None if v == "all" else int(v), default=None)
    c.add_argument("--no-trunc", action="store_true")
    c.add_argument("service")

    # `network lb NET` (the network verbs are main's).
    network = sub.choices["network"]._subparsers._group_actions[0]
    c = network.add_parser("lb", help="this node's VIPs on NETWORK, their backends and nft rules")
    c.add_argument("network")
    c.add_argument("--format", choices=("table", "json"), default="table")
    c.set_defaults(func=cmd_network_lb)
