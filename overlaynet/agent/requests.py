"""Every operation an agent serves, as one frozen dataclass each (decoded once by `api`).

The field names are the wire's argument names, so the CLI's `{"op", "args"}` lines decode as
they always did. The agent dispatches on the class, never on the op string.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from overlaynet.agent.events import Events
from overlaynet.agent.watch import WatchChanges
from overlaynet.api import Request, check_seconds, request_types
from overlaynet.cluster import requests as cluster_rq
from overlaynet.dataplane.impair import ImpairRequest
from overlaynet.errors import InvalidArgument
from overlaynet.trace.requests import TRACE_REQUESTS

# `docker stop -t` takes any number; an hour is far beyond any graceful stop, and a bound
# keeps one request from holding a container's lock (and a worker thread) forever.
MAX_TIMEOUT = 3600.0
# Docker's default grace period before SIGKILL (`docker stop`, 10 s).
DEFAULT_STOP_TIMEOUT = 10.0
# Log reads: a socket buffer's worth per answer by default; 512 KiB at most keeps an answer
# under a megabyte once base64 has grown it by a third.
LOG_CHUNK = 65536
MAX_LOG_CHUNK = 1 << 19


def _check_env(items: tuple[str, ...]) -> None:
    for item in items:
        if "=" not in item or not item.split("=", 1)[0]:
            raise InvalidArgument(f"invalid environment variable {item!r}: use KEY=VALUE")


def labels_of(items: tuple[str, ...]) -> dict[str, str]:
    """`--label KEY=VALUE` (or KEY alone: an empty value, as Docker) → labels; the last wins."""
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not key:
            raise InvalidArgument(f"invalid label {item!r}: use KEY=VALUE")
        out[key] = value
    return out


@dataclass(frozen=True)
class Ping(Request):
    OP: ClassVar[str] = "ping"


@dataclass(frozen=True)
class Info(Request):
    OP: ClassVar[str] = "info"


@dataclass(frozen=True)
class HostKernel(Request):
    OP: ClassVar[str] = "host.kernel"


# ---- networks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetworkCreate(Request):
    OP: ClassVar[str] = "network.create"
    name: str
    driver: str = "bridge"
    subnet: str | None = None
    gateway: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    ip_range: str | None = None


@dataclass(frozen=True)
class NetworkLs(Request):
    OP: ClassVar[str] = "network.ls"


@dataclass(frozen=True)
class NetworkInspect(Request):
    OP: ClassVar[str] = "network.inspect"
    network: str


@dataclass(frozen=True)
class NetworkRm(Request):
    OP: ClassVar[str] = "network.rm"
    network: str


@dataclass(frozen=True)
class NetworkConnect(Request):
    OP: ClassVar[str] = "network.connect"
    network: str
    container: str
    ip: str | None = None
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class NetworkDisconnect(Request):
    OP: ClassVar[str] = "network.disconnect"
    network: str
    container: str


@dataclass(frozen=True)
class NetworkPeer(Request):
    """Add or remove a head-end replication peer of an overlay (no control plane)."""

    OP: ClassVar[str] = "network.peer"
    network: str
    host: str
    add: bool = True


@dataclass(frozen=True)
class NetworkFdb(Request):
    """Add or remove a remote endpoint of an overlay by hand."""

    OP: ClassVar[str] = "network.fdb"
    network: str
    mac: str
    host: str | None = None
    ip: str | None = None
    add: bool = True


# ---- containers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerCreate(Request):
    OP: ClassVar[str] = "container.create"
    image: str
    cmd: tuple[str, ...] = ()
    name: str | None = None
    network: str = "bridge"
    ip: str | None = None
    aliases: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    interactive: bool = False
    start: bool = False
    # `run -i` attached: the client's stdin travels with the request as one descriptor
    # (SCM_RIGHTS), as exec's streams do; the container reads it directly.
    attach: bool = False
    labels: tuple[str, ...] = ()  # `--label KEY=VALUE`
    hostname: str | None = None  # `run --hostname` (None: the short id, as Docker's)
    tty: bool = False  # `run -t`: a pseudo-terminal, its output in the log

    def check(self) -> None:
        _check_env(self.env)
        labels_of(self.labels)
        if self.attach and not (self.interactive and self.start):
            raise InvalidArgument("attach needs interactive and start (run -i)")


@dataclass(frozen=True)
class ContainerStart(Request):
    OP: ClassVar[str] = "container.start"
    container: str


@dataclass(frozen=True)
class ContainerStop(Request):
    OP: ClassVar[str] = "container.stop"
    container: str
    timeout: float = DEFAULT_STOP_TIMEOUT

    def check(self) -> None:
        check_seconds("timeout", self.timeout, MAX_TIMEOUT)


@dataclass(frozen=True)
class ContainerRm(Request):
    OP: ClassVar[str] = "container.rm"
    container: str
    force: bool = False


@dataclass(frozen=True)
class ContainerLs(Request):
    OP: ClassVar[str] = "container.ls"
    all: bool = False


@dataclass(frozen=True)
class ContainerInspect(Request):
    OP: ClassVar[str] = "container.inspect"
    container: str


@dataclass(frozen=True)
class ContainerWait(Request):
    OP: ClassVar[str] = "container.wait"
    container: str


@dataclass(frozen=True)
class ContainerTop(Request):
    OP: ClassVar[str] = "container.top"
    container: str


@dataclass(frozen=True)
class ContainerLogs(Request):
    """Up to `limit` bytes of a container's output from `offset`: the CLI follows a log by
    asking again from the offset the answer gives (it never reads the agent's files)."""

    OP: ClassVar[str] = "container.logs"
    container: str
    offset: int = 0
    limit: int = LOG_CHUNK

    def check(self) -> None:
        if self.offset < 0:
            raise InvalidArgument("argument 'offset' must be 0 or more")
        if not 1 <= self.limit <= MAX_LOG_CHUNK:
            raise InvalidArgument(f"argument 'limit' must be from 1 to {MAX_LOG_CHUNK}")


@dataclass(frozen=True)
class ContainerExec(Request):
    """Run a command in a running container, attached to the client's stdin, stdout and
    stderr, which travel with the request as file descriptors (SCM_RIGHTS). The answer is
    the command's exit code, sent when it ends; a client that hangs up ends the command."""

    OP: ClassVar[str] = "container.exec"
    container: str
    cmd: tuple[str, ...]
    env: tuple[str, ...] = ()
    term: str | None = None  # the client's TERM, given with -t

    def check(self) -> None:
        if not self.cmd:
            raise InvalidArgument(
                "exec needs a command: overlaynet exec CONTAINER COMMAND [ARG...]"
            )
        _check_env(self.env)


# ---- images --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageLs(Request):
    """The image catalog (overlaynet/images): what an image name can mean on this host."""

    OP: ClassVar[str] = "image.ls"


# ---- swarm ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwarmInit(Request):
    OP: ClassVar[str] = "swarm.init"
    advertise_addr: str | None = None
    ingress_subnet: str | None = None
    force_new_cluster: bool = False


@dataclass(frozen=True)
class SwarmJoin(Request):
    OP: ClassVar[str] = "swarm.join"
    token: str
    remote: str
    advertise_addr: str | None = None


@dataclass(frozen=True)
class SwarmJoinToken(Request):
    OP: ClassVar[str] = "swarm.join_token"
    role: str
    rotate: bool = False


@dataclass(frozen=True)
class SwarmLeave(Request):
    OP: ClassVar[str] = "swarm.leave"
    force: bool = False


# Node and service management is answered by the managers: the agent decodes their own request
# classes (the same checks, once) and passes the requests on as they are.
CLUSTER_REQUESTS: tuple[type[Request], ...] = (
    cluster_rq.NodeLs,
    cluster_rq.NodeInspect,
    cluster_rq.NodeUpdate,
    cluster_rq.NodePromote,
    cluster_rq.NodeDemote,
    cluster_rq.NodeRm,
    cluster_rq.NodeCa,
    cluster_rq.NodeRevoke,
    cluster_rq.ServiceCreate,
    cluster_rq.ServiceLs,
    cluster_rq.ServicePs,
    cluster_rq.ServiceInspect,
    cluster_rq.ServiceScale,
    cluster_rq.ServiceUpdate,
    cluster_rq.ServiceRollback,
    cluster_rq.ServiceRm,
)


@dataclass(frozen=True)
class GossipMembers(Request):
    OP: ClassVar[str] = "gossip.members"


@dataclass(frozen=True)
class GossipEndpoints(Request):
    OP: ClassVar[str] = "gossip.endpoints"
    network: str


@dataclass(frozen=True)
class Stats(Request):
    """Every counter of the agent's planes, grouped by plane (`overlaynet stats`)."""

    OP: ClassVar[str] = "stats"


@dataclass(frozen=True)
class DnsRecords(Request):
    """The names a container on `network` resolves, with TTLs and where each came from."""

    OP: ClassVar[str] = "dns.records"
    network: str


@dataclass(frozen=True)
class NetworkLb(Request):
    """A network's load balancing on this node: each VIP with its backends, their connection
    counts, and the nft rules as installed in the network's sandbox (`network lb NET`)."""

    OP: ClassVar[str] = "network.lb"
    network: str


REQUESTS: dict[str, type[Request]] = request_types(
    [
        Ping,
        Info,
        HostKernel,
        NetworkCreate,
        NetworkLs,
        NetworkInspect,
        NetworkRm,
        NetworkConnect,
        NetworkDisconnect,
        NetworkPeer,
        NetworkFdb,
        ContainerCreate,
        ContainerStart,
        ContainerStop,
        ContainerRm,
        ContainerLs,
        ContainerInspect,
        ContainerWait,
        ContainerTop,
        ContainerLogs,
        ContainerExec,
        ImageLs,
        SwarmInit,
        SwarmJoin,
        SwarmJoinToken,
        SwarmLeave,
        *CLUSTER_REQUESTS,
        GossipMembers,
        GossipEndpoints,
        Stats,
        DnsRecords,
        NetworkLb,
        Events,
        ImpairRequest,
        WatchChanges,
        *TRACE_REQUESTS,
    ]
)
