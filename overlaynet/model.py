"""The records a host agent keeps: networks, containers and their endpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from overlaynet.names import KernelNames, short_id

PREDEFINED_NETWORKS = ("bridge", "host", "none")
# Docker's default bridge is docker0; ours carries the project's link prefix.
DEFAULT_BRIDGE_IFNAME = "on-docker0"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
# Ethernet MTU; overlays take 50 bytes off for the VXLAN/UDP/IP/Ethernet headers (RFC 7348).
BRIDGE_MTU = 1500
OVERLAY_MTU = 1450


class Driver(StrEnum):
    BRIDGE = "bridge"
    HOST = "host"
    NULL = "null"
    OVERLAY = "overlay"


class Status(StrEnum):
    CREATED = "created"
    RUNNING = "running"
    EXITED = "exited"


@dataclass
class Network:
    id: str
    name: str
    driver: Driver
    created: str
    scope: str = "local"
    subnet: str | None = None
    gateway: str | None = None
    mtu: int = BRIDGE_MTU
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    internal: bool = False
    attachable: bool = False
    vni: int | None = None
    ip_range: str | None = None
    # Overlay networks without a control plane: head-end replication peers (underlay IPs) and
    # remote endpoints given by hand, {"mac", "host", "ip"}; kept so a restart restores them.
    peers: list[str] = field(default_factory=list)
    static_endpoints: list[dict[str, str | None]] = field(default_factory=list)
    # The swarm's routing-mesh network (`"Ingress": true` in inspect, as Docker's).
    ingress: bool = False

    @property
    def bridge_ifname(self) -> str | None:
        if self.driver not in (Driver.BRIDGE, Driver.OVERLAY):
            return None
        return self.options.get(BRIDGE_NAME_OPTION) or KernelNames.bridge(self.id)

    @property
    def has_name_resolution(self) -> bool:
        """Docker resolves names on user-defined networks only, never on the default bridge."""
        return self.driver in (Driver.BRIDGE, Driver.OVERLAY) and self.name != "bridge"


@dataclass
class Endpoint:
    id: str
    network_id: str
    ifname: str
    ip: str | None = None
    mac: str | None = None
    aliases: list[str] = field(default_factory=list)


# The label of the agent's own containers (`lb_<net>`, `ingress-sbox`), naming the network
# they serve: Docker's load-balancer sandboxes are no containers at all, so `ps` (even -a) and
# the embedded DNS never show them.
SANDBOX_LABEL = "org.overlaynet.sandbox"
# Where sandboxes made before labels carried that marker (a restarted agent still knows them).
SANDBOX_ENV = "OVERLAYNET_LB"


def is_sandbox(c: Container) -> bool:
    return SANDBOX_LABEL in c.labels or any(e.startswith(SANDBOX_ENV + "=") for e in c.env)


@dataclass
class Container:
    id: str
    name: str
    image: str
    cmd: list[str]
    created: str
    endpoints: list[Endpoint] = field(default_factory=list)
    network_mode: str = "bridge"
    desired_running: bool = False
    status: Status = Status.CREATED
    pid: int | None = None
    pid_start: int | None = None
    exit_code: int | None = None
    started_at: str | None = None
    finished_at: str | None = None
    env: list[str] = field(default_factory=list)
    open_stdin: bool = False
    # `run --label K=V` (inspect's Config.Labels); services' tasks and the agent's own
    # sandboxes carry theirs (agent/tasks.py, agent/lb.py).
    labels: dict[str, str] = field(default_factory=dict)
    # `run --hostname` (inspect's Config.Hostname); empty: the short id, Docker's default.
    hostname: str = ""
    # `run -t`: its process runs on a pseudo-terminal (inspect's Config.Tty).
    tty: bool = False

    @property
    def uts_name(self) -> str:
        """The container's hostname: `run --hostname`'s, else its short id (as Docker's)."""
        return self.hostname or short_id(self.id)

    def endpoint_on(self, network_id: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.network_id == network_id), None)


def to_doc(obj: Network | Container) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def network_from_doc(doc: dict[str, Any]) -> Network:
    return Network(**{**doc, "driver": Driver(doc["driver"])})


def container_from_doc(doc: dict[str, Any]) -> Container:
    eps = [Endpoint(**e) for e in doc.get("endpoints", [])]
    return Container(**{**doc, "endpoints": eps, "status": Status(doc["status"])})
