"""One host's networks and containers: the decisions, the store and the kernel kept in step.

Synchronous on purpose: the agent calls it from a worker thread under one lock, so every request
sees and leaves a consistent state. Every change is written to the store before it is answered,
and `restore()` rebuilds the kernel side from the store after a crash or restart.
"""

from __future__ import annotations

import datetime
import logging
import subprocess
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from typing import Protocol, TypeVar

from overlaynet.agent.overlay import OverlayDriver, StaticEndpoint
from overlaynet.agent.requests import ContainerCreate, NetworkCreate
from overlaynet.agent.store import Store
from overlaynet.cluster import ipam
from overlaynet.errors import Conflict, Forbidden, InvalidArgument, NotFound, Unavailable
from overlaynet.host import links, netns, process
from overlaynet.model import (
    BRIDGE_MTU,
    BRIDGE_NAME_OPTION,
    DEFAULT_BRIDGE_IFNAME,
    MTU_OPTION,
    OVERLAY_MTU,
    PREDEFINED_NETWORKS,
    Container,
    Driver,
    Endpoint,
    Network,
    Status,
)
from overlaynet.names import (
    LINK_PREFIX,
    BadName,
    KernelNames,
    check_ifname,
    check_object_name,
    new_id,
    short_id,
)

log = logging.getLogger(__name__)


