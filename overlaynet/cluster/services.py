"""A service's desired shape: the spec `service create` builds, validated before anything uses it.

Every record here is a frozen dataclass that checks itself on construction, so an invalid spec
cannot exist: the manager refuses the command (a ClusterError, kind "invalid") and nothing
changes. The `--publish` and `--constraint` flags are parsed here, with errors that name the
flag and say what is allowed. Defaults are Docker's (docker service create --help, swarmkit's
api/defaults); where overlaynet chooses differently the constant says why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from overlaynet.cluster.errors import ClusterError, ErrorKind, Role

# swarmkit controlapi validateAnnotations: a service name is a DNS label (it is resolved by
# name), so letters, digits, '-' and '_' inside, at most 63 characters (RFC 1035 section 2.3.4).
SERVICE_NAME_MAX = 63
_SERVICE_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
# POSIX environment names; Docker only refuses an empty name, but a name with '=' or a space
# can never be read back by the task's process.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
# TCP and UDP port numbers are 16 bits; 0 is not a port a client can connect to.
PORT_MIN, PORT_MAX = 1, 65535
# swarmkit's allocator hands ingress ports from this range when `published` is left out.
DYNAMIC_PORT_FIRST, DYNAMIC_PORT_LAST = 30000, 32767
# A cap on replicas so a typo (`--replicas 1000000`) is an error, not a million pending tasks.
REPLICAS_MAX = 10000

# Docker's restart policy defaults: condition any, delay 5 s, unlimited attempts, no window.
RESTART_DELAY_DEFAULT = 5.0
# Docker's update and rollback defaults (docker service create --help): parallelism 1,
# delay 0 s, failure action pause, monitor 5 s, max failure ratio 0, order stop-first.
UPDATE_PARALLELISM_DEFAULT = 1
UPDATE_MONITOR_DEFAULT = 5.0
# Docker's health check defaults (docker run --help): 30 s interval and timeout, 3 retries.
HEALTH_INTERVAL_DEFAULT = 30.0
HEALTH_TIMEOUT_DEFAULT = 30.0
HEALTH_RETRIES_DEFAULT = 3


def _invalid(message: str) -> ClusterError:
    return ClusterError(ErrorKind.INVALID, message)


def _enum(cls: type[Any], value: Any, what: str) -> Any:
    try:
        return cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in cls)
        raise _invalid(f"invalid {what} {value!r}: use {allowed}") from None


def _seconds(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise _invalid(f"invalid {what} {value!r}: use a duration of 0 seconds or more")
    return float(value)


def _count(value: int, what: str, least: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _invalid(f"invalid {what} {value!r}: use a whole number of {least} or more")
    return value


class ServiceMode(StrEnum):
    REPLICATED = "replicated"
    GLOBAL = "global"


class EndpointMode(StrEnum):
    VIP = "vip"
    DNSRR = "dnsrr"


class PublishMode(StrEnum):
    INGRESS = "ingress"
    HOST = "host"


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


class RestartCondition(StrEnum):
    NONE = "none"
    ON_FAILURE = "on-failure"
    ANY = "any"


class FailureAction(StrEnum):
    PAUSE = "pause"
    CONTINUE = "continue"
    ROLLBACK = "rollback"


class UpdateOrder(StrEnum):
    STOP_FIRST = "stop-first"
    START_FIRST = "start-first"


def _check_port(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not PORT_MIN <= value <= PORT_MAX:
        raise _invalid(f"invalid {what} port {value!r}: use {PORT_MIN} to {PORT_MAX}")
    return value


@dataclass(frozen=True)
class PortConfig:
    """One published port. `published` None: ingress gets one from 30000-32767 at creation."""

    target: int
    published: int | None = None
    protocol: Protocol = Protocol.TCP
    mode: PublishMode = PublishMode.INGRESS

    def __post_init__(self) -> None:
        _check_port(self.target, "target")
        if self.published is not None:
            _check_port(self.published, "published")
        object.__setattr__(self, "protocol", _enum(Protocol, self.protocol, "protocol"))
        object.__setattr__(self, "mode", _enum(PublishMode, self.mode, "publish mode"))

    def __str__(self) -> str:
        """As `service ls` shows it: `*:8080->80/tcp`."""
        published = "*" if self.published is None else str(self.published)
        return f"*:{published}->{self.target}/{self.protocol.value}"


def _parse_port_number(text: str, what: str, flag: str) -> int:
    if not text.isdigit():
        raise _invalid(f"invalid --publish {flag!r}: {what} port {text!r} is not a number")
    return _check_port(int(text), what)


def parse_publish(flag: str) -> PortConfig:
    """`--publish`: the long form `[mode=ingress|host,]published=P,target=T[,protocol=tcp|udp]`
    or the short form `P:T[/udp]` (or `T[/udp]`: ingress picks the published port)."""
    text = flag.strip()
    if not text:
        raise _invalid("invalid --publish '': give published:target or target=PORT")
    if "=" in text:
        return _parse_publish_long(text)
    proto: str = Protocol.TCP.value
    if "/" in text:
        text, _, proto = text.partition("/")
    parts = text.split(":")
    if len(parts) > 2:
        raise _invalid(
            f"invalid --publish {flag!r}: the short form is published:target[/protocol]; "
            "a host address cannot be given for a service"
        )
    protocol = _enum(Protocol, proto, "protocol")
    if len(parts) == 1:
        return PortConfig(target=_parse_port_number(parts[0], "target", flag), protocol=protocol)
    return PortConfig(
        target=_parse_port_number(parts[1], "target", flag),
        published=_parse_port_number(parts[0], "published", flag),
        protocol=protocol,
    )


# Docker's long-form keys (opts.PortOpt.Set).
_PUBLISH_KEYS = ("mode", "published", "target", "protocol")


def _parse_publish_long(flag: str) -> PortConfig:
    fields: dict[str, str] = {}
    for item in flag.split(","):
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not value:
            raise _invalid(f"invalid --publish {flag!r}: {item!r} is not key=value")
        if key not in _PUBLISH_KEYS:
            raise _invalid(
                f"invalid --publish {flag!r}: unknown field {key!r} "
                "(use mode, published, target, protocol)"
            )
        if key in fields:
            raise _invalid(f"invalid --publish {flag!r}: {key} is given twice")
        fields[key] = value.strip()
    if "target" not in fields:
        raise _invalid(f"invalid --publish {flag!r}: missing target=PORT")
    mode = _enum(PublishMode, fields.get("mode", "ingress").lower(), "publish mode")
    target = _parse_port_number(fields["target"], "target", flag)
    published: int | None = None
    if "published" in fields:
        published = _parse_port_number(fields["published"], "published", flag)
    elif mode is PublishMode.HOST:
        # Docker would pick a random host port here; the tutorial's database
        # (`mode=host,target=1433`) is then reached on 1433, so overlaynet publishes the target.
        published = target
    return PortConfig(
        target=target,
        published=published,
        protocol=_enum(Protocol, fields.get("protocol", "tcp").lower(), "protocol"),
        mode=mode,
    )


class ConstraintOp(StrEnum):
    EQ = "=="
    NE = "!="


@dataclass(frozen=True)
class NodeFacts:
    """What a placement constraint can look at on a node."""

    id: str
    hostname: str
    role: Role
    labels: Mapping[str, str] = field(default_factory=dict)


_CONSTRAINT_KEYS = ("node.id", "node.hostname", "node.role")
_LABEL_PREFIX = "node.labels."


@dataclass(frozen=True)
class Constraint:
    """`--constraint node.hostname==node1` (or !=; node.id, node.role, node.labels.K)."""

    key: str
    op: ConstraintOp
    value: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "op", _enum(ConstraintOp, self.op, "constraint operator"))
        label = self.key.startswith(_LABEL_PREFIX) and len(self.key) > len(_LABEL_PREFIX)
        if self.key not in _CONSTRAINT_KEYS and not label:
            raise _invalid(
                f"invalid constraint key {self.key!r}: use node.id, node.hostname, node.role "
                "or node.labels.<name>"
            )
        if self.key == "node.role" and self.value not in (Role.MANAGER, Role.WORKER):
            raise _invalid(f"invalid node.role {self.value!r}: use manager or worker")

    def matches(self, node: NodeFacts) -> bool:
        if self.key == "node.id":
            have: str | None = node.id
        elif self.key == "node.hostname":
            have = node.hostname
        elif self.key == "node.role":
            have = node.role.value
        else:
            have = node.labels.get(self.key[len(_LABEL_PREFIX) :])
        # swarmkit constraint.Match: a missing label is unequal to anything.
        equal = have is not None and have == self.value
        return equal if self.op is ConstraintOp.EQ else not equal

    def __str__(self) -> str:
        return f"{self.key}{self.op.value}{self.value}"


def parse_constraint(flag: str) -> Constraint:
    """`--constraint KEY==VALUE` or `KEY!=VALUE`; spaces around the operator are allowed."""
    for op in (ConstraintOp.EQ, ConstraintOp.NE):
        key, sep, value = flag.partition(op.value)
        if sep:
            key, value = key.strip(), value.strip()
            if not key or not value or "=" in value:
                break
            return Constraint(key, op, value)
    raise _invalid(
        f"invalid constraint {flag!r}: use KEY==VALUE or KEY!=VALUE "
        "(e.g. node.hostname==node1, node.role==manager, node.labels.zone==a)"
    )


def matches_all(constraints: tuple[Constraint, ...], node: NodeFacts) -> bool:
    return all(c.matches(node) for c in constraints)


@dataclass(frozen=True)
class RestartPolicy:
    """`--restart-condition`, `--restart-delay`, `--restart-max-attempts` (0: unlimited)."""

    condition: RestartCondition = RestartCondition.ANY
    delay: float = RESTART_DELAY_DEFAULT
    max_attempts: int = 0

    def __post_init__(self) -> None:
        condition = _enum(RestartCondition, self.condition, "restart condition")
        object.__setattr__(self, "condition", condition)
        object.__setattr__(self, "delay", _seconds(self.delay, "restart delay"))
        _count(self.max_attempts, "restart max attempts")


@dataclass(frozen=True)
class UpdateConfig:
    """`--update-*` (and `--rollback-*`, the same fields): how a spec change rolls out."""

    parallelism: int = UPDATE_PARALLELISM_DEFAULT
    delay: float = 0.0
    failure_action: FailureAction = FailureAction.PAUSE
    monitor: float = UPDATE_MONITOR_DEFAULT
    max_failure_ratio: float = 0.0
    order: UpdateOrder = UpdateOrder.STOP_FIRST

    def __post_init__(self) -> None:
        # Docker: parallelism 0 updates every task at once.
        _count(self.parallelism, "update parallelism")
        object.__setattr__(self, "delay", _seconds(self.delay, "update delay"))
        action = _enum(FailureAction, self.failure_action, "update failure action")
        object.__setattr__(self, "failure_action", action)
        object.__setattr__(self, "monitor", _seconds(self.monitor, "update monitor"))
        ratio = self.max_failure_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise _invalid(f"invalid update max failure ratio {ratio!r}: use 0 to 1")
        object.__setattr__(self, "max_failure_ratio", float(ratio))
        object.__setattr__(self, "order", _enum(UpdateOrder, self.order, "update order"))


@dataclass(frozen=True)
class HealthCheck:
    """`--health-cmd` and friends; `test` is Docker's form: ("CMD-SHELL", cmd), ("CMD", argv…)
    or ("NONE",) for `--no-healthcheck`."""

    test: tuple[str, ...]
    interval: float = HEALTH_INTERVAL_DEFAULT
    timeout: float = HEALTH_TIMEOUT_DEFAULT
    retries: int = HEALTH_RETRIES_DEFAULT
    start_period: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "test", tuple(self.test))
        kind = self.test[0] if self.test else ""
        if kind == "NONE":
            if len(self.test) != 1:
                raise _invalid("invalid health check: NONE takes no command")
        elif kind not in ("CMD", "CMD-SHELL") or len(self.test) < 2 or not self.test[1]:
            raise _invalid(
                "invalid health check: give a command (--health-cmd) or --no-healthcheck"
            )
        # Docker refuses intervals and timeouts under 1 ms; 0 would make a busy loop.
        for what, value in (("interval", self.interval), ("timeout", self.timeout)):
            if _seconds(value, f"health {what}") < 0.001:
                raise _invalid(f"invalid health {what} {value!r}: use at least 1ms")
        object.__setattr__(self, "interval", float(self.interval))
        object.__setattr__(self, "timeout", float(self.timeout))
        _count(self.retries, "health retries", least=1)
        object.__setattr__(self, "start_period", _seconds(self.start_period, "health start period"))

    @property
    def disabled(self) -> bool:
        return self.test == ("NONE",)


@dataclass(frozen=True)
class ServiceSpec:
    """What `service create` asks for. `replicas` is None in global mode (one task per node);
    left out in replicated mode it is 1, as `docker service create` has it."""

    name: str
    image: str
    command: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    replicas: int | None = None
    mode: ServiceMode = ServiceMode.REPLICATED
    networks: tuple[str, ...] = ()
    endpoint_mode: EndpointMode = EndpointMode.VIP
    ports: tuple[PortConfig, ...] = ()
    constraints: tuple[Constraint, ...] = ()
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    rollback: UpdateConfig = field(default_factory=UpdateConfig)
    healthcheck: HealthCheck | None = None

    def __post_init__(self) -> None:
        if (
            not isinstance(self.name, str)
            or len(self.name) > SERVICE_NAME_MAX
            or not _SERVICE_NAME.match(self.name)
        ):
            raise _invalid(
                f"invalid service name {self.name!r}: use at most {SERVICE_NAME_MAX} letters, "
                "digits, '-' and '_', starting and ending with a letter or digit"
            )
        if not isinstance(self.image, str) or not self.image.strip() or " " in self.image:
            raise _invalid(f"invalid image {self.image!r}: give an image name")
        for name in ("command", "env", "networks", "ports", "constraints"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for item in self.env:
            key, sep, _ = item.partition("=")
            if not sep or not _ENV_NAME.match(key):
                raise _invalid(f"invalid --env {item!r}: use NAME=VALUE")
        mode = _enum(ServiceMode, self.mode, "mode")
        object.__setattr__(self, "mode", mode)
        if mode is ServiceMode.GLOBAL:
            if self.replicas is not None:
                raise _invalid("replicas can only be used with replicated mode")
        elif self.replicas is None:
            object.__setattr__(self, "replicas", 1)
        else:
            _count(self.replicas, "replicas")
            if self.replicas > REPLICAS_MAX:
                raise _invalid(f"invalid replicas {self.replicas}: at most {REPLICAS_MAX}")
        if len(set(self.networks)) != len(self.networks):
            raise _invalid("a network is given twice: attach each network once")
        endpoint_mode = _enum(EndpointMode, self.endpoint_mode, "endpoint mode")
        object.__setattr__(self, "endpoint_mode", endpoint_mode)
        self._check_ports()

    def _check_ports(self) -> None:
        seen: set[tuple[int, Protocol]] = set()
        for port in self.ports:
            if not isinstance(port, PortConfig):
                raise _invalid(f"invalid port {port!r}")
            if self.endpoint_mode is EndpointMode.DNSRR and port.mode is PublishMode.INGRESS:
                # swarmkit controlapi: the routing mesh balances through a VIP.
                raise _invalid(
                    f"port {port.target} is published in ingress mode, which needs a VIP: "
                    "use --endpoint-mode vip, or publish with mode=host"
                )
            if port.published is None:
                continue
            key = (port.published, port.protocol)
            if key in seen:
                raise _invalid(
                    f"published port {port.published}/{port.protocol.value} is given twice"
                )
            seen.add(key)
        for c in self.constraints:
            if not isinstance(c, Constraint):
                raise _invalid(f"invalid constraint {c!r}")

    @property
    def host_ports(self) -> frozenset[tuple[int, Protocol]]:
        """The host-mode ports a task of this service holds on its node."""
        return frozenset(
            (p.published, p.protocol)
            for p in self.ports
            if p.mode is PublishMode.HOST and p.published is not None
        )


@dataclass(frozen=True)
class Service:
    """A service as the managers hold it: the spec and its identity. `version` counts spec
    changes (a task records the version it was made from, for rolling updates)."""

    id: str
    spec: ServiceSpec
    created: float
    updated: float
    version: int = 1


def assign_ingress_ports(spec: ServiceSpec, taken: set[tuple[int, Protocol]]) -> ServiceSpec:
    """Give every ingress port without a published port a free one from 30000-32767, as
    swarmkit's port allocator does; `taken` is every published (port, protocol) in the swarm.
    Raises a ClusterError (conflict) for a published port already used by another service."""
    for port in spec.ports:
        if port.published is not None and (port.published, port.protocol) in taken:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"port {port.published}/{port.protocol.value} is already in use by another service",
            )
    used = set(taken) | {(p.published, p.protocol) for p in spec.ports if p.published}
    out = []
    for port in spec.ports:
        if port.published is None:
            free = next(
                (
                    n
                    for n in range(DYNAMIC_PORT_FIRST, DYNAMIC_PORT_LAST + 1)
                    if (n, port.protocol) not in used
                ),
                None,
            )
            if free is None:
                raise ClusterError(ErrorKind.CONFLICT, "no dynamic ingress ports left")
            used.add((free, port.protocol))
            port = PortConfig(port.target, free, port.protocol, port.mode)
        out.append(port)
    return ServiceSpec(**{**_fields(spec), "ports": tuple(out)})


def _fields(spec: ServiceSpec) -> dict[str, Any]:
    return {f: getattr(spec, f) for f in spec.__dataclass_fields__}


# ----- documents: what the store and the followers keep (JSON has no tuples or enums) -----


def spec_doc(spec: ServiceSpec) -> dict[str, Any]:
    doc = asdict(spec)
    doc["constraints"] = [str(c) for c in spec.constraints]
    return _plain(doc)  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, StrEnum):
        return value.value
    return value


def spec_from_doc(doc: Mapping[str, Any]) -> ServiceSpec:
    """The inverse of spec_doc; a malformed document is a ClusterError, as a bad command is."""
    try:
        health = doc.get("healthcheck")
        return ServiceSpec(
            name=doc["name"],
            image=doc["image"],
            command=tuple(doc.get("command", ())),
            env=tuple(doc.get("env", ())),
            replicas=doc.get("replicas"),
            mode=doc.get("mode", ServiceMode.REPLICATED),
            networks=tuple(doc.get("networks", ())),
            endpoint_mode=doc.get("endpoint_mode", EndpointMode.VIP),
            ports=tuple(PortConfig(**p) for p in doc.get("ports", ())),
            constraints=tuple(parse_constraint(c) for c in doc.get("constraints", ())),
            restart=RestartPolicy(**doc.get("restart", {})),
            update=UpdateConfig(**doc.get("update", {})),
            rollback=UpdateConfig(**doc.get("rollback", {})),
            healthcheck=None
            if health is None
            else HealthCheck(**{**health, "test": tuple(health["test"])}),
        )
    except (KeyError, TypeError, AttributeError) as e:
        raise _invalid(f"malformed service spec: {e!r}") from None
