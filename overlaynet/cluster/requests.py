"""Every operation a swarm manager serves on tcp/2377, as one frozen dataclass each.

The same mechanism as the agent's API (overlaynet/api.py, agent/requests.py): a request's
`args` are decoded once by `decode`, every type checked and nothing coerced (`"false"` is not a
boolean, `"4097"` not a VNI), an argument the operation does not have is refused; the manager
then dispatches on the class. Field names are the wire's argument names. Each class also says
who may send it (WORKER), whether it changes the state (WRITE: followers forward it, the leader
runs it once per request id) and whether only the leader can answer it (LEADER).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from overlaynet.api import Request, decode_args, request_types
from overlaynet.cluster.errors import ClusterError, ErrorKind, Role
from overlaynet.cluster.services import (
    FailureAction,
    HealthCheck,
    PortConfig,
    RestartPolicy,
    ServiceSpec,
    UpdateConfig,
    parse_constraint,
    parse_publish,
)
from overlaynet.errors import InvalidArgument
from overlaynet.gossip.keyring import MAX_KEYS

# A key fingerprint is 12 hex digits (gossip.keyring.fingerprint); the cap only stops abuse.
FINGERPRINT_MAX = 64


class ManagerRequest(Request):
    """A manager operation. A required string argument may not be empty either (`_arg` of old:
    an empty node, network or endpoint id is a missing one)."""

    WORKER: ClassVar[bool] = False
    WRITE: ClassVar[bool] = False
    LEADER: ClassVar[bool] = False

    def is_write(self) -> bool:
        return self.WRITE

    def check(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if required and getattr(self, f.name) == "":
                raise InvalidArgument(f"missing argument {f.name!r}")


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidArgument("role must be worker or manager") from None


# ---- joining and leaving -----------------------------------------------------------------


@dataclass(frozen=True)
class JoinAdmit(ManagerRequest):
    """A join whose token was checked: `role` is the token's (set by the manager, or by the
    follower that forwards the join)."""

    OP: ClassVar[str] = "join.admit"
    WRITE: ClassVar[bool] = True
    hostname: str
    addr: str
    role: str

    def check(self) -> None:
        super().check()
        _role(self.role)


@dataclass(frozen=True)
class Leave(ManagerRequest):
    OP: ClassVar[str] = "leave"
    WORKER: ClassVar[bool] = True
    WRITE: ClassVar[bool] = True
    force: bool = False


# ---- nodes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeLs(ManagerRequest):
    OP: ClassVar[str] = "node.ls"


@dataclass(frozen=True)
class NodeInspect(ManagerRequest):
    OP: ClassVar[str] = "node.inspect"
    node: str


@dataclass(frozen=True)
class NodeUpdate(ManagerRequest):
    OP: ClassVar[str] = "node.update"
    WRITE: ClassVar[bool] = True
    node: str
    availability: str | None = None
    label_add: dict[str, str] = field(default_factory=dict)
    label_rm: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodePromote(ManagerRequest):
    OP: ClassVar[str] = "node.promote"
    WRITE: ClassVar[bool] = True
    node: str


@dataclass(frozen=True)
class NodeDemote(ManagerRequest):
    OP: ClassVar[str] = "node.demote"
    WRITE: ClassVar[bool] = True
    node: str


@dataclass(frozen=True)
class NodeRm(ManagerRequest):
    OP: ClassVar[str] = "node.rm"
    WRITE: ClassVar[bool] = True
    node: str
    force: bool = False


@dataclass(frozen=True)
class NodeCa(ManagerRequest):
    """`node ca`: every node's credential (fingerprint, role, issued, active or revoked)."""

    OP: ClassVar[str] = "node.ca"


@dataclass(frozen=True)
class NodeRevoke(ManagerRequest):
    """`node ca revoke NODE`: the node stays listed, its credential is refused from now on."""

    OP: ClassVar[str] = "node.revoke"
    WRITE: ClassVar[bool] = True
    node: str


# ---- networks and addresses --------------------------------------------------------------


@dataclass(frozen=True)
class NetworkCreate(ManagerRequest):
    OP: ClassVar[str] = "network.create"
    WRITE: ClassVar[bool] = True
    name: str
    subnet: str | None = None
    gateway: str | None = None
    attachable: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    vni: int | None = None
    # --opt encrypted (issue 18): data keys from the managers, rotated every key_period s.
    encrypted: bool = False
    key_period: float | None = None


