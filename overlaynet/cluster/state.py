"""The swarm managers' desired state as a pure state machine: nodes, overlay networks, addresses,
services and their tasks.

Commands validate everything first and only then change the state, so a refused command (a
ClusterError) leaves it exactly as it was. Every change is also recorded as a `Change` (one record
put or deleted) that the shell drains with `take_changes()`: the store persists those, and
follower managers replay them, so the leader's state, its disk and its followers never need a
second description of what a command did. Time (`now`) and randomness (`rand`) are arguments.

Services: the commands only record what is wanted (a spec, a replica count, a removal) and what
workers report; the leader's orchestration pass (`orchestrate`) turns that into tasks with
addresses on nodes, using the pure cores in orchestrator.py and scheduler.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any, TypeVar

from overlaynet.cluster import ipam, tokens, update
from overlaynet.cluster.errors import Availability as Availability
from overlaynet.cluster.errors import ClusterError as ClusterError
from overlaynet.cluster.errors import ErrorKind as ErrorKind
from overlaynet.cluster.errors import ManagerStatus as ManagerStatus
from overlaynet.cluster.errors import Role as Role
from overlaynet.cluster.keyrotation import KeyStage
from overlaynet.cluster.orchestrator import Action, ShutdownTask, apply_actions, reconcile
from overlaynet.cluster.scheduler import NodeView, Placement, schedule
from overlaynet.cluster.services import (
    EndpointMode,
    NodeFacts,
    Protocol,
    PublishMode,
    Service,
    ServiceMode,
    ServiceSpec,
    assign_ingress_ports,
    spec_doc,
    spec_from_doc,
)
from overlaynet.cluster.tasks import (
    Task,
    TaskState,
    task_doc,
    task_from_doc,
    transition,
)
from overlaynet.cluster.tokens import RandomBytes
from overlaynet.cluster.update import UpdateStatus, status_doc, status_from_doc
from overlaynet.dataplane import datakeys
from overlaynet.names import BadName, check_object_name
from overlaynet.wire.vxlan import VNI_MAX

# Docker's overlay driver hands out VXLAN ids from 4096 up (libnetwork overlay vxlanIDStart);
# the ingress network takes the first one. The last is wire.vxlan.VNI_MAX (24 bits, RFC 7348).
VNI_FIRST = 4096
# The routing mesh's network. Docker's tutorials show it on 10.255.0.0/16 (and DESIGN.md keeps
# that), out of the way of the user pool, so the first user overlay gets 10.0.0.0/24 and the
# tutorial's first container 10.0.0.2. `swarm init --ingress-subnet` chooses another.
INGRESS_NAME = "ingress"
INGRESS_SUBNET = IPv4Network("10.255.0.0/16")
# swarmkit's cluster management port (`--listen-addr 0.0.0.0:2377`).
MANAGER_PORT = 2377
# 256-bit keys: AES-256-GCM for node credentials, and the gossip keyring's first key.
KEY_BYTES = 32
# Hostnames come from the joining host; RFC 1035 caps a full name at 253 characters.
HOSTNAME_MAX = 253
# Endpoint ids come from agents (64 hex digits there); the cap only stops abuse.
ENDPOINT_ID_MAX = 128
# Gossip keys a node accepts at once: the primary and the two before it, as memberlist's keyring
# is used for rotation (install, use, remove) without members losing each other meanwhile.
GOSSIP_KEYRING_SIZE = 3

# Node label keys and values (`node update --label-add`): Docker caps neither; these only stop a
# worker's agent or a typo from filling the state with megabytes.
LABEL_KEY_MAX = 128
LABEL_VALUE_MAX = 1024
# The managers' own addresses (service tasks' and VIPs) belong to no node: no worker may release
# them (ip.release checks the owner) and `node rm` leaves them alone. The orchestration pass frees
# a task's once the task has ended (its container is gone), a VIP once its service is removed and
# none of its tasks is still running anywhere.
MANAGED = ""
# A VIP's endpoint id: its service's id behind a prefix no task id (base36) can have.
VIP_PREFIX = "vip-"
# A node's load-balancer endpoint on a network (Docker's lb_<net> sandbox, and on `ingress` the
# ingress sandbox): the node's id behind its own prefix. Every node gets one on every network a
# vip-mode service uses, as swarmkit's allocator gives nodes their LB attachments, since any
# node may have to reach a VIP or answer a published port.
LB_PREFIX = "lb-"
# What a worker may report; new, pending, assigned and orphaned are the managers' to set.
WORKER_STATES = frozenset(
    {
        TaskState.ACCEPTED,
        TaskState.PREPARING,
        TaskState.STARTING,
        TaskState.RUNNING,
        TaskState.COMPLETE,
        TaskState.FAILED,
        TaskState.SHUTDOWN,
        TaskState.REJECTED,
    }
)
# A report's error text is shown by `service ps`; a process's stderr can be long, the column not.
REPORT_TEXT_MAX = 512
# Container ids come from workers' runtimes (64 hex digits there); the cap only stops abuse.
CONTAINER_ID_MAX = 128

_T = TypeVar("_T")
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
_ENDPOINT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Cluster:
    id: str
    created: float
    leader_id: str
    # The root key names the cluster (its digest is in every token); secrets are token secrets.
    root_key: str
    worker_secret: str
    manager_secret: str
    gossip_key: str
    # Keys replaced by rotations, newest first: still accepted while every member switches.
    previous_gossip_keys: tuple[str, ...] = ()
    # A staged rotation (keyrotation.py): the next key, installed everywhere before it is used,
    # the stage it is at, and whether another rotation must follow (a node was removed while
    # this one ran, and may hold the new key).
    pending_gossip_key: str = ""
    gossip_rotation: KeyStage = KeyStage.IDLE
    gossip_rotation_again: bool = False
    # Bumped by `swarm init --force-new-cluster` (issue 14): the Raft password is derived from
    # the root key and this, so members of the Raft cluster before it cannot vote in the new one.
    raft_epoch: int = 0

    @property
    def gossip_keyring(self) -> list[str]:
        """The primary key first, then those still accepted, then the staged one (nodes install
        it; they seal with the first)."""
        staged = [self.pending_gossip_key] if self.pending_gossip_key else []
        return [self.gossip_key, *self.previous_gossip_keys, *staged]

    @property
    def digest(self) -> str:
        return tokens.cluster_digest(bytes.fromhex(self.root_key))

    def secret_for(self, role: Role) -> str:
        return self.manager_secret if role is Role.MANAGER else self.worker_secret

    def token(self, role: Role) -> str:
        return tokens.make_token(self.digest, self.secret_for(role))


@dataclass(frozen=True)
class Node:
    id: str
    hostname: str
    # The advertise address (IPv4) other hosts reach this one at: gossip and VXLAN.
    addr: str
    role: Role
    availability: Availability
    manager_status: ManagerStatus | None
    # "ip:port" of this node's cluster management server, for managers only.
    manager_addr: str | None
    created: float
    updated: float
    # `node update --label-add K=V`, for `--constraint node.labels.K==V`.
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def facts(self) -> NodeFacts:
        return NodeFacts(self.id, self.hostname, self.role, dict(self.labels))


@dataclass(frozen=True)
class OverlayNetwork:
    id: str
    name: str
    vni: int
    subnet: str
    gateway: str
    attachable: bool
    ingress: bool
    created: float
    labels: Mapping[str, str] = field(default_factory=dict)
    driver: str = "overlay"
    scope: str = "swarm"
    # --opt encrypted (issue 18): the data keys, primary first (datakeys), rotated each period.
    encrypted: bool = False
    key_period: float = datakeys.ROTATION_PERIOD
    data_keys: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Allocation:
    network_id: str
    endpoint_id: str
    ip: str
    node_id: str


@dataclass(frozen=True)
class Change:
    """One record put (`doc` set) or deleted (`doc` None): the unit of persistence and replay."""

    kind: str
    key: str
    doc: dict[str, Any] | None


# Record kinds, in the order a snapshot lists them (a replayed snapshot is always consistent).
CLUSTER, NODE, CREDENTIAL, NETWORK, ALLOCATION, SERVICE, TASK = (
    "cluster",
    "node",
    "credential",
    "network",
    "allocation",
    "service",
    "task",
)
# A service's rolling update (UpdateStatus with PreviousSpec), keyed by service id.
UPDATE_STATUS = "update_status"
KINDS = (CLUSTER, NODE, CREDENTIAL, NETWORK, ALLOCATION, SERVICE, TASK, UPDATE_STATUS)
_CLUSTER_KEY = "cluster"


def _doc(record: Any) -> dict[str, Any]:
    doc = dataclasses.asdict(record)
    if "labels" in doc:
        doc["labels"] = dict(doc["labels"])
    if "previous_gossip_keys" in doc:
        # JSON has no tuples: the document is the same before and after the store.
        doc["previous_gossip_keys"] = list(doc["previous_gossip_keys"])
    return doc


def _cluster_from_doc(doc: dict[str, Any]) -> Cluster:
    return Cluster(
        **{
            **doc,
            "previous_gossip_keys": tuple(doc.get("previous_gossip_keys", ())),
            "gossip_rotation": KeyStage(doc.get("gossip_rotation", KeyStage.IDLE)),
        }
    )


def _node_from_doc(doc: dict[str, Any]) -> Node:
    status = doc.get("manager_status")
    return Node(
        **{
            **doc,
            "role": Role(doc["role"]),
            "availability": Availability(doc["availability"]),
            "manager_status": None if status is None else ManagerStatus(status),
        }
    )


def service_doc(service: Service) -> dict[str, Any]:
    return {
        "id": service.id,
        "spec": spec_doc(service.spec),
        "created": service.created,
        "updated": service.updated,
        "version": service.version,
    }


def _service_from_doc(doc: dict[str, Any]) -> Service:
    return Service(
        id=doc["id"],
        spec=spec_from_doc(doc["spec"]),
        created=doc["created"],
        updated=doc["updated"],
        version=doc["version"],
    )


def _addresses_up_to(subnet: IPv4Network, top: IPv4Address) -> set[IPv4Address]:
    """Every address of `subnet` up to `top` (what a serial allocation skips)."""
    first = int(subnet.network_address)
    return {IPv4Address(n) for n in range(first, int(top) + 1)}


def vip_endpoint_id(service_id: str) -> str:
    return f"{VIP_PREFIX}{service_id}"


def lb_endpoint_id(node_id: str) -> str:
    return f"{LB_PREFIX}{node_id}"


def _allocation_key(network_id: str, endpoint_id: str) -> str:
    return f"{network_id}/{endpoint_id}"


def check_addr(addr: str) -> str:
    """A node's advertise address: an IPv4 address (a port, if given, is not part of it)."""
    try:
        return str(IPv4Address(addr))
    except ValueError:
        raise ClusterError(
            ErrorKind.INVALID, f"invalid advertise address {addr!r}: expected an IPv4 address"
        ) from None


