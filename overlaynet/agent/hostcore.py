"""The pure host core: the agent's records in, decisions and the desired kernel picture out.

No I/O and no clock: the runtime passes records (and `now` where a record needs a time) and
carries out what comes back: the `Picture` goes to `host/reconcile.py`, records go to the store.
Every rule that was once only visible through real namespaces lives here with a unit test:
which address an endpoint gets, when a network may go, which networks leave the host, what a
restart relaunches, and how other hosts' endpoints become FDB entries, ARP answers and names.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from typing import Any

from overlaynet.agent.records import EndpointRecord
from overlaynet.agent.requests import NetworkCreate
from overlaynet.cluster import ipam
from overlaynet.cluster.state import VNI_FIRST
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.options import OptionError, check_overlay_options
from overlaynet.dns.records import NameRecord
from overlaynet.errors import Conflict, Forbidden, InvalidArgument
from overlaynet.host.picture import BridgeSpec, Picture, TapSpec, VethPlan
from overlaynet.model import (
    BRIDGE_MTU,
    BRIDGE_NAME_OPTION,
    MTU_OPTION,
    OVERLAY_MTU,
    PREDEFINED_NETWORKS,
    Container,
    Driver,
    Endpoint,
    Network,
    Status,
)
from overlaynet.names import BadName, KernelNames, check_ifname, check_object_name
from overlaynet.wire.ethernet import is_group, mac_to_bytes, mac_to_str
from overlaynet.wire.vxlan import VNI_MAX

# Docker's timestamps: RFC 3339 in UTC (Docker prints nanoseconds; Python has microseconds).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_from_epoch(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(TIME_FORMAT)


def epoch_from_iso(iso: str) -> float:
    return datetime.datetime.strptime(iso, TIME_FORMAT).replace(tzinfo=datetime.UTC).timestamp()


def network_from_swarm(doc: Mapping[str, Any]) -> Network:
    """A swarm network as the managers describe it → the record a host keeps while it has a
    container on it (lazy extension)."""
    return Network(
        id=doc["id"],
        name=doc["name"],
        driver=Driver.OVERLAY,
        created=iso_from_epoch(float(doc["created"])),
        scope="swarm",
        subnet=doc["subnet"],
        gateway=doc["gateway"],
        mtu=OVERLAY_MTU,
        labels=dict(doc.get("labels") or {}),
        attachable=bool(doc["attachable"]),
        vni=int(doc["vni"]),
        ingress=bool(doc.get("ingress")),
    )


# ---- records -> desired kernel picture -----------------------------------------------------


def container_netns(c: Container, names: KernelNames) -> str | None:
    """A container's namespace; `--network host` containers share the host's."""
    return None if c.network_mode == "host" else names.container_netns(c.id)


def routes_out(net: Network) -> bool:
    """Containers leave through the gateway on non-internal bridges only (Docker's rule)."""
    return net.driver == Driver.BRIDGE and not net.internal


def bridge_spec(net: Network) -> BridgeSpec | None:
    if net.driver not in (Driver.BRIDGE, Driver.OVERLAY) or not net.bridge_ifname:
        return None
    assert net.subnet and net.gateway
    # An overlay's gateway address would exist on every host at once: it stays unassigned
    # (Docker routes overlay containers out through a second, local bridge instead).
    overlay = net.driver == Driver.OVERLAY
    prefix = IPv4Network(net.subnet).prefixlen
    addr = None if overlay else IPv4Interface(f"{net.gateway}/{prefix}")
    return BridgeSpec(net.bridge_ifname, addr, net.mtu)


def tap_spec(net: Network) -> TapSpec | None:
    if net.driver != Driver.OVERLAY or not net.bridge_ifname or net.vni is None:
        return None
    return TapSpec(net.id, KernelNames.tap(net.id), net.bridge_ifname)


def veth_plan(
    c: Container, ep: Endpoint, net: Network, names: KernelNames, default_route: bool
) -> VethPlan:
    ns = container_netns(c, names)
    assert ns is not None and net.bridge_ifname and net.subnet
    prefix = IPv4Network(net.subnet).prefixlen
    return VethPlan(
        host_ifname=KernelNames.veth_host(ep.id),
        temp_ifname=KernelNames.veth_temp(ep.id),
        bridge=net.bridge_ifname,
        container_netns=ns,
        ifname=ep.ifname,
        mac=ep.mac,
        address=IPv4Interface(f"{ep.ip}/{prefix}") if ep.ip else None,
        gateway=net.gateway if default_route and routes_out(net) else None,
        mtu=net.mtu,
    )


def picture(
    networks: Mapping[str, Network], containers: Iterable[Container], names: KernelNames
) -> Picture:
    """The kernel objects these records need: nothing more (the rest are strays)."""
    bridges = {b.ifname: b for n in networks.values() if (b := bridge_spec(n)) is not None}
    taps = {t.ifname: t for n in networks.values() if (t := tap_spec(n)) is not None}
    namespaces: set[str] = set()
    endpoints: dict[str, VethPlan] = {}
    for c in containers:
        ns = container_netns(c, names)
        if ns is None:
            continue
        namespaces.add(ns)
        for i, ep in enumerate(c.endpoints):
            net = networks.get(ep.network_id)
            if net is None or net.bridge_ifname is None:
                continue
            plan = veth_plan(c, ep, net, names, default_route=i == 0)
            endpoints[plan.host_ifname] = plan
    return Picture(bridges, taps, frozenset(namespaces), endpoints)


# ---- decisions ------------------------------------------------------------------------------


def containers_on(network_id: str, containers: Iterable[Container]) -> list[Container]:
    return [c for c in containers if c.endpoint_on(network_id)]


def choose_address(
    net: Network, containers: Iterable[Container], requested: str | None
) -> tuple[str, str]:
    """A local network's next free address (or the one asked for) and its MAC (02:42 + IP).

    The gateway and the addresses of every endpoint already on the network are taken; the
    choice is the lowest free one inside `--ip-range` when the network has one (Docker's IPAM).
    """
    assert net.subnet and net.gateway
    cfg = ipam.IpamConfig(
        IPv4Network(net.subnet),
        IPv4Address(net.gateway),
        IPv4Network(net.ip_range) if net.ip_range else None,
    )
    taken = [
        IPv4Address(e.ip)
        for c in containers
        for e in c.endpoints
        if e.network_id == net.id and e.ip
    ]
    try:
        addr = ipam.allocate_address(cfg, taken, requested)
    except ipam.IpamError as e:
        raise InvalidArgument(str(e)) from None
    return str(addr), ipam.mac_for(addr)


def check_removable(net: Network, containers: Iterable[Container]) -> None:
    """`network rm`: never a predefined network, never one with endpoints (Docker's errors)."""
    if net.name in PREDEFINED_NETWORKS:
        raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
    users = containers_on(net.id, containers)
    if users:
        names = ", ".join(c.name for c in users)
        raise Conflict(
            f"error while removing network: network {net.name} id {net.id} has active "
            f"endpoints ({names}): disconnect or remove them first"
        )


def check_attachable(net: Network, ref: str) -> None:
    """A swarm network reaches a host for a container only if it was created --attachable."""
    if not net.attachable:
        raise Forbidden(
            f"Could not attach to network {ref}: network {net.name} is not manually "
            "attachable; create it with `network create -d overlay --attachable`"
        )


def retired(networks: Mapping[str, Network], containers: Iterable[Container]) -> list[Network]:
    """Swarm networks no local container uses: they leave this host (lazy extension, undone).

    This holds after a `kill -9` too: a `run` killed between bringing the network here and
    saving its container leaves the network with no container, and it goes at restart.
    """
    cs = list(containers)
    return [n for n in networks.values() if n.scope == "swarm" and not containers_on(n.id, cs)]


def needs_relaunch(c: Container, alive: bool, ended_by_itself: bool) -> bool:
    """At restart: a container meant to run whose process died with the host or the agent
    (not one that exited by itself: its exit file says so) is started again."""
    return c.status == Status.RUNNING and not alive and not ended_by_itself


# Docker's option naming the VNI of an overlay network (libnetwork drivers/overlay).
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
# An interface MTU: IPv4's minimum (RFC 791) up to what the length field allows.
MTU_MIN, MTU_MAX = 68, 65535


def decide_network(
    req: NetworkCreate,
    networks: Mapping[str, Network],
    host_subnets: Iterable[tuple[str, IPv4Network]],
    net_id: str,
    now_iso: str,
    overlay_capable: bool = True,
) -> Network:
    """`network create` on this host: Docker's checks and choices, the record it makes.

    `host_subnets` are the subnets of this host's own addresses (the underlay included): a new
    network's subnet never overlaps them nor another network's."""
    try:
        check_object_name(req.name, "network")
    except BadName as e:
        raise InvalidArgument(str(e)) from None
    if any(n.name == req.name for n in networks.values()):
        raise Conflict(f"network with name {req.name} already exists")
    if req.driver not in ("bridge", "overlay"):
        raise InvalidArgument(
            f"driver {req.driver!r} is not available here: use -d bridge or -d overlay"
        )
    overlay = req.driver == "overlay"
    if overlay and not overlay_capable:
        raise InvalidArgument("this agent has no VXLAN data plane: overlay networks need one")
    options = dict(req.options)
    bridge_name = options.get(BRIDGE_NAME_OPTION)
    try:
        if bridge_name is not None:
            check_ifname(bridge_name)
    except BadName as e:
        raise InvalidArgument(str(e)) from None
    if bridge_name and any(n.bridge_ifname == bridge_name for n in networks.values()):
        raise Conflict(f"bridge name {bridge_name} is already used by another network")
    mtu = parse_mtu(options.get(MTU_OPTION), OVERLAY_MTU if overlay else BRIDGE_MTU)
    if overlay:
        try:  # refused here, not first when a container attaches
            check_overlay_options(options)
        except OptionError as e:
            raise InvalidArgument(str(e)) from None
    vni = pick_vni(options, networks) if overlay else None
    used = [(f"network {n.name}", IPv4Network(n.subnet)) for n in networks.values() if n.subnet]
    used += list(host_subnets)
    pools = ipam.OVERLAY_POOLS if overlay else ipam.BRIDGE_POOLS
    try:
        if req.subnet:
            subnet = ipam.parse_subnet(req.subnet)
            ipam.check_subnet_free(subnet, used)
        elif req.gateway or req.ip_range:
            raise InvalidArgument("--gateway and --ip-range need --subnet: give the subnet")
        else:
            subnet = ipam.allocate_subnet(pools, (u for _, u in used))
        cfg = ipam.make_config(subnet, req.gateway)
        ip_range = ipam.parse_ip_range(req.ip_range, subnet) if req.ip_range else None
    except ipam.IpamError as e:
        raise InvalidArgument(str(e)) from None
    return Network(
        id=net_id,
        name=req.name,
        driver=Driver.OVERLAY if overlay else Driver.BRIDGE,
        created=now_iso,
        subnet=str(cfg.subnet),
        gateway=str(cfg.gateway),
        mtu=mtu,
        options=options,
        labels=dict(req.labels),
        internal=req.internal,
        attachable=req.attachable,
        vni=vni,
        ip_range=str(ip_range) if ip_range else None,
    )


def pick_vni(options: Mapping[str, str], networks: Mapping[str, Network]) -> int:
    """The VNI asked for (`-o vni=N`, or Docker's vxlanid_list), else the lowest free one."""
    taken = {n.vni for n in networks.values() if n.vni is not None}
    text = options.get("vni") or options.get(VNI_OPTION)
    if text is None:
        return next(v for v in range(VNI_FIRST, VNI_MAX + 1) if v not in taken)
    try:
        vni = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid VNI {text!r}: expected a number") from None
    if not 1 <= vni <= VNI_MAX:
        raise InvalidArgument(f"invalid VNI {vni}: must be between 1 and {VNI_MAX} (24 bits)")
    if vni in taken:
        raise Conflict(f"VNI {vni} is already used by another overlay network on this host")
    return vni


def parse_mtu(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        mtu = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid MTU {text!r}: expected a number") from None
    if not MTU_MIN <= mtu <= MTU_MAX:
        raise InvalidArgument(f"invalid MTU {mtu}: must be between {MTU_MIN} and {MTU_MAX}")
    return mtu


def check_ipv4(text: str, what: str) -> str:
    try:
        return str(IPv4Address(text))
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}: expected an IPv4 address") from None


def check_mac(text: str) -> str:
    """An endpoint's MAC given by hand, normalised (wire.ethernet parses it)."""
    try:
        mac = mac_to_bytes(text)
    except ValueError:
        raise InvalidArgument(
            f"invalid MAC address {text!r}: expected six hex pairs like 02:42:0a:00:00:02"
        ) from None
    if is_group(mac):
        raise InvalidArgument(
            f"invalid MAC address {text!r}: a multicast MAC cannot be an endpoint"
        )
    return mac_to_str(mac)


# ---- a container's files ---------------------------------------------------------------------


# RFC 1123: a hostname is dot-separated labels of letters, digits and inner hyphens, each at
# most 63 characters; the kernel's UTS name holds at most 64 (HOST_NAME_MAX).
_HOSTNAME_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
HOSTNAME_MAX = 64


def check_hostname(name: str) -> None:
    """`run --hostname NAME`: a valid RFC 1123 hostname the kernel can hold, or a clear error."""
    labels = name.split(".")
    if len(name) > HOSTNAME_MAX or not all(_HOSTNAME_LABEL.fullmatch(x) for x in labels):
        raise InvalidArgument(
            f"invalid hostname {name!r}: expected letters, digits, hyphens and dots "
            f"(RFC 1123), at most {HOSTNAME_MAX} characters"
        )


def hosts_file(c: Container, hostname: str) -> str:
    """/etc/hosts as Docker writes it: localhost, then the container's hostname (its
    `--hostname`, else its short id: `Container.uts_name`) per address."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines += [f"{e.ip}\t{hostname}" for e in c.endpoints if e.ip]
    return "\n".join(lines) + "\n"


def resolv_conf(c: Container, networks: Mapping[str, Network], host_resolv: str | None) -> str:
    """/etc/resolv.conf: the embedded DNS on a network that resolves names; else the host's
    resolvers without loopback ones (as Docker copies them for `bridge`); `host_resolv` None
    means a lab host, which has no way out."""
    if any(
        networks[e.network_id].has_name_resolution for e in c.endpoints if e.network_id in networks
    ):
        # The embedded DNS answers here (Docker's 127.0.0.11); ndots:0 as Docker writes it.
        return "nameserver 127.0.0.11\noptions ndots:0\n"
    if host_resolv is None:
        return "# lab host: no resolvers outside the lab\n"
    keep = [line for line in host_resolv.splitlines() if not _loopback_resolver(line)]
    return "\n".join(keep) + "\n"


def _loopback_resolver(line: str) -> bool:
    """A `nameserver 127.…` line: the host's own resolver, unreachable from a container."""
    words = line.split()
    return line.startswith("nameserver") and len(words) > 1 and words[1].startswith("127.")


# ---- endpoint table -> planes (FDB, ARP, DNS) ----------------------------------------------


def local_records(
    containers: Iterable[Container], networks: Mapping[str, Network], host_ip: str
) -> dict[tuple[str, str], EndpointRecord]:
    """(network id, endpoint id) → record, for running containers on swarm networks: what
    this host publishes in the endpoint table."""
    out = {}
    for c in containers:
        if c.status != Status.RUNNING:
            continue
        for ep in c.endpoints:
            net = networks.get(ep.network_id)
            if net is None or net.scope != "swarm" or not ep.ip or not ep.mac:
                continue
            out[(net.id, ep.id)] = EndpointRecord(
                c.name, c.id, ep.ip, ep.mac, host_ip, tuple(ep.aliases)
            )
    return out


@dataclass(frozen=True)
class NetworkPlanes:
    """One overlay network as the VTEP and DNS should see other hosts' endpoints."""

    endpoints: frozenset[RemoteEndpoint]  # FDB entries (MAC → VTEP) and ARP answers (IP → MAC)
    names: tuple[NameRecord, ...]


def translate(net: Network, remote: Iterable[EndpointRecord]) -> NetworkPlanes:
    """Other hosts' entries of a swarm network → FDB/ARP entries and DNS names."""
    assert net.vni is not None
    recs = list(remote)
    return NetworkPlanes(
        endpoints=frozenset(RemoteEndpoint(net.vni, r.mac, r.ip, r.host) for r in recs),
        names=tuple(name for r in recs for name in r.dns_records(net.id)),
    )
