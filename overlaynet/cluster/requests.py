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
    RestartPolicy,
    ServiceSpec,
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


@dataclass(frozen=True)
class ServiceCreate(ManagerRequest):
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


_CLASSES: tuple[type[ManagerRequest], ...] = (
    JoinAdmit,
    Leave,
    NodeLs,
    NodeInspect,
    NodeUpdate,
    NodePromote,
    NodeDemote,
    NodeRm,
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