def _check_hostname(hostname: str) -> str:
    if not hostname or len(hostname) > HOSTNAME_MAX or not _HOSTNAME.match(hostname):
        raise ClusterError(
            ErrorKind.INVALID,
            f"invalid hostname {hostname!r}: use letters, digits, '.', '_' and '-'",
        )
    return hostname


def _check_endpoint_id(endpoint_id: str) -> str:
    if len(endpoint_id) > ENDPOINT_ID_MAX or not _ENDPOINT_ID.match(endpoint_id):
        raise ClusterError(
            ErrorKind.INVALID,
            f"invalid endpoint id {endpoint_id[:40]!r}: use at most {ENDPOINT_ID_MAX} letters, "
            "digits, '.', '_' and '-'",
        )
    return endpoint_id


def _check_label(key: str, value: str) -> None:
    if len(key) > LABEL_KEY_MAX or not _LABEL_KEY.match(key):
        raise ClusterError(
            ErrorKind.INVALID,
            f"invalid label {key[:40]!r}: use at most {LABEL_KEY_MAX} letters, digits, '.', "
            "'_', '/' and '-', starting with a letter or digit",
        )
    if len(value) > LABEL_VALUE_MAX:
        raise ClusterError(
            ErrorKind.INVALID, f"label {key} is too long: at most {LABEL_VALUE_MAX} characters"
        )


def _uses_ingress(spec: ServiceSpec) -> bool:
    return any(p.mode is PublishMode.INGRESS for p in spec.ports)


def _published(services: Iterable[Service], mode: PublishMode) -> set[tuple[int, Protocol]]:
    return {
        (p.published, p.protocol)
        for s in services
        for p in s.spec.ports
        if p.mode is mode and p.published is not None
    }


def _find(ref: str, what: str, items: list[_T], id_and_name: Callable[[_T], tuple[str, str]]) -> _T:
    """One item by exact name, else by unique id prefix; ambiguity is an error, not a guess."""
    by_name = [i for i in items if id_and_name(i)[1] == ref]
    if len(by_name) == 1:
        return by_name[0]
    if len(by_name) > 1:
        raise ClusterError(
            ErrorKind.INVALID, f"{what} name {ref!r} is ambiguous: use the {what} id"
        )
    by_prefix = [i for i in items if ref and id_and_name(i)[0].startswith(ref)]
    if len(by_prefix) == 1:
        return by_prefix[0]
    if len(by_prefix) > 1:
        raise ClusterError(
            ErrorKind.INVALID, f"{what} id prefix {ref!r} is ambiguous: give more characters"
        )
    raise ClusterError(ErrorKind.NOT_FOUND, f"{what} {ref} not found")


@dataclass(frozen=True)
class CredentialFacts:
    """When a node's credential was issued and, once `node ca revoke` ran, when it was revoked
    (None for either: issued before these were recorded, or not revoked)."""

    issued: float | None = None
    revoked: float | None = None


def _credential_doc(key: bytes, facts: CredentialFacts) -> dict[str, Any]:
    return {"key": key.hex(), "issued": facts.issued, "revoked": facts.revoked}