# Docker's timestamps: RFC 3339 in UTC (Docker prints nanoseconds; Python has microseconds).
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def iso_from_epoch(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime(TIME_FORMAT)


def epoch_from_iso(iso: str) -> float:
    return datetime.datetime.strptime(iso, TIME_FORMAT).replace(tzinfo=datetime.UTC).timestamp()


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime(TIME_FORMAT)


_Named = TypeVar("_Named", Network, Container)


class ClusterHook(Protocol):
    """How the runtime reaches swarm state (the agent implements it; calls may block)."""

    def find_network(self, ref: str) -> Network | None:
        """A swarm-scoped network by name or id, as a local record (not yet saved)."""

    def allocate(self, net: Network, endpoint_id: str, ip: str | None) -> tuple[str, str]:
        """An address (and its MAC) for an endpoint, from the managers' IPAM."""

    def release(self, net: Network, endpoint_id: str) -> None:
        """Give an endpoint's address back."""


# Adjectives and names for containers started without --name, as Docker does (names-generator).
_LEFT = ("admiring", "brave", "clever", "dreamy", "eager", "focused", "gallant", "happy", "keen")
_RIGHT = ("babbage", "curie", "dijkstra", "hopper", "lovelace", "noether", "shannon", "turing")


class Runtime:
    """Networks and containers of one host; `names` says how its kernel objects are named."""

    def __init__(
        self,
        host: str,
        state_dir: Path,
        names: KernelNames,
        copy_host_resolv: bool = True,
        overlay: OverlayDriver | None = None,
    ) -> None:
        self.host = host
        self.overlay = overlay
        # Set by the agent while this host is in a swarm.
        self.cluster: ClusterHook | None = None
        # A lab host has no way out: its containers get no copy of the machine's resolvers.
        self.copy_host_resolv = copy_host_resolv
        self.state_dir = state_dir
        self.names = names
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "containers").mkdir(exist_ok=True)
        self.store = Store(state_dir / "state.db")
        self.networks: dict[str, Network] = {n.id: n for n in self.store.networks()}
        self.containers: dict[str, Container] = {c.id: c for c in self.store.containers()}
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        # Bumped by every change other planes (DNS, overlay) follow: endpoints, running state.
        self.generation = 0

    # ---- lookups ------------------------------------------------------------------------

    def network(self, ref: str) -> Network:
        """By full id, name, or unique id prefix (Docker's rules)."""
        return _lookup(self.networks, ref, "network", f"network {ref} not found")

    def container(self, ref: str) -> Container:
        return _lookup(self.containers, ref.lstrip("/"), "container", f"No such container: {ref}")

    def attach_target(self, ref: str) -> Network:
        """The network a container attaches to: a local one, or a swarm network brought here.

        Swarm networks reach a host only when a container there needs them (lazy extension):
        the local record, bridge and TAP are made now and go with the last local container.
        """
        try:
            return self.network(ref)
        except NotFound:
            if self.cluster is None:
                raise
        net = self.cluster.find_network(ref)
        if net is None:
            raise NotFound(f"network {ref} not found") from None
        if not net.attachable:
            raise Forbidden(
                f"Could not attach to network {ref}: network {net.name} is not manually "
                "attachable; create it with `network create -d overlay --attachable`"
            )
        self._add_network(net)
        return net

    def _retire_if_unused(self, net: Network) -> None:
        """The last local container left a swarm network: it leaves this host too."""
        if net.scope != "swarm" or self.containers_on(net.id):
            return
        self._unbuild_bridge(net)
        self.store.delete_network(net.id)
        self.networks.pop(net.id, None)
        self.generation += 1

    def _release(self, c: Container, endpoints: Iterable[Endpoint]) -> None:
        for ep in endpoints:
            net = self.networks.get(ep.network_id)
            if net is None or net.scope != "swarm" or self.cluster is None:
                continue
            try:
                self.cluster.release(net, ep.id)
            except Exception as e:  # the address stays taken; say so, do not fail the removal
                log.warning("could not release %s on %s: %s", ep.ip, net.name, e)

    def containers_on(self, network_id: str) -> list[Container]:
        return [c for c in self.containers.values() if c.endpoint_on(network_id)]

    def container_dir(self, c: Container) -> Path:
        return self.state_dir / "containers" / c.id

    def container_netns(self, c: Container) -> str | None:
        return None if c.network_mode == "host" else self.names.container_netns(c.id)

    # ---- networks -----------------------------------------------------------------------

    def ensure_predefined(self) -> None:
        """The networks every host has: `bridge` (no name resolution), `host` and `none`."""
        have = {n.name for n in self.networks.values()}
        for name in PREDEFINED_NETWORKS:
            if name in have:
                continue
            if name == "bridge":
                cfg = ipam.make_config(ipam.DEFAULT_BRIDGE_SUBNET)
                net = Network(
                    id=new_id(),
                    name="bridge",
                    driver=Driver.BRIDGE,
                    created=now_iso(),
                    subnet=str(cfg.subnet),
                    gateway=str(cfg.gateway),
                    options={BRIDGE_NAME_OPTION: DEFAULT_BRIDGE_IFNAME},
                )
            else:
                driver = Driver.HOST if name == "host" else Driver.NULL
                net = Network(id=new_id(), name=name, driver=driver, created=now_iso())
            self._save_network(net)

    def _save_network(self, net: Network) -> None:
        self.store.put_network(net)
        self.networks[net.id] = net

    def _used_subnets(self) -> list[tuple[str, IPv4Network]]:
        """Subnets of our networks and of every address on this host (the underlay included)."""
        used = [
            (f"network {n.name}", IPv4Network(n.subnet)) for n in self.networks.values() if n.subnet
        ]
        ours = {n.bridge_ifname for n in self.networks.values()}
        for ifname, iface in links.addresses():
            if ifname not in ours and not iface.ip.is_loopback:
                used.append((f"interface {ifname}", iface.network))
        return used

    def network_create(self, req: NetworkCreate) -> Network:
        try:
            check_object_name(req.name, "network")
        except BadName as e:
            raise InvalidArgument(str(e)) from None
        if any(n.name == req.name for n in self.networks.values()):
            raise Conflict(f"network with name {req.name} already exists")
        if req.driver not in ("bridge", "overlay"):
            raise InvalidArgument(
                f"driver {req.driver!r} is not available here: use -d bridge or -d overlay"
            )
        overlay = req.driver == "overlay"
        if overlay and self.overlay is None:
            raise InvalidArgument("this agent has no VXLAN data plane: overlay networks need one")
        options = dict(req.options)
        bridge_name = options.get(BRIDGE_NAME_OPTION)
        try:
            if bridge_name is not None:
                check_ifname(bridge_name)
        except BadName as e:
            raise InvalidArgument(str(e)) from None
        if bridge_name and any(n.bridge_ifname == bridge_name for n in self.networks.values()):
            raise Conflict(f"bridge name {bridge_name} is already used by another network")
        mtu = _parse_mtu(options.get(MTU_OPTION), OVERLAY_MTU if overlay else BRIDGE_MTU)
        vni = self._pick_vni(options) if overlay else None
        used = self._used_subnets()
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
        net = Network(
            id=new_id(),
            name=req.name,
            driver=Driver.OVERLAY if overlay else Driver.BRIDGE,
            created=now_iso(),
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
        self._add_network(net)
        return net

    def _add_network(self, net: Network) -> None:
        """Build the network's bridge, then record it; a failure undoes both."""
        self._build_bridge(net)
        try:
            self._save_network(net)
        except Exception:
            self._unbuild_bridge(net)
            raise

    def _pick_vni(self, options: dict[str, str]) -> int:
        """The VNI asked for (`-o vni=N`, or Docker's vxlanid_list), else the lowest free one."""
        taken = {n.vni for n in self.networks.values() if n.vni is not None}
        text = options.get("vni") or options.get(VNI_OPTION)
        if text is None:
            return next(v for v in range(FIRST_VNI, VNI_MAX + 1) if v not in taken)
        try:
            vni = int(text)
        except ValueError:
            raise InvalidArgument(f"invalid VNI {text!r}: expected a number") from None
        if not 1 <= vni <= VNI_MAX:
            raise InvalidArgument(f"invalid VNI {vni}: must be between 1 and {VNI_MAX} (24 bits)")
        if vni in taken:
            raise Conflict(f"VNI {vni} is already used by another overlay network on this host")
        return vni

    def _build_bridge(self, net: Network) -> None:
        """The network's bridge; an overlay's has no address and a TAP into the VTEP."""
        assert net.bridge_ifname and net.subnet and net.gateway
        overlay = net.driver == Driver.OVERLAY
        prefix = IPv4Network(net.subnet).prefixlen
        # An overlay's gateway address would exist on every host at once: it stays unassigned
        # (Docker routes overlay containers out through a second, local bridge instead).
        addr = None if overlay else IPv4Interface(f"{net.gateway}/{prefix}")
        try:
            links.ensure_bridge(net.bridge_ifname, addr, net.mtu)
            if overlay and self.overlay is not None:
                self.overlay.attach(net)
        except (links.LinkError, OSError, RuntimeError, ValueError) as e:
            self._unbuild_bridge(net)
            raise Unavailable(f"cannot create network {net.name}: {e}") from None

    def _unbuild_bridge(self, net: Network) -> None:
        if net.driver == Driver.OVERLAY and self.overlay is not None:
            self.overlay.detach(net)
        if net.bridge_ifname:
            links.delete(net.bridge_ifname)

    def network_rm(self, ref: str) -> Network:
        net = self.network(ref)
        if net.name in PREDEFINED_NETWORKS:
            raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
        users = self.containers_on(net.id)
        if users:
            names = ", ".join(c.name for c in users)
            raise Conflict(
                f"error while removing network: network {net.name} id {net.id} has active "
                f"endpoints ({names}): disconnect or remove them first"
            )
        self._unbuild_bridge(net)
        self.store.delete_network(net.id)
        del self.networks[net.id]
        return net

    # ---- containers ---------------------------------------------------------------------

    def _pick_name(self) -> str:
        taken = {c.name for c in self.containers.values()}
        for left in _LEFT:
            for right in _RIGHT:
                if f"{left}_{right}" not in taken:
                    return f"{left}_{right}"
        return f"container_{len(taken)}"

    def container_create(self, req: ContainerCreate) -> Container:
        name = req.name or self._pick_name()
        try:
            check_object_name(name, "container")
        except BadName as e:
            raise InvalidArgument(str(e)) from None
        for other in self.containers.values():
            if other.name == name:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )
        net = self.attach_target(req.network)
        if req.ip and net.driver in (Driver.HOST, Driver.NULL):
            raise InvalidArgument(f"--ip is not allowed on network {net.name}")
        if req.aliases and not net.has_name_resolution:
            raise InvalidArgument(
                "network-scoped aliases are only supported for user-defined networks"
            )
        c = Container(
            id=new_id(),
            name=name,
            image=req.image,
            cmd=list(req.cmd) or list(process.IDLE_COMMAND),
            created=now_iso(),
            network_mode="host" if net.driver == Driver.HOST else net.name,
            env=list(req.env),
            open_stdin=req.interactive,
        )
        ns = self.container_netns(c)
        self.container_dir(c).mkdir(parents=True, exist_ok=True)
        try:
            if ns is not None:
                netns.create(ns, ipv6=False)
            if net.driver in (Driver.BRIDGE, Driver.OVERLAY):
                ep = self._new_endpoint(c, net, req.ip, list(req.aliases), first=True)
                c.endpoints.append(ep)  # before building: a failure below releases it
                self._build_endpoint(c, ep, net, default_route=True)
            self.store.put_container(c)
        except BaseException:
            self._release(c, c.endpoints)
            if ns is not None:
                netns.remove(ns)
            _rmtree(self.container_dir(c))
            self._retire_if_unused(net)
            raise
        self.containers[c.id] = c
        self._write_container_files(c)
        self.generation += 1
        return c

    def _new_endpoint(
        self, c: Container, net: Network, ip: str | None, aliases: list[str], first: bool
    ) -> Endpoint:
        assert net.subnet and net.gateway
        for alias in aliases:
            try:
                check_object_name(alias, "alias")
            except BadName as e:
                raise InvalidArgument(str(e)) from None
        ifname = "eth0" if first else f"eth{_next_eth(c.endpoints)}"
        endpoint_id = new_id()
        if net.scope == "swarm" and self.cluster is not None:
            ip_text, mac = self.cluster.allocate(net, endpoint_id, ip)
            return Endpoint(endpoint_id, net.id, ifname, ip_text, mac, list(aliases))
        cfg = ipam.IpamConfig(
            IPv4Network(net.subnet),
            IPv4Address(net.gateway),
            IPv4Network(net.ip_range) if net.ip_range else None,
        )
        taken = [
            IPv4Address(e.ip)
            for other in self.containers_on(net.id)
            for e in other.endpoints
            if e.network_id == net.id and e.ip
        ]
        try:
            addr = ipam.allocate_address(cfg, taken, ip)
        except ipam.IpamError as e:
            raise InvalidArgument(str(e)) from None
        return Endpoint(
            id=endpoint_id,
            network_id=net.id,
            ifname=ifname,
            ip=str(addr),
            mac=ipam.mac_for(addr),
            aliases=list(aliases),
        )

    def _veth_plan(
        self, c: Container, ep: Endpoint, net: Network, default_route: bool
    ) -> links.VethPlan:
        ns = self.container_netns(c)
        assert ns is not None and net.bridge_ifname and net.subnet
        prefix = IPv4Network(net.subnet).prefixlen
        return links.VethPlan(
            host_ifname=KernelNames.veth_host(ep.id),
            temp_ifname=KernelNames.veth_temp(ep.id),
            bridge=net.bridge_ifname,
            container_netns=ns,
            ifname=ep.ifname,
            mac=ep.mac,
            address=IPv4Interface(f"{ep.ip}/{prefix}") if ep.ip else None,
            gateway=net.gateway if default_route and self._routes_out(net) else None,
            mtu=net.mtu,
        )

    @staticmethod
    def _routes_out(net: Network) -> bool:
        return net.driver == Driver.BRIDGE and not net.internal

    def _build_endpoint(
        self, c: Container, ep: Endpoint, net: Network, default_route: bool
    ) -> None:
        try:
            links.create_endpoint(self._veth_plan(c, ep, net, default_route))
        except (links.LinkError, OSError) as e:
            raise Unavailable(f"cannot connect {c.name} to {net.name}: {e}") from None

    def _write_container_files(self, c: Container) -> None:
        """/etc/hosts and /etc/resolv.conf as the container will see them."""
        d = self.container_dir(c)
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [f"{e.ip}\t{short_id(c.id)}" for e in c.endpoints if e.ip]
        (d / "hosts").write_text("\n".join(lines) + "\n")
        resolv = d / "resolv.conf"
        if any(self.networks[e.network_id].has_name_resolution for e in c.endpoints):
            # The embedded DNS answers here (Docker's 127.0.0.11); ndots:0 as Docker writes it.
            resolv.write_text("nameserver 127.0.0.11\noptions ndots:0\n")
        elif self.copy_host_resolv:
            resolv.write_text(_host_resolv_conf())
        else:
            resolv.write_text("# lab host: no resolvers outside the lab\n")

    def container_start(self, ref: str) -> Container:
        c = self.container(ref)
        if c.status == Status.RUNNING and self._alive(c):
            return c
        self._launch(c)
        return c

    def _launch(self, c: Container) -> None:
        d = self.container_dir(c)
        ns = self.container_netns(c)
        spec = process.Launch(
            netns_path=netns.path(ns) if ns else None,
            cmd=c.cmd,
            hostname=short_id(c.id),
            hosts_file=d / "hosts",
            resolv_file=d / "resolv.conf",
            log_file=d / "output.log",
            exit_file=d / "exitcode",
            env=c.env,
            stdin_fifo=d / "stdin" if c.open_stdin else None,
        )
        try:
            proc, run = process.start(spec)
        except OSError as e:
            raise Unavailable(f"cannot start {c.name}: {e}") from None
        self._children[c.id] = proc
        c.pid, c.pid_start = run.pid, run.start_ticks
        c.status, c.exit_code = Status.RUNNING, None
        c.desired_running = True
        c.started_at, c.finished_at = now_iso(), None
        self.store.put_container(c)
        self.generation += 1

    def _running(self, c: Container) -> process.Running | None:
        if c.pid is None or c.pid_start is None:
            return None
        return process.Running(c.pid, c.pid_start)

    def _alive(self, c: Container) -> bool:
        proc = self._children.get(c.id)
        if proc is not None:
            return proc.poll() is None
        run = self._running(c)
        return run is not None and process.alive(run)

    def container_stop(self, ref: str, timeout: float = process.STOP_TIMEOUT) -> Container:
        c = self.container(ref)
        c.desired_running = False
        self.store.put_container(c)
        run = self._running(c)
        if run is not None and c.status == Status.RUNNING:
            process.stop(run, timeout)
        self.poll()
        return c

    def poll(self) -> list[Container]:
        """Notice containers whose process has ended; returns those that just did."""
        ended = []
        for c in self.containers.values():
            if c.status != Status.RUNNING or self._alive(c):
                continue
            proc = self._children.pop(c.id, None)
            code = process.read_exit_code(self.container_dir(c) / "exitcode")
            if code is None and proc is not None:
                rc = proc.returncode
                code = 128 - rc if rc is not None and rc < 0 else rc
            c.status = Status.EXITED
            c.exit_code = code if code is not None else 137
            c.finished_at = now_iso()
            c.desired_running = False
            self.store.put_container(c)
            ended.append(c)
            self.generation += 1
        return ended

    def container_rm(self, ref: str, force: bool = False) -> Container:
        c = self.container(ref)
        if c.status == Status.RUNNING and self._alive(c):
            if not force:
                raise Conflict(
                    f"You cannot remove a running container {c.id}. Stop the container "
                    "before attempting removal or force remove"
                )
            run = self._running(c)
            if run is not None:
                process.stop(run, timeout=0)
            self.poll()
        self._teardown(c)
        self._release(c, c.endpoints)
        self.store.delete_container(c.id)
        del self.containers[c.id]
        self._children.pop(c.id, None)
        _rmtree(self.container_dir(c))
        for ep in c.endpoints:
            if ep.network_id in self.networks:
                self._retire_if_unused(self.networks[ep.network_id])
        self.generation += 1
        return c

    def _teardown(self, c: Container) -> None:
        for ep in c.endpoints:
            links.delete(KernelNames.veth_host(ep.id))
        ns = self.container_netns(c)
        if ns is not None:
            netns.remove(ns)

    def network_connect(
        self, net_ref: str, container_ref: str, ip: str | None = None, aliases: Iterable[str] = ()
    ) -> Container:
        c = self.container(container_ref)
        net = self.attach_target(net_ref)
        if c.network_mode == "host" or net.driver == Driver.HOST:
            raise InvalidArgument(
                "container cannot be disconnected from host network or connected to host network"
            )
        if net.driver == Driver.NULL:
            raise InvalidArgument("container cannot be connected to the none network")
        if c.endpoint_on(net.id):
            raise Conflict(f"endpoint with name {c.name} already exists in network {net.name}")
        if aliases and not net.has_name_resolution:
            raise InvalidArgument(
                "network-scoped aliases are only supported for user-defined networks"
            )
        first = not c.endpoints
        ep = self._new_endpoint(c, net, ip, list(aliases), first=first)
        try:
            self._build_endpoint(c, ep, net, default_route=first)
        except BaseException:
            self._release(c, [ep])
            self._retire_if_unused(net)
            raise
        c.endpoints.append(ep)
        if c.network_mode == "none":
            c.network_mode = net.name
        self.store.put_container(c)
        self._write_container_files(c)
        self.generation += 1
        return c

    def network_disconnect(self, net_ref: str, container_ref: str) -> Container:
        net = self.network(net_ref)
        c = self.container(container_ref)
        ep = c.endpoint_on(net.id)
        if ep is None:
            raise NotFound(f"container {c.name} is not connected to network {net.name}")
        links.delete(KernelNames.veth_host(ep.id))
        self._release(c, [ep])
        c.endpoints.remove(ep)
        self.store.put_container(c)
        self._write_container_files(c)
        self._retire_if_unused(net)
        self.generation += 1
        return c

    def top(self, ref: str) -> str:
        c = self.container(ref)
        if c.status != Status.RUNNING or c.pid is None or not self._alive(c):
            raise Conflict(f"container {c.name} is not running")
        return process.top(c.pid)

    # ---- restart reconciliation ---------------------------------------------------------

    def restore(self) -> dict[str, int]:
        """Make the kernel match the store: rebuild what is missing, remove strays of ours."""
        counts = {"bridges": 0, "endpoints": 0, "relaunched": 0, "strays": 0}
        self.ensure_predefined()
        for net in self.networks.values():
            if net.driver in (Driver.BRIDGE, Driver.OVERLAY):
                if not links.exists(net.bridge_ifname or ""):
                    counts["bridges"] += 1
                self._build_bridge(net)
        for c in self.containers.values():
            ns = self.container_netns(c)
            if ns is not None:
                netns.create(ns, ipv6=False)
            for i, ep in enumerate(c.endpoints):
                ep_net = self.networks.get(ep.network_id)
                if ep_net is None:
                    continue
                plan = self._veth_plan(c, ep, ep_net, default_route=i == 0)
                if not links.endpoint_ok(plan):
                    links.delete(plan.host_ifname)
                    links.delete(plan.ifname, netns=plan.container_netns)
                    self._build_endpoint(c, ep, ep_net, default_route=i == 0)
                    counts["endpoints"] += 1
            self._write_container_files(c)
            ended_by_itself = process.read_exit_code(self.container_dir(c) / "exitcode") is not None
            if c.status == Status.RUNNING and not self._alive(c) and not ended_by_itself:
                # Killed with the host or the agent, not ended by itself: bring it back.
                self._launch(c)
                counts["relaunched"] += 1
        counts["strays"] = self._remove_strays()
        self.poll()
        return counts

    def expected_links(self) -> set[str]:
        names = {n.bridge_ifname for n in self.networks.values() if n.bridge_ifname}
        for c in self.containers.values():
            names |= {KernelNames.veth_host(e.id) for e in c.endpoints}
        return {n for n in names if n}

    def _remove_strays(self) -> int:
        removed = 0
        keep = self.expected_links() | self.extra_links()
        for link in links.dump():
            if link.ifname.startswith(LINK_PREFIX) and link.ifname not in keep:
                log.info("removing stray link %s", link.ifname)
                links.delete(link.ifname)
                removed += 1
        wanted = {self.container_netns(c) for c in self.containers.values()}
        for ns in netns.list_names(self.names.ns_prefix):
            if self.names.is_container_netns(ns) and ns not in wanted:
                log.info("removing stray namespace %s", ns)
                netns.remove(ns)
                removed += 1
        return removed

    def extra_links(self) -> set[str]:
        """Links other planes own: the overlays' TAPs."""
        return self.overlay.taps() if self.overlay is not None else set()

    # ---- overlay peers and endpoints given by hand ----------------------------------------

    def _overlay_network(self, ref: str) -> Network:
        net = self.network(ref)
        if net.driver != Driver.OVERLAY:
            raise InvalidArgument(f"network {net.name} is not an overlay network")
        return net

    def overlay_peer(self, ref: str, host_ip: str, add: bool) -> Network:
        """Add or remove a host that gets broadcast and unknown-unicast frames (head-end)."""
        net = self._overlay_network(ref)
        ip = _check_ipv4(host_ip, "peer address")
        if add and ip not in net.peers:
            net.peers.append(ip)
        elif not add:
            if ip not in net.peers:
                raise NotFound(f"{ip} is not a peer of network {net.name}")
            net.peers.remove(ip)
        self.store.put_network(net)
        if self.overlay is not None:
            self.overlay.apply_static(net)
        return net

    def overlay_fdb(
        self, ref: str, mac: str, host_ip: str | None, ip: str | None, add: bool
    ) -> Network:
        """Add or remove a remote endpoint by hand: MAC behind a host, IP answered by ARP."""
        net = self._overlay_network(ref)
        mac = _check_mac(mac)
        others = [e for e in net.static_endpoints if e["mac"] != mac]
        if add:
            if host_ip is None:
                raise InvalidArgument("a static endpoint needs the host (VTEP) it lives behind")
            entry = StaticEndpoint(
                mac, _check_ipv4(host_ip, "host address"), _check_ipv4(ip, "IP") if ip else None
            )
            others.append(entry.to_json())
        elif len(others) == len(net.static_endpoints):
            raise NotFound(f"no static endpoint {mac} on network {net.name}")
        net.static_endpoints = others
        self.store.put_network(net)
        if self.overlay is not None:
            self.overlay.apply_static(net)
        return net