@dataclass(frozen=True)
class NetworkRm(ManagerRequest):
    OP: ClassVar[str] = "network.rm"
    WRITE: ClassVar[bool] = True
    network: str


@dataclass(frozen=True)
class NetworkLs(ManagerRequest):
    OP: ClassVar[str] = "network.ls"


@dataclass(frozen=True)
class NetworkInspect(ManagerRequest):
    OP: ClassVar[str] = "network.inspect"
    network: str


@dataclass(frozen=True)
class IpAllocate(ManagerRequest):
    OP: ClassVar[str] = "ip.allocate"
    WORKER: ClassVar[bool] = True
    WRITE: ClassVar[bool] = True
    network: str
    endpoint_id: str
    ip: str | None = None


@dataclass(frozen=True)
class IpRelease(ManagerRequest):
    OP: ClassVar[str] = "ip.release"
    WORKER: ClassVar[bool] = True
    WRITE: ClassVar[bool] = True
    network: str
    endpoint_id: str


# ---- the swarm's state and secrets -------------------------------------------------------


@dataclass(frozen=True)
class StateSnapshot(ManagerRequest):
    """What a node needs from the managers: its role, the networks, its addresses and the
    gossip keyring."""

    OP: ClassVar[str] = "state.snapshot"
    WORKER: ClassVar[bool] = True


@dataclass(frozen=True)
class JoinToken(ManagerRequest):
    OP: ClassVar[str] = "join_token"
    role: str
    rotate: bool = False

    def is_write(self) -> bool:
        return self.rotate

    def check(self) -> None:
        super().check()
        try:
            Role(self.role)
        except ValueError:
            raise InvalidArgument("join-token takes worker or manager") from None


@dataclass(frozen=True)
class GossipRotate(ManagerRequest):
    """Start a gossip key rotation (the leader drives its stages, keyrotation.py)."""

    OP: ClassVar[str] = "gossip.rotate"
    WRITE: ClassVar[bool] = True


@dataclass(frozen=True)
class GossipRetire(ManagerRequest):
    OP: ClassVar[str] = "gossip.retire"
    WRITE: ClassVar[bool] = True


@dataclass(frozen=True)
class GossipReport(ManagerRequest):
    """A node's report of the gossip keys it holds (fingerprints, primary first), answered with
    the keyring it should hold. The leader alone drives a rotation, so followers forward it."""

    OP: ClassVar[str] = "gossip.report"
    WORKER: ClassVar[bool] = True
    LEADER: ClassVar[bool] = True
    key_fingerprints: tuple[str, ...]

    def check(self) -> None:
        if not 1 <= len(self.key_fingerprints) <= MAX_KEYS or not all(
            0 < len(f) <= FINGERPRINT_MAX for f in self.key_fingerprints
        ):
            raise InvalidArgument(
                f"argument 'key_fingerprints' must list 1 to {MAX_KEYS} key fingerprints"
            )


@dataclass(frozen=True)
class ReplicaFetch(ManagerRequest):
    OP: ClassVar[str] = "replica.fetch"
    LEADER: ClassVar[bool] = True
    since: int


# ---- services and tasks ------------------------------------------------------------------


def _invalid(message: str) -> ClusterError:
    return ClusterError(ErrorKind.INVALID, message)


@dataclass(frozen=True, kw_only=True)
class HealthArgs:
    """`--health-cmd`, `--health-interval/-timeout/-retries/-start-period`, `--no-healthcheck`
    (service create and update, and the agent's own copies of those requests)."""

    health_cmd: str | None = None
    health_interval: float | None = None
    health_timeout: float | None = None
    health_retries: int | None = None
    health_start_period: float | None = None
    no_healthcheck: bool = False

    def healthcheck(self, old: HealthCheck | None) -> HealthCheck | None:
        """The check these flags make of `old` (None: the service has none)."""
        given = {
            k: v
            for k, v in (
                ("interval", self.health_interval),
                ("timeout", self.health_timeout),
                ("retries", self.health_retries),
                ("start_period", self.health_start_period),
            )
            if v is not None
        }
        if self.no_healthcheck:
            if self.health_cmd is not None or given:
                raise _invalid("--no-healthcheck conflicts with --health-* options")
            return HealthCheck(("NONE",))
        if self.health_cmd is None and not given:
            return old
        base = None if old is None or old.disabled else old
        if self.health_cmd is not None:
            test: tuple[str, ...] = ("CMD-SHELL", self.health_cmd)
        elif base is not None:
            test = base.test
        else:
            raise _invalid("--health-interval, -timeout, -retries, -start-period need --health-cmd")
        kept = {} if base is None else {k: getattr(base, k) for k in _HEALTH_TIMES}
        return HealthCheck(test, **{**kept, **given})


