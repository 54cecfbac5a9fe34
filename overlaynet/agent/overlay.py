"""The overlay driver: one host's VTEP, and each overlay network's bridge port on it.

Per overlay network the runtime builds a bridge; this driver adds the TAP (`on-tap-…`) that the
VTEP reads and writes, attaches it to the bridge, and feeds the VTEP the network's peers and
remote endpoints: the static ones a user gives (`network peer`, `network fdb`), and later the
ones the control plane learns. The VTEP itself lives in `dataplane/`.

An encrypted overlay (`--opt encrypted`, issue 18) gets the data keys the managers hand out
(`set_data_keys`, before the TAP joins the bridge, so no frame ever leaves it plain) and takes
no static peers or endpoints: those may be kernel VTEPs, which cannot open sealed frames.

`--opt learning=on` (`dataplane.options`) turns on the VTEP's MAC learning for the network, for
static-peer overlays toward kernel VTEPs; `network inspect` shows it under DataPlane.learning.

`--opt offload=on` (issue 15) opens the network's TAP with offloads; TCP super-frames then
cross whole to the peers whose agents advertised offload in their gossip participation
(`learn_offload`, `offload_addresses`), and RFC 7348 to every other peer (static ones always).
`network inspect` shows DataPlane.offload with the wire of each peer.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from overlaynet.dataplane.datakeys import ENCRYPTED_OPTION
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dataplane.options import learning_wanted, network_offload
from overlaynet.dataplane.seal import DataKey
from overlaynet.host import links
from overlaynet.model import Network
from overlaynet.names import KernelNames

if TYPE_CHECKING:
    # The VTEP's modules (the hot path, its C drains: ~3 MiB) are the agent's to import when
    # it starts the data plane with the first overlay (daemon `_run_vtep`), issue 15.
    from overlaynet.dataplane.vtep import Vtep
    from overlaynet.gossip.service import GossipService

log = logging.getLogger(__name__)


def offload_addresses(gossip: GossipService | None, network_id: str, me: str | None) -> set[str]:
    """Underlay addresses of the live hosts of a network whose agents advertised offload in
    their gossip participation (`gossip.tables.NetworkTables.offload_participants`)."""
    if gossip is None:
        return set()
    from overlaynet.gossip.swim import LIVE_STATES

    names = gossip.node.tables.offload_participants(network_id) - {me}
    return {m.addr[0] for m in gossip.members() if m.name in names and m.state in LIVE_STATES}


@dataclass(frozen=True)
class StaticEndpoint:
    """A remote endpoint given by hand: MAC behind a host's VTEP, with its IP for ARP."""

    mac: str
    host: str
    ip: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"mac": self.mac, "host": self.host, "ip": self.ip}