class ClusterState:
    """The whole desired state of one swarm, as the leader holds it (and followers copy it)."""

    def __init__(self) -> None:
        self.cluster: Cluster | None = None
        self.nodes: dict[str, Node] = {}
        self.credentials: dict[str, bytes] = {}
        self.credential_facts: dict[str, CredentialFacts] = {}
        self.networks: dict[str, OverlayNetwork] = {}
        self.allocations: dict[tuple[str, str], Allocation] = {}
        self.services: dict[str, Service] = {}
        self.tasks: dict[str, Task] = {}
        self.update_status: dict[str, UpdateStatus] = {}
        # How many changes made this state: the position in the leader's change log.
        self.index = 0
        self._ips: dict[str, set[IPv4Address]] = {}
        self._pending: list[Change] = []

    # ----- changes: the only way the state is modified -----

    def apply(self, change: Change) -> None:
        """Put or delete one record (a command's own effect, or a replayed one)."""
        doc = change.doc
        if change.kind == CLUSTER:
            self.cluster = None if doc is None else _cluster_from_doc(doc)
        elif change.kind == NODE:
            if doc is None:
                self.nodes.pop(change.key, None)
            else:
                self.nodes[change.key] = _node_from_doc(doc)
        elif change.kind == CREDENTIAL:
            if doc is None:
                self.credentials.pop(change.key, None)
                self.credential_facts.pop(change.key, None)
            else:
                self.credentials[change.key] = bytes.fromhex(doc["key"])
                self.credential_facts[change.key] = CredentialFacts(
                    doc.get("issued"), doc.get("revoked")
                )
        elif change.kind == NETWORK:
            if doc is None:
                self.networks.pop(change.key, None)
                self._ips.pop(change.key, None)
            else:
                self.networks[change.key] = OverlayNetwork(**doc)
                self._ips.setdefault(change.key, set())
        elif change.kind == ALLOCATION:
            net_id, _, ep_id = change.key.partition("/")
            old = self.allocations.pop((net_id, ep_id), None)
            if old is not None:
                self._ips.get(net_id, set()).discard(IPv4Address(old.ip))
            if doc is not None:
                alloc = Allocation(**doc)
                self.allocations[(net_id, ep_id)] = alloc
                self._ips.setdefault(net_id, set()).add(IPv4Address(alloc.ip))
        elif change.kind == SERVICE:
            if doc is None:
                self.services.pop(change.key, None)
            else:
                self.services[change.key] = _service_from_doc(doc)
        elif change.kind == TASK:
            if doc is None:
                self.tasks.pop(change.key, None)
            else:
                self.tasks[change.key] = task_from_doc(doc)
        elif change.kind == UPDATE_STATUS:
            if doc is None:
                self.update_status.pop(change.key, None)
            else:
                self.update_status[change.key] = status_from_doc(doc)
        else:
            raise ValueError(f"unknown record kind {change.kind!r}")
        self.index += 1

    def _put(self, kind: str, key: str, doc: dict[str, Any] | None) -> None:
        change = Change(kind, key, doc)
        self.apply(change)
        self._pending.append(change)

    def take_changes(self) -> list[Change]:
        """The changes made since the last call, oldest first (to persist and replicate)."""
        out, self._pending = self._pending, []
        return out

    def records(self) -> list[Change]:
        """The whole state as puts, in an order that replays into an equal state."""
        out: list[Change] = []
        if self.cluster is not None:
            out.append(Change(CLUSTER, _CLUSTER_KEY, _doc(self.cluster)))
        out += [Change(NODE, k, _doc(n)) for k, n in self.nodes.items()]
        out += [
            Change(
                CREDENTIAL, k, _credential_doc(v, self.credential_facts.get(k, CredentialFacts()))
            )
            for k, v in self.credentials.items()
        ]
        out += [Change(NETWORK, k, _doc(n)) for k, n in self.networks.items()]
        out += [
            Change(ALLOCATION, _allocation_key(*k), _doc(a)) for k, a in self.allocations.items()
        ]
        out += [Change(SERVICE, k, service_doc(s)) for k, s in self.services.items()]
        out += [Change(TASK, k, task_doc(t)) for k, t in self.tasks.items()]
        out += [Change(UPDATE_STATUS, k, status_doc(u)) for k, u in self.update_status.items()]
        return out

    @classmethod
    def from_records(cls, records: Iterable[Change], index: int) -> ClusterState:
        state = cls()
        for change in records:
            state.apply(change)
        state.index = index
        return state

    # ----- lookups -----

    def require_cluster(self) -> Cluster:
        if self.cluster is None:
            raise ClusterError(
                ErrorKind.UNAVAILABLE,
                "this node is not a swarm manager: run `swarm init` or `swarm join` first",
            )
        return self.cluster

    @property
    def leader(self) -> Node | None:
        return None if self.cluster is None else self.nodes.get(self.cluster.leader_id)

    def managers(self) -> list[Node]:
        """Manager nodes, the leader first."""
        out = [n for n in self.nodes.values() if n.role is Role.MANAGER]
        out.sort(key=lambda n: (n.manager_status is not ManagerStatus.LEADER, n.created, n.id))
        return out

    def find_node(self, ref: str) -> Node:
        """A node by id, hostname or unique id prefix (as `docker node inspect` takes it)."""
        if ref in self.nodes:
            return self.nodes[ref]
        return _find(ref, "node", list(self.nodes.values()), lambda n: (n.id, n.hostname))

    def find_network(self, ref: str) -> OverlayNetwork:
        """A network by id, name or unique id prefix."""
        if ref in self.networks:
            return self.networks[ref]
        return _find(ref, "network", list(self.networks.values()), lambda n: (n.id, n.name))

    def allocations_of_node(self, node_id: str) -> list[Allocation]:
        return [a for a in self.allocations.values() if a.node_id == node_id]

    def allocations_on(self, network_id: str) -> list[Allocation]:
        return [a for a in self.allocations.values() if a.network_id == network_id]

    def find_service(self, ref: str) -> Service:
        """A service by id, name or unique id prefix (as `docker service inspect` takes it)."""
        if ref in self.services:
            return self.services[ref]
        return _find(ref, "service", list(self.services.values()), lambda s: (s.id, s.spec.name))

    def tasks_of(self, service_id: str) -> list[Task]:
        return [t for t in self.tasks.values() if t.service_id == service_id]

    def ingress_network(self) -> OverlayNetwork | None:
        return next((n for n in self.networks.values() if n.ingress), None)

    def service_networks(self, service: Service) -> list[OverlayNetwork]:
        """The networks a service's tasks join: `ingress` first when it publishes a port through
        the routing mesh (Docker attaches those tasks to ingress), then the spec's, in order."""
        out = []
        ingress = self.ingress_network()
        if ingress is not None and _uses_ingress(service.spec):
            out.append(ingress)
        out += [self.networks[n] for n in service.spec.networks if n in self.networks]
        return out

    def lb_networks(self) -> list[OverlayNetwork]:
        """The networks whose VIPs nodes balance: those of vip-mode services."""
        ids = {
            n.id
            for s in self.services.values()
            if s.spec.endpoint_mode is EndpointMode.VIP
            for n in self.service_networks(s)
        }
        return sorted((self.networks[i] for i in ids), key=lambda n: (n.name, n.id))

    def lb_addresses_of(self, node_id: str) -> list[Allocation]:
        """The node's load-balancer endpoints, one per network in lb_networks."""
        out = []
        for network in self.lb_networks():
            alloc = self.allocations.get((network.id, lb_endpoint_id(node_id)))
            if alloc is not None:
                out.append(alloc)
        return out

    def vips_of(self, service: Service) -> list[Allocation]:
        """The service's virtual IPs, one per network (vip mode), in service_networks order."""
        out = []
        for net in self.service_networks(service):
            alloc = self.allocations.get((net.id, vip_endpoint_id(service.id)))
            if alloc is not None:
                out.append(alloc)
        return out

    # ----- commands: cluster and nodes -----

    def init(
        self,
        *,
        hostname: str,
        addr: str,
        now: float,
        rand: RandomBytes,
        manager_port: int = MANAGER_PORT,
        ingress_subnet: str | None = None,
    ) -> Node:
        """Create the swarm with this host as its leader, and the `ingress` overlay (on
        `ingress_subnet`, `swarm init --ingress-subnet`, or INGRESS_SUBNET). User overlays are
        given subnets around it, so the two never overlap (moby#33626)."""
        if self.cluster is not None:
            raise ClusterError(
                ErrorKind.CONFLICT,
                "this node is already part of a swarm: use `swarm join-token` to add nodes, "
                "or `swarm leave --force` to start over",
            )
        _check_hostname(hostname)
        ip = check_addr(addr)
        ingress_net = INGRESS_SUBNET
        if ingress_subnet is not None:
            try:
                ingress_net = ipam.parse_subnet(ingress_subnet)
            except ipam.IpamError as e:
                raise ClusterError(ErrorKind.INVALID, f"--ingress-subnet: {e}") from None
        node_id = tokens.random_base36(rand)
        cluster = Cluster(
            id=tokens.random_base36(rand),
            created=now,
            leader_id=node_id,
            root_key=rand(KEY_BYTES).hex(),
            worker_secret=tokens.new_secret(rand),
            manager_secret=tokens.new_secret(rand),
            gossip_key=rand(KEY_BYTES).hex(),
        )
        node = Node(
            id=node_id,
            hostname=hostname,
            addr=ip,
            role=Role.MANAGER,
            availability=Availability.ACTIVE,
            manager_status=ManagerStatus.LEADER,
            manager_addr=f"{ip}:{manager_port}",
            created=now,
            updated=now,
        )
        ingress = OverlayNetwork(
            id=tokens.random_base36(rand),
            name=INGRESS_NAME,
            vni=VNI_FIRST,
            subnet=str(ingress_net),
            gateway=str(ipam.make_config(ingress_net).gateway),
            attachable=False,
            ingress=True,
            created=now,
        )
        credential = rand(KEY_BYTES)
        self._put(CLUSTER, _CLUSTER_KEY, _doc(cluster))
        self._put(NODE, node.id, _doc(node))
        self._put(CREDENTIAL, node.id, _credential_doc(credential, CredentialFacts(now)))
        self._put(NETWORK, ingress.id, _doc(ingress))
        return node

    def join_node(
        self, *, hostname: str, addr: str, role: Role, now: float, rand: RandomBytes
    ) -> tuple[Node, bytes]:
        """Admit a host (its token already checked): its node record and its credential key."""
        self.require_cluster()
        _check_hostname(hostname)
        ip = check_addr(addr)
        for other in self.nodes.values():
            if other.addr == ip:
                raise ClusterError(
                    ErrorKind.CONFLICT,
                    f"a node with address {ip} is already in the swarm ({other.hostname}, "
                    f"id {other.id}): run `swarm leave` there first, or `node rm {other.id}` "
                    "on a manager if that host is gone",
                )
        node = Node(
            id=tokens.random_base36(rand),
            hostname=hostname,
            addr=ip,
            role=role,
            availability=Availability.ACTIVE,
            manager_status=ManagerStatus.REACHABLE if role is Role.MANAGER else None,
            manager_addr=f"{ip}:{MANAGER_PORT}" if role is Role.MANAGER else None,
            created=now,
            updated=now,
        )
        credential = rand(KEY_BYTES)
        self._put(NODE, node.id, _doc(node))
        self._put(CREDENTIAL, node.id, _credential_doc(credential, CredentialFacts(now)))
        return node, credential

    def rotate_join_token(self, role: Role, *, rand: RandomBytes) -> Cluster:
        """`swarm join-token --rotate ROLE`: a new secret for that role; the old token is refused
        from now on (nodes already joined keep their own credentials)."""
        cluster = self.require_cluster()
        secret = tokens.new_secret(rand)
        if role is Role.MANAGER:
            new = dataclasses.replace(cluster, manager_secret=secret)
        else:
            new = dataclasses.replace(cluster, worker_secret=secret)
        self._put(CLUSTER, _CLUSTER_KEY, _doc(new))
        return new

    def _check_no_staged_rotation(self, cluster: Cluster) -> None:
        if cluster.gossip_rotation is not KeyStage.IDLE:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"a gossip key rotation is in progress (stage {cluster.gossip_rotation}): "
                "the leader finishes it once every live node has the new key; retry then",
            )

    def rotate_gossip_key(self, *, rand: RandomBytes) -> Cluster:
        """A new primary gossip key; the former ones stay in the keyring (GOSSIP_KEYRING_SIZE in
        all) so members that have not switched yet are still understood (memberlist's "install,
        use"). `retire_gossip_keys` is the last step ("remove"). By hand, all at once: the
        staged rotation (`stage_gossip_key`) is the safe one."""
        cluster = self.require_cluster()
        self._check_no_staged_rotation(cluster)
        previous = (cluster.gossip_key, *cluster.previous_gossip_keys)[: GOSSIP_KEYRING_SIZE - 1]
        new = dataclasses.replace(
            cluster, gossip_key=rand(KEY_BYTES).hex(), previous_gossip_keys=previous
        )
        self._put(CLUSTER, _CLUSTER_KEY, _doc(new))
        return new

    def retire_gossip_keys(self) -> Cluster:
        """Drop every key but the primary: once all members use it, a node removed before the
        rotation holds no key the others accept."""
        cluster = self.require_cluster()
        self._check_no_staged_rotation(cluster)
        if not cluster.previous_gossip_keys:
            return cluster
        new = dataclasses.replace(cluster, previous_gossip_keys=())
        self._put(CLUSTER, _CLUSTER_KEY, _doc(new))
        return new

    # A staged rotation, driven by the leader (keyrotation.decide): each step only once every
    # live node has reported it holds what the step before gave it.

    def stage_gossip_key(self, *, rand: RandomBytes) -> Cluster:
        """Stage 1 ("install"): a new key that nodes accept but do not seal with yet. During a
        rotation, another one is queued instead (the removed node may have the staged key)."""
        cluster = self.require_cluster()
        if cluster.gossip_rotation is not KeyStage.IDLE:
            new = dataclasses.replace(cluster, gossip_rotation_again=True)
        else:
            # Room in the ring for the primary, the staged key and the newest previous one.
            previous = cluster.previous_gossip_keys[: GOSSIP_KEYRING_SIZE - 2]
            new = dataclasses.replace(
                cluster,
                previous_gossip_keys=previous,
                pending_gossip_key=rand(KEY_BYTES).hex(),
                gossip_rotation=KeyStage.INSTALL,
                gossip_rotation_again=False,
            )
        if new != cluster:
            self._put(CLUSTER, _CLUSTER_KEY, _doc(new))
        return new

    def use_staged_gossip_key(self) -> Cluster:
        """Stage 2 ("use"): the staged key becomes the primary, the old one is still accepted."""
        cluster = self.require_cluster()
        if cluster.gossip_rotation is not KeyStage.INSTALL:
            raise ClusterError(ErrorKind.CONFLICT, "no staged gossip key to use")
        new = dataclasses.replace(
            cluster,
            gossip_key=cluster.pending_gossip_key,
            previous_gossip_keys=(cluster.gossip_key, *cluster.previous_gossip_keys)[
                : GOSSIP_KEYRING_SIZE - 1
            ],
            pending_gossip_key="",
            gossip_rotation=KeyStage.USE,
        )
        self._put(CLUSTER, _CLUSTER_KEY, _doc(new))
        return new

    def finish_gossip_rotation(self) -> Cluster:
        """Stage 3 ("remove"): only the new primary is accepted; a node removed before the
        rotation holds no key the others accept."""
        cluster = self.require_cluster()
        if cluster.gossip_rotation is not KeyStage.USE:
            raise ClusterError(ErrorKind.CONFLICT, "no gossip key rotation to finish")
        new = dataclasses.replace(cluster, previous_gossip_keys=(), gossip_rotation=KeyStage.IDLE)
        self._put(CLUSTER, _CLUSTER_KEY, _doc(new))
        return new

    def _check_not_leader(self, node: Node, action: str) -> None:
        if self.cluster is not None and node.id == self.cluster.leader_id:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"{node.hostname} is the swarm's Raft leader and cannot be {action}: "
                "once another manager leads (stop this one's agent, or wait for an election), "
                "do it from that manager",
            )

    def remove_node(self, ref: str, *, force: bool = False, alive: bool = True) -> Node:
        """A node leaves (or is removed): its record and its credential go (it can no longer
        talk to managers), and so do its addresses, but only if it is dead.

        `alive` is what the caller knows of the node (gossip; unknown counts as alive). A live
        node's containers keep using their addresses whatever the managers write, so freeing
        them would hand the same IP and MAC to a second endpoint: removing a live node that
        still holds addresses is refused, even with `force`.
        """
        node = self.find_node(ref)
        self._check_not_leader(node, "removed")
        if node.role is Role.MANAGER and not force:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"{node.hostname} is a manager: demote it first (`node demote {node.hostname}`), "
                "or use --force",
            )
        held = self.allocations_of_node(node.id)
        if held and alive:
            nets = sorted({self.networks[a.network_id].name for a in held})
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"{node.hostname} is up and its containers hold {len(held)} overlay address(es) "
                f"on {', '.join(nets)}: they cannot be given out again while it runs. Remove "
                f"those containers first (or, if {node.hostname} is gone for good, `node rm` it "
                "once it is down)",
            )
        for alloc in held:
            self._put(ALLOCATION, _allocation_key(alloc.network_id, alloc.endpoint_id), None)
        self._put(CREDENTIAL, node.id, None)
        self._put(NODE, node.id, None)
        return node

    def revoke_credential(self, ref: str, *, now: float) -> Node:
        """`node ca revoke NODE`: the node stays listed but its credential no longer opens any
        manager's door, and it is drained (a node that cannot report gets no tasks). Its
        addresses stay held: its containers may still run, so freeing them would give an IP
        and MAC twice. Revoking twice keeps the first time."""
        node = self.find_node(ref)
        self._check_not_leader(node, "revoked")
        if node.role is Role.MANAGER:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"{node.hostname} is a manager: demote it first (`node demote {node.hostname}`)",
            )
        facts = self.credential_facts.get(node.id, CredentialFacts())
        if facts.revoked is None and node.id in self.credentials:
            new = dataclasses.replace(facts, revoked=now)
            self._put(CREDENTIAL, node.id, _credential_doc(self.credentials[node.id], new))
        return self._replace_node(node, now, availability=Availability.DRAIN)

    def is_revoked(self, node_id: str) -> bool:
        facts = self.credential_facts.get(node_id)
        return facts is not None and facts.revoked is not None

    def _replace_node(self, node: Node, now: float, **fields: Any) -> Node:
        new = dataclasses.replace(node, updated=now, **fields)
        if new != dataclasses.replace(node, updated=now):
            self._put(NODE, new.id, _doc(new))
            return new
        return node

    def update_node(
        self,
        ref: str,
        *,
        now: float,
        availability: str | None = None,
        label_add: Mapping[str, str] | None = None,
        label_rm: Iterable[str] = (),
    ) -> Node:
        """`node update [--availability A] [--label-add K=V]… [--label-rm K]…`."""
        node = self.find_node(ref)
        avail = node.availability
        if availability is not None:
            try:
                avail = Availability(availability)
            except ValueError:
                raise ClusterError(
                    ErrorKind.INVALID,
                    f"invalid availability {availability!r}: use active, pause or drain",
                ) from None
        labels = dict(node.labels)
        for key in label_rm:
            # Docker: "key K doesn't exist in node's labels".
            if key not in labels:
                raise ClusterError(
                    ErrorKind.NOT_FOUND, f"key {key!r} doesn't exist in {node.hostname}'s labels"
                )
            del labels[key]
        for key, value in (label_add or {}).items():
            _check_label(key, value)
            labels[key] = value
        return self._replace_node(node, now, availability=avail, labels=labels)

    def promote(self, ref: str, *, now: float, manager_port: int = MANAGER_PORT) -> Node:
        node = self.find_node(ref)
        if node.role is Role.MANAGER:
            return node
        return self._replace_node(
            node,
            now,
            role=Role.MANAGER,
            manager_status=ManagerStatus.REACHABLE,
            manager_addr=f"{node.addr}:{manager_port}",
        )

    def follow_leader(self, node_id: str, *, now: float) -> bool:
        """Raft elected manager `node_id` (issue 14): the cluster record and the managers'
        MANAGER STATUS follow, so the node protected from demotion and removal is the one that
        leads now, not the one that ran `swarm init`. Whether anything changed."""
        cluster = self.require_cluster()
        node = self.find_node(node_id)
        if node.role is not Role.MANAGER:
            raise ClusterError(ErrorKind.CONFLICT, f"{node.hostname} is not a manager")
        changed = False
        for other in self.managers():
            status = ManagerStatus.LEADER if other.id == node_id else ManagerStatus.REACHABLE
            if other.manager_status is not status:
                self._replace_node(other, now, manager_status=status)
                changed = True
        if cluster.leader_id != node_id:
            self._put(CLUSTER, _CLUSTER_KEY, _doc(dataclasses.replace(cluster, leader_id=node_id)))
            changed = True
        return changed

    def force_new_cluster(self, node_id: str, *, now: float) -> list[Node]:
        """`swarm init --force-new-cluster` on manager `node_id` (issue 14): it becomes the only
        manager and the leader, under a new Raft epoch (a new Raft password: the old members'
        journals cannot vote in the new cluster). The other managers become workers, so one
        that comes back is not added to Raft with its old key; `node promote` (or a join with
        the manager token) makes it a fresh manager. Returns the managers demoted."""
        cluster = self.require_cluster()
        me = self.find_node(node_id)
        if me.role is not Role.MANAGER:
            raise ClusterError(ErrorKind.CONFLICT, f"{me.hostname} is not a manager")
        demoted = [
            self._replace_node(n, now, role=Role.WORKER, manager_status=None, manager_addr=None)
            for n in self.managers()
            if n.id != node_id
        ]
        new = dataclasses.replace(cluster, leader_id=node_id, raft_epoch=cluster.raft_epoch + 1)
        self._put(CLUSTER, _CLUSTER_KEY, _doc(new))
        self._replace_node(me, now, manager_status=ManagerStatus.LEADER)
        return demoted

    def demote(self, ref: str, *, now: float) -> Node:
        node = self.find_node(ref)
        if node.role is Role.WORKER:
            return node
        if len(self.managers()) <= 1:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"{node.hostname} is the last manager of the swarm and cannot be demoted",
            )
        self._check_not_leader(node, "demoted")
        return self._replace_node(
            node, now, role=Role.WORKER, manager_status=None, manager_addr=None
        )

    # ----- commands: networks -----

    def _next_vni(self) -> int:
        used = {n.vni for n in self.networks.values()}
        for vni in range(VNI_FIRST, VNI_MAX + 1):
            if vni not in used:
                return vni
        raise ClusterError(ErrorKind.CONFLICT, "no VXLAN ids left: remove unused overlay networks")

    def create_network(
        self,
        name: str,
        *,
        now: float,
        rand: RandomBytes,
        subnet: str | None = None,
        gateway: str | None = None,
        attachable: bool = False,
        labels: Mapping[str, str] | None = None,
        vni: int | None = None,
        encrypted: bool = False,
        key_period: float = datakeys.ROTATION_PERIOD,
    ) -> OverlayNetwork:
        """A swarm-scoped overlay: a free VNI from 4096 up, a free /24 from 10.0.0.0 up;
        `encrypted`: with a data key from `rand`, rotated every `key_period` seconds."""
        self.require_cluster()
        if encrypted and key_period < datakeys.ROTATION_MIN:
            raise ClusterError(
                ErrorKind.INVALID,
                f"data key period {key_period} s: at least {datakeys.ROTATION_MIN:.0f} s",
            )
        try:
            check_object_name(name, "network")
        except BadName as e:
            raise ClusterError(ErrorKind.INVALID, str(e)) from None
        if any(n.name == name for n in self.networks.values()):
            raise ClusterError(ErrorKind.CONFLICT, f"network with name {name} already exists")
        if vni is None:
            vni = self._next_vni()
        elif not VNI_FIRST <= vni <= VNI_MAX:
            raise ClusterError(
                ErrorKind.INVALID, f"invalid VXLAN id {vni}: use {VNI_FIRST} to {VNI_MAX}"
            )
        elif any(n.vni == vni for n in self.networks.values()):
            raise ClusterError(ErrorKind.CONFLICT, f"VXLAN id {vni} is already in use")
        used = [(n.name, IPv4Network(n.subnet)) for n in self.networks.values()]
        try:
            if subnet is None:
                net = ipam.allocate_subnet(ipam.OVERLAY_POOLS, [u for _, u in used])
            else:
                net = ipam.parse_subnet(subnet)
                try:
                    ipam.check_subnet_free(net, used)
                except ipam.IpamError as e:
                    raise ClusterError(ErrorKind.CONFLICT, str(e)) from None
            config = ipam.make_config(net, gateway)
        except ipam.IpamError as e:
            raise ClusterError(ErrorKind.INVALID, str(e)) from None
        network = OverlayNetwork(
            id=tokens.random_base36(rand),
            name=name,
            vni=vni,
            subnet=str(config.subnet),
            gateway=str(config.gateway),
            attachable=attachable,
            ingress=False,
            created=now,
            labels=dict(labels or {}),
            encrypted=encrypted,
            key_period=key_period,
            data_keys=datakeys.new_keyring(now, rand) if encrypted else [],
        )
        if network.id in self.networks:
            raise ClusterError(ErrorKind.CONFLICT, "network id collision: try again")
        self._put(NETWORK, network.id, _doc(network))
        return network

    def rotate_data_keys(self, *, now: float, rand: RandomBytes) -> list[OverlayNetwork]:
        """A new data key for every encrypted network whose key served its period, the old one
        kept for the grace period (datakeys.rotated); the networks changed."""
        changed = []
        for network in list(self.networks.values()):
            if network.encrypted and datakeys.due(network.data_keys, now, network.key_period):
                ring = datakeys.rotated(network.data_keys, now, rand)
                network = dataclasses.replace(network, data_keys=ring)
                self._put(NETWORK, network.id, _doc(network))
                changed.append(network)
        return changed

    def remove_network(self, ref: str) -> OverlayNetwork:
        network = self.find_network(ref)
        users = sorted(
            s.spec.name
            for s in self.services.values()
            if network.id in s.spec.networks or network in self.service_networks(s)
        )
        if users:
            # Docker: "network X is in use by service Y".
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"network {network.name} is in use by service {', '.join(users)}: "
                "remove the service first",
            )
        in_use = [a for a in self.allocations_on(network.id) if a.node_id != MANAGED]
        managed = [a for a in self.allocations_on(network.id) if a.node_id == MANAGED]
        if managed and not in_use:
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"network {network.name} still has {len(managed)} address(es) of removed "
                "services' tasks that have not stopped yet: retry once they have",
            )
        if in_use:
            hosts = sorted({self._hostname(a.node_id) for a in in_use})
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"network {network.name} has {len(in_use)} active endpoint(s) "
                f"(on {', '.join(hosts)}): remove those containers first",
            )
        self._put(NETWORK, network.id, None)
        return network

    def _hostname(self, node_id: str) -> str:
        node = self.nodes.get(node_id)
        return node.hostname if node is not None else node_id

    # ----- commands: addresses -----

    def allocate_address(
        self,
        network_ref: str,
        endpoint_id: str,
        node_id: str,
        requested_ip: str | None = None,
    ) -> Allocation:
        """An address for one endpoint on one network; asking again for the same is a no-op."""
        network = self.find_network(network_ref)
        _check_endpoint_id(endpoint_id)
        if node_id not in self.nodes:
            raise ClusterError(ErrorKind.NOT_FOUND, f"node {node_id} is not in the swarm")
        if not network.attachable:
            raise ClusterError(
                ErrorKind.FORBIDDEN,
                f"network {network.name} is not manually attachable: containers can join only "
                "overlays created with `network create -d overlay --attachable`",
            )
        existing = self.allocations.get((network.id, endpoint_id))
        if existing is not None:
            if existing.node_id == node_id and requested_ip in (None, existing.ip):
                return existing
            raise ClusterError(
                ErrorKind.CONFLICT,
                f"endpoint {endpoint_id} already has address {existing.ip} on {network.name} "
                f"(on {self._hostname(existing.node_id)})",
            )
        config = ipam.make_config(IPv4Network(network.subnet), network.gateway)
        taken = self._ips.get(network.id, set())
        if requested_ip is not None:
            try:
                wanted = IPv4Address(requested_ip)
            except ValueError:
                raise ClusterError(
                    ErrorKind.INVALID, f"invalid IP address {requested_ip!r}"
                ) from None
            if wanted in taken or wanted == config.gateway:
                raise ClusterError(
                    ErrorKind.CONFLICT,
                    f"address {wanted} is already in use on network {network.name}",
                )
        try:
            ip = ipam.allocate_address(config, taken, requested_ip)
        except ipam.IpamError as e:
            kind = ErrorKind.INVALID if requested_ip is not None else ErrorKind.CONFLICT
            raise ClusterError(kind, str(e)) from None
        alloc = Allocation(network.id, endpoint_id, str(ip), node_id)
        self._put(ALLOCATION, _allocation_key(network.id, endpoint_id), _doc(alloc))
        return alloc

    def release_address(
        self, network_ref: str, endpoint_id: str, node_id: str
    ) -> Allocation | None:
        """Free an endpoint's address (None when it had none). Only `node_id`, its owner, may:
        the owner alone knows its endpoint is gone. Anyone else's word (a manager's included)
        could free an address a running container still uses."""
        network = self.find_network(network_ref)
        alloc = self.allocations.get((network.id, endpoint_id))
        if alloc is None:
            return None
        if alloc.node_id != node_id:
            raise ClusterError(
                ErrorKind.FORBIDDEN,
                f"endpoint {endpoint_id} on {network.name} belongs to "
                f"{self._hostname(alloc.node_id)}: a node may release only its own addresses",
            )
        self._put(ALLOCATION, _allocation_key(network.id, endpoint_id), None)
        return alloc

    # ----- commands: services -----

    def create_service(self, spec: ServiceSpec, *, now: float, rand: RandomBytes) -> Service:
        """`service create`: the spec with its networks resolved to ids, its ingress ports
        assigned, and a VIP from each network's IPAM in vip mode. Tasks come from the
        orchestration pass."""
        self.require_cluster()
        if any(s.spec.name == spec.name for s in self.services.values()):
            raise ClusterError(ErrorKind.CONFLICT, f"service {spec.name} already exists")
        network_ids: list[str] = []
        for ref in spec.networks:
            network = self.find_network(ref)
            if network.ingress:
                # swarmkit controlapi: "service cannot be explicitly attached to the ingress
                # network"; publishing a port attaches it.
                raise ClusterError(
                    ErrorKind.INVALID,
                    f"a service cannot be attached to the ingress network {network.name} "
                    "explicitly: publish a port (--publish) to use the routing mesh",
                )
            if network.id in network_ids:
                raise ClusterError(
                    ErrorKind.INVALID, f"network {network.name} is given twice: attach it once"
                )
            network_ids.append(network.id)
        spec = dataclasses.replace(spec, networks=tuple(network_ids))
        if _uses_ingress(spec) and self.ingress_network() is None:
            raise ClusterError(
                ErrorKind.CONFLICT,
                "the swarm has no ingress network, so no port can be published through the "
                "routing mesh: publish with mode=host",
            )
        others = self.services.values()
        # An ingress port is open on every node, so it collides with any other service's
        # published port; two host-mode services may share a port (the scheduler keeps them
        # on different nodes).
        taken = _published(others, PublishMode.INGRESS) | (
            _published(others, PublishMode.HOST) - spec.host_ports
        )
        spec = assign_ingress_ports(spec, taken)
        service = Service(
            id=tokens.random_base36(rand), spec=spec, created=now, updated=now, version=1
        )
        if service.id in self.services:
            raise ClusterError(ErrorKind.CONFLICT, "service id collision: try again")
        vips: list[Allocation] = []
        if spec.endpoint_mode is EndpointMode.VIP:
            for network in self.service_networks(service):
                ip = self._free_address(network)
                vips.append(Allocation(network.id, vip_endpoint_id(service.id), str(ip), MANAGED))
        self._put(SERVICE, service.id, service_doc(service))
        for alloc in vips:
            self._put(ALLOCATION, _allocation_key(alloc.network_id, alloc.endpoint_id), _doc(alloc))
        return service

    def _free_address(self, network: OverlayNetwork, *, serial: bool = False) -> IPv4Address:
        """The lowest free address; `serial`: the lowest above every address in use, wrapping
        to the lowest free. Tasks take theirs serially, as swarmkit's overlay IPAM does
        (libnetwork's serial allocation): an address freed by a task that just ended is not
        handed at once to its replacement elsewhere, while every node's neighbour and
        forwarding entries for it may still name the old task's node."""
        config = ipam.make_config(IPv4Network(network.subnet), network.gateway)
        used = self._ips.get(network.id, set())
        try:
            if serial and used:
                with contextlib.suppress(ipam.IpamError):
                    return ipam.allocate_address(config, _addresses_up_to(config.subnet, max(used)))
            return ipam.allocate_address(config, used)
        except ipam.IpamError as e:
            raise ClusterError(ErrorKind.CONFLICT, f"network {network.name}: {e}") from None

    def update_service(self, ref: str, *, now: float, replicas: int | None = None) -> Service:
        """`service scale NAME=N` (the other spec fields of `service update` come later)."""
        service = self.find_service(ref)
        if replicas is None:
            return service
        if service.spec.mode is not ServiceMode.REPLICATED:
            raise ClusterError(
                ErrorKind.INVALID,
                f"{service.spec.name}: scale can only be used with replicated mode",
            )
        # ServiceSpec validates itself: a negative or huge count is refused here.
        spec = dataclasses.replace(service.spec, replicas=replicas)
        if spec == service.spec:
            return service
        new = dataclasses.replace(service, spec=spec, updated=now, version=service.version + 1)
        self._put(SERVICE, new.id, service_doc(new))
        return new

    def change_service(
        self,
        ref: str,
        change: Callable[[ServiceSpec], ServiceSpec],
        *,
        now: float,
        force: bool = False,
    ) -> Service:
        """`service update`: the spec `change` makes of the current one (it validates itself;
        a ClusterError changes nothing). A change that needs new tasks, or `--force`, starts a
        rolling update (cluster/update.py) that the orchestration pass carries out."""
        service = self.find_service(ref)
        spec = change(service.spec)
        if spec.mode is not service.spec.mode or spec.networks != service.spec.networks:
            raise ClusterError(ErrorKind.INVALID, "service update cannot change mode or networks")
        if spec.ports != service.spec.ports:
            others = [s for s in self.services.values() if s.id != service.id]
            taken = _published(others, PublishMode.INGRESS) | (
                _published(others, PublishMode.HOST) - spec.host_ports
            )
            spec = assign_ingress_ports(spec, taken)
            if _uses_ingress(spec) and self.ingress_network() is None:
                raise ClusterError(
                    ErrorKind.CONFLICT, "the swarm has no ingress network: publish with mode=host"
                )
        if spec == service.spec and not force:
            return service
        new = dataclasses.replace(service, spec=spec, updated=now, version=service.version + 1)
        self._put(SERVICE, new.id, service_doc(new))
        self._allocate_vips(new)
        if force or update.needs_rollout(service.spec, spec):
            status = update.start(service.spec, new.version, now=now)
            self._put(UPDATE_STATUS, new.id, status_doc(status))
        return new

    def rollback_service(self, ref: str, *, now: float, why: str = "") -> Service:
        """`service rollback` (or an update's failure action): back to PreviousSpec, rolled out
        with the rollback policy; the spec left behind becomes the new PreviousSpec."""
        service = self.find_service(ref)
        spec = update.rollback_spec(service, self.update_status.get(service.id))
        new = dataclasses.replace(service, spec=spec, updated=now, version=service.version + 1)
        self._put(SERVICE, new.id, service_doc(new))
        self._allocate_vips(new)
        status = update.start(service.spec, new.version, now=now, rollback=True, why=why)
        self._put(UPDATE_STATUS, new.id, status_doc(status))
        return new

    def _allocate_vips(self, service: Service) -> None:
        """A VIP on each of a vip-mode service's networks that lacks one (a published port
        added by an update attaches it to ingress)."""
        if service.spec.endpoint_mode is not EndpointMode.VIP:
            return
        for network in self.service_networks(service):
            key = (network.id, vip_endpoint_id(service.id))
            if key not in self.allocations:
                alloc = Allocation(network.id, key[1], str(self._free_address(network)), MANAGED)
                self._put(ALLOCATION, _allocation_key(*key), _doc(alloc))

    def _roll_updates(self, now: float, rand: RandomBytes) -> None:
        """The rolling updates' step of the orchestration pass (before reconciliation, which
        starts the replacements of the tasks this step shuts down)."""
        for service_id in sorted(self.update_status.keys() & self.services.keys()):
            service = self.services[service_id]
            status = self.update_status[service_id]
            step = update.plan(service, status, self.tasks.values(), now=now)
            if step.rollback and step.status is not None:
                self.rollback_service(service_id, now=now, why=step.status.message)
                continue
            if step.status is not None and step.status != status:
                self._put(UPDATE_STATUS, service_id, status_doc(step.status))
            self._carry_out(step.actions, now, rand)

    def remove_service(self, ref: str, *, now: float) -> Service:
        """`service rm`: the service goes and its tasks are told to shut down. Their addresses
        and the VIPs go once the tasks have stopped (the orchestration pass frees them)."""
        service = self.find_service(ref)
        actions: list[Action | Placement] = [
            ShutdownTask(t.id, "service removed")
            for t in sorted(self.tasks_of(service.id), key=lambda t: t.id)
            if t.live
        ]
        changed, _ = apply_actions(self.tasks, actions, now=now, new_id=lambda: "")
        self._put(SERVICE, service.id, None)
        if service.id in self.update_status:
            self._put(UPDATE_STATUS, service.id, None)
        for task in changed.values():
            self._put(TASK, task.id, task_doc(task))
        return service

    # ----- workers' reports -----

    def report_task(
        self,
        node_id: str,
        task_id: str,
        state: str,
        *,
        now: float,
        container_id: str | None = None,
        error: str | None = None,
        exit_code: int | None = None,
    ) -> Task:
        """A worker says what became of one of its tasks. A report about another node's task
        is forbidden; one that would move a task backwards or out of a final state (stale,
        duplicated, reordered) is a TaskStateError; either way nothing changes."""
        task = self.tasks.get(task_id)
        if task is None:
            raise ClusterError(ErrorKind.NOT_FOUND, f"task {task_id[:40]} not found")
        if task.node_id != node_id:
            raise ClusterError(
                ErrorKind.FORBIDDEN,
                f"task {task_id} is not assigned to {self._hostname(node_id)}: a node reports "
                "only its own tasks",
            )
        try:
            new_state = TaskState(state)
        except ValueError:
            new_state = None
        if new_state not in WORKER_STATES:
            allowed = ", ".join(sorted(s.value for s in WORKER_STATES))
            raise ClusterError(
                ErrorKind.INVALID, f"a worker cannot report state {state[:40]!r}: use {allowed}"
            )
        assert new_state is not None
        if container_id is not None and (
            len(container_id) > CONTAINER_ID_MAX or not _ENDPOINT_ID.match(container_id)
        ):
            raise ClusterError(ErrorKind.INVALID, f"invalid container id {container_id[:40]!r}")
        new = transition(
            task,
            new_state,
            now=now,
            error=None if error is None else error[:REPORT_TEXT_MAX],
        )
        new = dataclasses.replace(
            new,
            container_id=task.container_id if container_id is None else container_id,
            exit_code=task.exit_code if exit_code is None else exit_code,
        )
        self._put(TASK, new.id, task_doc(new))
        return new

    # ----- the leader's orchestration pass -----

    def node_views(self, node_status: Mapping[str, str]) -> list[NodeView]:
        """Nodes as the scheduler sees them; `node_status` is gossip's Ready/Down per node id
        (anything else, or no entry, is unknown: keeps its tasks, gets no new ones)."""
        out = []
        for node in sorted(self.nodes.values(), key=lambda n: n.id):
            status = node_status.get(node.id, "Unknown")
            out.append(
                NodeView(
                    node.facts,
                    node.availability,
                    ready=status == "Ready",
                    unknown=status not in ("Ready", "Down"),
                )
            )
        return out

    def orchestrate(self, node_status: Mapping[str, str], *, now: float, rand: RandomBytes) -> bool:
        """One pass: reconcile (replace, scale, move off Down/drained nodes, shut down removed
        services' tasks), give new tasks their addresses and make them pending, place pending
        tasks, then free the addresses of ended tasks and removed services' VIPs. Returns
        whether anything changed; a second pass over an unchanged swarm changes nothing."""
        start = self.index
        nodes = self.node_views(node_status)
        self._roll_updates(now, rand)
        self._carry_out(reconcile(self.services, self.tasks.values(), nodes, now=now), now, rand)
        self._shut_down_replaced()
        for task in sorted(self.tasks.values(), key=lambda t: t.id):
            # Nobody can list a removed service's tasks any more: once ended, they go.
            if task.service_id not in self.services and task.state.final:
                self._put(TASK, task.id, None)
        self._allocate_new_tasks(now)
        self._carry_out(schedule(self.services, self.tasks.values(), nodes, rand=rand), now, rand)
        self._release_managed_addresses()
        self._allocate_lb_addresses()
        return self.index != start

    def _shut_down_replaced(self) -> None:
        """An ended task that a newer task of its slot (or global node) replaces is wanted
        shut down, as swarmkit marks it: `service ps` shows its row with DESIRED STATE
        Shutdown. Its `updated` stays the time it ended (the restart delay counts from it)."""
        newest: dict[tuple[str, int | str | None], float] = {}
        for t in self.tasks.values():
            key = (t.service_id, t.slot if t.slot is not None else t.node_id)
            newest[key] = max(newest.get(key, t.created), t.created)
        for t in sorted(self.tasks.values(), key=lambda t: t.id):
            key = (t.service_id, t.slot if t.slot is not None else t.node_id)
            if t.state.final and t.desired is TaskState.RUNNING and newest[key] > t.created:
                self._put(TASK, t.id, task_doc(dataclasses.replace(t, desired=TaskState.SHUTDOWN)))

    def _allocate_lb_addresses(self) -> None:
        """Every node a load-balancer address on every lb network (one that is full is tried
        again at the next pass; the node's VIPs there cannot work until then)."""
        for network in self.lb_networks():
            for node_id in sorted(self.nodes):
                key = (network.id, lb_endpoint_id(node_id))
                if key in self.allocations:
                    continue
                try:
                    ip = self._free_address(network)
                except ClusterError:
                    break
                alloc = Allocation(network.id, key[1], str(ip), MANAGED)
                self._put(ALLOCATION, _allocation_key(*key), _doc(alloc))

    def _new_task_id(self, rand: RandomBytes) -> str:
        while (task_id := tokens.random_base36(rand)) in self.tasks:
            pass
        return task_id

    def _carry_out(
        self, actions: list[Action] | list[Placement], now: float, rand: RandomBytes
    ) -> None:
        if not actions:
            return
        changed, deleted = apply_actions(
            self.tasks, actions, now=now, new_id=lambda: self._new_task_id(rand)
        )
        for task_id in deleted:
            if task_id in self.tasks:
                self._put(TASK, task_id, None)
        for task in changed.values():
            self._put(TASK, task.id, task_doc(task))

    def _allocate_new_tasks(self, now: float) -> None:
        """An address on each of its service's networks for every new task (endpoint id = task
        id, as Docker's allocator does before scheduling), then the task is pending. A network
        without free addresses leaves the task new, saying why, until one is freed."""
        fresh = [t for t in self.tasks.values() if t.state is TaskState.NEW and t.live]
        for task in sorted(fresh, key=lambda t: (t.created, t.id)):
            service = self.services.get(task.service_id)
            if service is None:
                continue
            problem = None
            for network in self.service_networks(service):
                if (network.id, task.id) in self.allocations:
                    continue
                try:
                    ip = self._free_address(network, serial=True)
                except ClusterError as e:
                    problem = f"no address for the task: {e.message}"
                    break
                alloc = Allocation(network.id, task.id, str(ip), MANAGED)
                self._put(ALLOCATION, _allocation_key(network.id, task.id), _doc(alloc))
            if problem is None:
                task = transition(task, TaskState.PENDING, now=now)
            elif problem != task.message:
                task = dataclasses.replace(task, message=problem, updated=now)
            else:
                continue
            self._put(TASK, task.id, task_doc(task))

    def _release_managed_addresses(self) -> None:
        running = {t.service_id for t in self.tasks.values() if not t.state.final}
        lb_networks = {n.id for n in self.lb_networks()}
        task_networks = {
            net_id
            for (net_id, endpoint_id), alloc in self.allocations.items()
            if alloc.node_id == MANAGED
            and endpoint_id in self.tasks
            and not self.tasks[endpoint_id].state.final
        }
        for (net_id, endpoint_id), alloc in sorted(self.allocations.items()):
            if alloc.node_id != MANAGED:
                continue
            if endpoint_id.startswith(VIP_PREFIX):
                service_id = endpoint_id[len(VIP_PREFIX) :]
                gone = service_id not in self.services and service_id not in running
            elif endpoint_id.startswith(LB_PREFIX):
                # Kept while the node is a member and the network has VIPs, or tasks that may
                # still be balanced to through it.
                node_id = endpoint_id[len(LB_PREFIX) :]
                gone = node_id not in self.nodes or not (
                    net_id in lb_networks or net_id in task_networks
                )
            else:
                task = self.tasks.get(endpoint_id)
                gone = task is None or task.state.final
            if gone:
                self._put(ALLOCATION, _allocation_key(net_id, endpoint_id), None)


def node_doc(node: Node) -> dict[str, Any]:
    return _doc(node)


def network_doc(network: OverlayNetwork) -> dict[str, Any]:
    """What views show: the key ids of an encrypted network, never its keys."""
    doc = _doc(network)
    doc["key_ids"] = datakeys.key_ids(doc.pop("data_keys"))
    return doc


def member_network_doc(network: OverlayNetwork) -> dict[str, Any]:
    """What a member node gets (state.snapshot): the network with its data keys."""
    return {**network_doc(network), "data_keys": _doc(network)["data_keys"]}


def allocation_doc(alloc: Allocation, network: OverlayNetwork) -> dict[str, Any]:
    """What an agent needs to plumb one endpoint: its address, MAC, subnet, gateway and VNI."""
    prefix = IPv4Network(network.subnet).prefixlen
    return {
        **_doc(alloc),
        "network_name": network.name,
        "address": f"{alloc.ip}/{prefix}",
        "mac": ipam.mac_for(ipaddress.IPv4Address(alloc.ip)),
        "subnet": network.subnet,
        "gateway": network.gateway,
        "vni": network.vni,
    }