_HEALTH_TIMES = ("interval", "timeout", "retries", "start_period")
_UPDATE_FIELDS = ("parallelism", "delay", "monitor", "max_failure_ratio", "failure_action", "order")


@dataclass(frozen=True, kw_only=True)
class UpdateArgs:
    """`--update-*` and `--rollback-*` (service create and update)."""

    update_parallelism: int | None = None
    update_delay: float | None = None
    update_monitor: float | None = None
    update_max_failure_ratio: float | None = None
    update_failure_action: str | None = None
    update_order: str | None = None
    rollback_parallelism: int | None = None
    rollback_delay: float | None = None
    rollback_monitor: float | None = None
    rollback_max_failure_ratio: float | None = None
    rollback_failure_action: str | None = None
    rollback_order: str | None = None

    def update_config(self, prefix: str, old: UpdateConfig) -> UpdateConfig:
        """`old` with the `--<prefix>-*` flags given (UpdateConfig validates them)."""
        given = {
            f: getattr(self, f"{prefix}_{f}")
            for f in _UPDATE_FIELDS
            if getattr(self, f"{prefix}_{f}") is not None
        }
        if prefix == "rollback" and given.get("failure_action") == FailureAction.ROLLBACK:
            # Docker: a rollback's failure action is pause or continue, never another rollback.
            raise _invalid("invalid rollback failure action 'rollback': use pause, continue")
        return dataclasses.replace(old, **given)


@dataclass(frozen=True)
class ServiceCreate(HealthArgs, UpdateArgs, ManagerRequest):
    OP: ClassVar[str] = "service.create"
    WRITE: ClassVar[bool] = True
    name: str
    image: str
    command: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    replicas: int | None = None
    mode: str | None = None
    networks: tuple[str, ...] = ()
    endpoint_mode: str | None = None
    publish: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()
    restart_condition: str | None = None
    restart_delay: float | None = None
    restart_max_attempts: int | None = None

    def spec(self) -> ServiceSpec:
        """The validated spec (ClusterError when a value is wrong for a service)."""
        restart: dict[str, Any] = {}
        if self.restart_condition is not None:
            restart["condition"] = self.restart_condition
        if self.restart_delay is not None:
            restart["delay"] = self.restart_delay
        if self.restart_max_attempts is not None:
            restart["max_attempts"] = self.restart_max_attempts
        fields: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "command": self.command,
            "env": self.env,
            "replicas": self.replicas,
            "networks": self.networks,
            "ports": tuple(parse_publish(p) for p in self.publish),
            "constraints": tuple(parse_constraint(c) for c in self.constraints),
            "restart": RestartPolicy(**restart),
            "healthcheck": self.healthcheck(None),
            "update": self.update_config("update", UpdateConfig()),
            "rollback": self.update_config("rollback", UpdateConfig()),
        }
        if self.mode is not None:
            fields["mode"] = self.mode
        if self.endpoint_mode is not None:
            fields["endpoint_mode"] = self.endpoint_mode
        return ServiceSpec(**fields)


@dataclass(frozen=True)
class ServiceLs(ManagerRequest):
    OP: ClassVar[str] = "service.ls"


@dataclass(frozen=True)
class ServicePs(ManagerRequest):
    OP: ClassVar[str] = "service.ps"
    service: str


@dataclass(frozen=True)
class ServiceInspect(ManagerRequest):
    OP: ClassVar[str] = "service.inspect"
    service: str


@dataclass(frozen=True)
class ServiceScale(ManagerRequest):
    OP: ClassVar[str] = "service.scale"
    WRITE: ClassVar[bool] = True
    service: str
    replicas: int


