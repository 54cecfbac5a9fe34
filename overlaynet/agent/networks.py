"""One host's networks: create, remove, connect and disconnect, the predefined three, and an
overlay's peers and remote endpoints given by hand (a host without a control plane).

The decisions are `hostcore`'s; the records and the kernel follow through `HostRecords`.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Network

from overlaynet.agent import hostcore
from overlaynet.agent.hostrecords import Allocation, HostRecords, now_iso
from overlaynet.agent.overlay import StaticEndpoint
from overlaynet.agent.requests import NetworkCreate
from overlaynet.cluster import ipam
from overlaynet.errors import Conflict, InvalidArgument, NotFound
from overlaynet.host import links
from overlaynet.model import (
    BRIDGE_NAME_OPTION,
    DEFAULT_BRIDGE_IFNAME,
    PREDEFINED_NETWORKS,
    Container,
    Driver,
    Network,
)
from overlaynet.names import new_id


class NetworkOps(HostRecords):
    """The network requests of a host's runtime (a part of `Runtime`)."""

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

    def _host_subnets(self) -> list[tuple[str, IPv4Network]]:
        """Subnets of every address on this host but our bridges' (the underlay included)."""
        ours = {n.bridge_ifname for n in self.networks.values()}
        return [
            (f"interface {ifname}", iface.network)
            for ifname, iface in links.addresses()
            if ifname not in ours and not iface.ip.is_loopback
        ]

    def network_create(self, req: NetworkCreate) -> Network:
        net = hostcore.decide_network(
            req,
            self.networks,
            self._host_subnets(),
            new_id(),
            now_iso(),
            overlay_capable=self.overlay is not None,
        )
        self._add_network(net)
        self._network_event(net, "create")
        return net

    def network_rm(self, ref: str) -> Network:
        net = self.network(ref)
        hostcore.check_removable(net, self.containers.values())
        del self.networks[net.id]
        self._apply_or_undo(
            lambda: self.networks.setdefault(net.id, net), f"cannot remove network {net.name}"
        )
        self.store.delete_network(net.id)
        self._network_event(net, "destroy")
        return net

    def network_connect(
        self,
        net_ref: str,
        container_ref: str,
        ip: str | None = None,
        aliases: Iterable[str] = (),
        swarm_net: Network | None = None,
        allocation: Allocation | None = None,
    ) -> Container:
        c = self.container(container_ref)
        net = self.attach_target(net_ref, swarm_net)
        first = not c.endpoints
        try:
            if c.network_mode == "host" or net.driver == Driver.HOST:
                raise InvalidArgument(
                    "container cannot be disconnected from host network or connected to host "
                    "network"
                )
            if net.driver == Driver.NULL:
                raise InvalidArgument("container cannot be connected to the none network")
            if c.endpoint_on(net.id):
                raise Conflict(f"endpoint with name {c.name} already exists in network {net.name}")
            if aliases and not net.has_name_resolution:
                raise InvalidArgument(
                    "network-scoped aliases are only supported for user-defined networks"
                )
            ep = self._new_endpoint(c, net, ip, list(aliases), first, allocation)
        except BaseException:
            self._retire_if_unused(net)  # a swarm network brought here for nothing goes again
            raise
        c.endpoints.append(ep)
        ns = self.container_netns(c)
        try:
            self._apply_or_undo(
                lambda: c.endpoints.remove(ep),
                f"cannot connect {c.name} to {net.name}",
                probe=[ns] if ns else [],
            )
        except BaseException:
            self._retire_if_unused(net)
            raise
        if c.network_mode == "none":
            c.network_mode = net.name
        self.store.put_container(c)
        self._write_container_files(c)
        self.generation += 1
        self._network_event(net, "connect", c)
        return c

    def network_disconnect(self, net_ref: str, container_ref: str) -> Container:
        net = self.network(net_ref)
        c = self.container(container_ref)
        ep = c.endpoint_on(net.id)
        if ep is None:
            raise NotFound(f"container {c.name} is not connected to network {net.name}")
        c.endpoints.remove(ep)
        self._apply_or_undo(
            lambda: c.endpoints.append(ep), f"cannot disconnect {c.name} from {net.name}"
        )
        self.store.put_container(c)
        self._write_container_files(c)
        self._network_event(net, "disconnect", c)
        self._retire_if_unused(net)
        self.generation += 1
        return c

    # ---- overlay peers and endpoints given by hand ----------------------------------------

    def _overlay_network(self, ref: str) -> Network:
        net = self.network(ref)
        if net.driver != Driver.OVERLAY:
            raise InvalidArgument(f"network {net.name} is not an overlay network")
        return net

    def overlay_peer(self, ref: str, host_ip: str, add: bool) -> Network:
        """Add or remove a host that gets broadcast and unknown-unicast frames (head-end)."""
        net = self._overlay_network(ref)
        ip = hostcore.check_ipv4(host_ip, "peer address")
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
        mac = hostcore.check_mac(mac)
        others = [e for e in net.static_endpoints if e["mac"] != mac]
        if add:
            if host_ip is None:
                raise InvalidArgument("a static endpoint needs the host (VTEP) it lives behind")
            entry = StaticEndpoint(
                mac,
                hostcore.check_ipv4(host_ip, "host address"),
                hostcore.check_ipv4(ip, "IP") if ip else None,
            )
            others.append(entry.to_json())
        elif len(others) == len(net.static_endpoints):
            raise NotFound(f"no static endpoint {mac} on network {net.name}")
        net.static_endpoints = others
        self.store.put_network(net)
        if self.overlay is not None:
            self.overlay.apply_static(net)
        return net