class OverlayDriver:
    """Owns the VTEP (created with the first overlay network) and the networks' TAPs."""

    def __init__(self, local_ip: str | None) -> None:
        self.local_ip = local_ip
        self.vtep: Vtep | None = None
        self._vni_of: dict[str, int] = {}
        self._nets: dict[str, Network] = {}
        self._remote: dict[str, set[RemoteEndpoint]] = {}
        # What the control plane knows per network: other hosts' endpoints and the hosts in it.
        self._learned: dict[str, set[RemoteEndpoint]] = {}
        self._learned_peers: dict[str, set[str]] = {}
        # Hosts whose agents advertised offload, per network (gossip; never static peers).
        self._offload_peers: dict[str, set[str]] = {}
        # Encrypted networks' keyrings (primary first), by network id, attached or not yet.
        self._keys: dict[str, list[DataKey]] = {}

    def _ensure_vtep(self) -> Vtep:
        """The VTEP the agent runs as a plane of its nursery (it starts it before a request
        that may attach an overlay: this driver never starts threads of its own)."""
        if self.vtep is None:
            if self.local_ip is None:
                raise RuntimeError(
                    "this host has no underlay address for VXLAN: start the agent with "
                    "--advertise-addr IP"
                )
            raise RuntimeError("the VXLAN data plane is not running")
        return self.vtep

    def attach(self, net: Network) -> None:
        """Serve the network: TAP on its bridge, peers and static endpoints in the VTEP."""
        assert net.vni is not None and net.bridge_ifname
        vtep = self._ensure_vtep()
        if net.id in self._vni_of:
            self.detach(net)
        keys = self._keys.get(net.id)
        if self.encrypted(net) and not keys:
            raise RuntimeError(
                f"network {net.name} is encrypted and its data key has not come from the "
                "managers yet: retry in a moment"
            )
        self._check_static(net)
        learning = learning_wanted(net.options)
        offload = network_offload(net.options, net.labels) and not self.encrypted(net)
        tap = KernelNames.tap(net.id)
        vtep.add_network(net.vni, tap, net.mtu, offload=offload)
        self._vni_of[net.id] = net.vni
        self._nets[net.id] = net
        try:
            if keys:
                vtep.set_keys(net.vni, keys)
            if learning:
                # Before the TAP joins the bridge: the first reply already teaches a MAC.
                vtep.set_learning(net.vni)
            with links.ipr() as sock:
                idx = links.index_of(sock, tap)
                bridge = links.index_of(sock, net.bridge_ifname)
                links.disable_ipv6(tap)
                sock.link("set", index=idx, master=bridge, state="up")
        except Exception:
            self.detach(net)
            raise
        self.apply_static(net)

    def apply_static(self, net: Network) -> None:
        """(Re)load the peers and static endpoints recorded on the network."""
        self._check_static(net)
        self._nets[net.id] = net
        self._apply(net.id)

    def encrypted(self, net: Network) -> bool:
        return ENCRYPTED_OPTION in net.options or net.id in self._keys

    def _check_static(self, net: Network) -> None:
        if self.encrypted(net) and (net.peers or net.static_endpoints):
            raise ValueError(
                f"network {net.name} is encrypted: it takes no static peers or endpoints "
                "(only the swarm's agents can open its frames, a kernel VTEP cannot)"
            )

    def set_data_keys(self, net_id: str, keys: list[DataKey]) -> None:
        """An encrypted network's keyring from the managers (primary first): applied at once
        if the network is served here, else when it is attached. An empty keyring changes
        nothing: an encrypted network never turns plain."""
        if not keys or self._keys.get(net_id) == keys:
            return
        self._keys[net_id] = list(keys)
        vni = self._vni_of.get(net_id)
        if self.vtep is not None and vni is not None:
            self.vtep.set_keys(vni, keys)
            log.info("network %s data keys now %s", net_id, [k.key_id for k in keys])

    def learn(self, net_id: str, endpoints: Iterable[RemoteEndpoint], peers: Iterable[str]) -> None:
        """What the control plane knows about a network now (replaces what it said before)."""
        self._learned[net_id] = set(endpoints)
        self._learned_peers[net_id] = set(peers)
        self._apply(net_id)

    def learn_offload(self, net_id: str, hosts: Iterable[str]) -> None:
        """The hosts of a network whose agents advertised offload (replaces the last call);
        only gossip peers among them are sent offload datagrams, and only when the network
        has offload on."""
        wanted = set(hosts)
        if self._offload_peers.get(net_id) == wanted:
            return
        self._offload_peers[net_id] = wanted
        self._apply(net_id)

    def _apply(self, net_id: str) -> None:
        """The VTEP gets the union of the static and the learned endpoints and peers."""
        vtep = self.vtep
        vni = self._vni_of.get(net_id)
        net = self._nets.get(net_id)
        if vtep is None or vni is None or net is None:
            return
        learned_peers = self._learned_peers.get(net_id, set())
        vtep.set_peers(vni, set(net.peers) | learned_peers)
        if vtep.offload_mode(vni):
            # Static peers may be kernel VTEPs: RFC 7348 for them, whatever gossip says.
            offload = (self._offload_peers.get(net_id, set()) & learned_peers) - set(net.peers)
            vtep.set_offload_peers(vni, offload)
        wanted = {
            RemoteEndpoint(vni, str(e["mac"]), e.get("ip"), str(e["host"]))
            for e in net.static_endpoints
        } | {ep for ep in self._learned.get(net_id, set()) if ep.vni == vni}
        have = self._remote.get(net_id, set())
        for ep in have - wanted:
            vtep.endpoint_removed(ep)
        for ep in wanted - have:
            vtep.endpoint_added(ep)
        self._remote[net_id] = wanted

    def detach(self, net: Network) -> None:
        vni = self._vni_of.pop(net.id, None)
        self._remote.pop(net.id, None)
        self._nets.pop(net.id, None)
        if self.vtep is not None and vni is not None:
            self.vtep.remove_network(vni)

    def taps(self) -> set[str]:
        return {KernelNames.tap(nid) for nid in self._vni_of}

    def detach_tap(self, ifname: str) -> None:
        """Stop serving the network whose TAP this is (the reconciler knows TAPs by name)."""
        for net in list(self._nets.values()):
            if KernelNames.tap(net.id) == ifname:
                self.detach(net)

    def inspect(self, net: Network) -> dict[str, Any] | None:
        vni = self._vni_of.get(net.id)
        if self.vtep is None or vni is None:
            return None
        return self.vtep.inspect(vni)

    def set_members(self, hosts: Iterable[str]) -> None:
        if self.vtep is not None:
            self.vtep.members = hosts

    def close(self) -> None:
        if self.vtep is not None:
            self.vtep.close()
            self.vtep = None
        self._vni_of.clear()