@dataclass(frozen=True)
class ServiceUpdate(HealthArgs, UpdateArgs, ManagerRequest):
    """`service update`: what is given changes, the rest stays; `force` redeploys anyway."""

    OP: ClassVar[str] = "service.update"
    WRITE: ClassVar[bool] = True
    service: str
    image: str | None = None
    env_add: tuple[str, ...] = ()
    env_rm: tuple[str, ...] = ()
    replicas: int | None = None
    publish_add: tuple[str, ...] = ()
    publish_rm: tuple[str, ...] = ()
    force: bool = False

    def new_spec(self, old: ServiceSpec) -> ServiceSpec:
        """The spec after this update (ClusterError when a value is wrong)."""
        env = dict(e.partition("=")[::2] for e in old.env)
        for name in self.env_rm:
            env.pop(name, None)
        for item in self.env_add:
            key, sep, value = item.partition("=")
            if not sep:
                raise _invalid(f"invalid --env-add {item!r}: use NAME=VALUE")
            env[key] = value
        ports = [p for p in old.ports if not any(_port_named(p, r) for r in self.publish_rm)]
        added = [parse_publish(p) for p in self.publish_add]
        # Docker: --publish-add of a port already published replaces it.
        ports = [p for p in ports if all(p.target != a.target for a in added)] + added
        changes: dict[str, Any] = {
            "env": tuple(f"{k}={v}" for k, v in env.items()),
            "ports": tuple(ports),
            "healthcheck": self.healthcheck(old.healthcheck),
            "update": self.update_config("update", old.update),
            "rollback": self.update_config("rollback", old.rollback),
        }
        if self.image is not None:
            changes["image"] = self.image
        if self.replicas is not None:
            changes["replicas"] = self.replicas
        return dataclasses.replace(old, **changes)


def _port_named(port: PortConfig, flag: str) -> bool:
    """`--publish-rm` names a port by its target (`80`, `80/udp`) or `published:target`."""
    text, _, proto = flag.partition("/")
    if proto and proto != port.protocol.value:
        return False
    published, _, target = text.rpartition(":")
    if published and str(port.published) != published:
        return False
    return target == str(port.target)


@dataclass(frozen=True)
class ServiceRollback(ManagerRequest):
    """`service rollback`: back to the previous spec, with the service's rollback policy."""

    OP: ClassVar[str] = "service.rollback"
    WRITE: ClassVar[bool] = True
    service: str


@dataclass(frozen=True)
class ServiceRm(ManagerRequest):
    OP: ClassVar[str] = "service.rm"
    WRITE: ClassVar[bool] = True
    service: str


@dataclass(frozen=True)
class TaskReport(ManagerRequest):
    OP: ClassVar[str] = "task.report"
    WORKER: ClassVar[bool] = True
    WRITE: ClassVar[bool] = True
    task_id: str
    state: str
    container_id: str | None = None
    error: str | None = None
    exit_code: int | None = None


@dataclass(frozen=True)
class TaskAssigned(ManagerRequest):
    OP: ClassVar[str] = "task.assigned"
    WORKER: ClassVar[bool] = True
    # The state index of the caller's last answer: the manager holds the answer while its
    # state is still there (a long-poll), so a new assignment reaches the worker at once.
    index: int | None = None


_CLASSES: tuple[type[ManagerRequest], ...] = (
    JoinAdmit,
    Leave,
    NodeLs,
    NodeInspect,
    NodeUpdate,
    NodePromote,
    NodeDemote,
    NodeRm,
    NodeCa,
    NodeRevoke,
    NetworkCreate,
    NetworkRm,
    NetworkLs,
    NetworkInspect,
    IpAllocate,
    IpRelease,
    StateSnapshot,
    JoinToken,
    GossipRotate,
    GossipRetire,
    GossipReport,
    ReplicaFetch,
    ServiceCreate,
    ServiceLs,
    ServicePs,
    ServiceInspect,
    ServiceScale,
    ServiceUpdate,
    ServiceRollback,
    ServiceRm,
    TaskReport,
    TaskAssigned,
)
# op name -> class (request_types refuses two classes claiming one op).
REQUESTS: dict[str, type[ManagerRequest]] = {
    op: cls for op, cls in request_types(_CLASSES).items() if issubclass(cls, ManagerRequest)
}


def decode(op: str, args: Mapping[str, Any]) -> ManagerRequest:
    """The typed request for `op` and its arguments, or ClusterError(INVALID) saying what is
    wrong (an unknown operation, a missing, unknown or wrongly typed argument)."""
    cls = REQUESTS.get(op)
    if cls is None:
        raise ClusterError(ErrorKind.INVALID, f"unknown cluster operation {op!r}")
    # JSON null for an argument that has a default is that default, as the manager always
    # took it (the agent's typed requests send `label_add: null` for "none given").
    defaults = {
        f.name
        for f in dataclasses.fields(cls)  # type: ignore[arg-type]
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
    args = {k: v for k, v in args.items() if not (v is None and k in defaults)}
    try:
        request = decode_args(cls, args)
    except InvalidArgument as e:
        raise ClusterError(ErrorKind.INVALID, str(e)) from None
    assert isinstance(request, ManagerRequest)
    return request