# Docker's option naming the VNI of an overlay network (libnetwork drivers/overlay).
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
# Swarm allocates VNIs from 4096 up (libnetwork's overlay driver); 24 bits on the wire.
FIRST_VNI = 4096
VNI_MAX = (1 << 24) - 1


def _check_ipv4(text: str, what: str) -> str:
    try:
        return str(IPv4Address(text))
    except ValueError:
        raise InvalidArgument(f"invalid {what} {text!r}: expected an IPv4 address") from None


def _check_mac(text: str) -> str:
    parts = text.lower().replace("-", ":").split(":")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts
    ):
        raise InvalidArgument(
            f"invalid MAC address {text!r}: expected six hex pairs like 02:42:0a:00:00:02"
        )
    if int(parts[0], 16) & 1:
        raise InvalidArgument(
            f"invalid MAC address {text!r}: a multicast MAC cannot be an endpoint"
        )
    return ":".join(parts)


def _lookup(items: dict[str, _Named], ref: str, what: str, missing: str) -> _Named:
    """Docker's rules for naming an object: full id, then name, then a unique id prefix."""
    if ref in items:
        return items[ref]
    for item in items.values():
        if item.name == ref:
            return item
    matches = [item for key, item in items.items() if key.startswith(ref)] if ref else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise InvalidArgument(f"{what} {ref} is ambiguous: give more of its id")
    raise NotFound(missing)


def _next_eth(endpoints: list[Endpoint]) -> int:
    used = {int(e.ifname[3:]) for e in endpoints if e.ifname[3:].isdigit()}
    return next(i for i in range(len(used) + 1) if i not in used)


def _parse_mtu(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        mtu = int(text)
    except ValueError:
        raise InvalidArgument(f"invalid MTU {text!r}: expected a number") from None
    if not 68 <= mtu <= 65535:
        raise InvalidArgument(f"invalid MTU {mtu}: must be between 68 and 65535")
    return mtu


def _host_resolv_conf() -> str:
    """The host's resolv.conf without loopback resolvers, as Docker copies it for `bridge`."""
    try:
        text = Path("/etc/resolv.conf").read_text()
    except OSError:
        return ""
    keep = [
        line
        for line in text.splitlines()
        if not (
            line.startswith("nameserver")
            and line.split()[1:2]
            and line.split()[1].startswith("127.")
        )
    ]
    return "\n".join(keep) + "\n"


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)
