"""The agent's network requests: create, ls, inspect, rm, connect, disconnect, and an
overlay's peers and endpoints given by hand.

`NetworkRequests(agent)` is bound to the agent as its other planes are (`LbPlane`, `TracePlane`):
the dispatch table names its methods; a swarm network's request goes to the managers first
(allocate -> decide -> apply -> publish), the records and kernel work through `agent._state`.
"""

from __future__ import annotations

import contextlib
import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from overlaynet.agent import hostcore, swarm_overlay_args, views
from overlaynet.agent import requests as rq
from overlaynet.cluster import lbidle
from overlaynet.dataplane import datakeys
from overlaynet.dataplane.options import OptionError, fold_offload_into_labels
from overlaynet.errors import ApiError, InvalidArgument, NotFound
from overlaynet.model import Driver
from overlaynet.wire.vxlan import VXLAN_PORT

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent

log = logging.getLogger("overlaynet.agent")


class NetworkRequests:
    """The handlers of the network.* requests."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def network_create(self, req: rq.NetworkCreate) -> Any:
        if req.driver == "overlay" and self.agent.swarm.in_swarm:
            # In a swarm an overlay is cluster-scoped: the managers allocate its VNI and subnet
            # (and, --opt encrypted, its data keys: issue 18). What they would not keep is
            # refused rather than dropped (swarm_overlay_args).
            swarm_overlay_args.refuse_what_is_not_carried(req)
            vni = swarm_overlay_args.requested_vni(req)
            try:
                encrypted, key_period = datakeys.wanted(req.options)
            except datakeys.DataKeyError as e:
                raise InvalidArgument(str(e)) from None
            try:  # --opt lb-idle-timeout travels as a label (cluster/lbidle.py)
                labels = lbidle.fold_into_labels(req.options, req.labels)
            except lbidle.BadIdleTimeout as e:
                raise InvalidArgument(str(e)) from None
            try:  # --opt offload=on too (the managers keep labels, not options)
                labels = fold_offload_into_labels(req.options, labels)
            except OptionError as e:
                raise InvalidArgument(str(e)) from None
            res = await self.agent.swarm.call(
                "network.create",
                name=req.name,
                subnet=req.subnet,
                gateway=req.gateway,
                attachable=req.attachable,
                labels=labels,
                vni=vni,
                encrypted=encrypted,
                key_period=key_period,
            )
            return {"id": res["id"]}
        if req.driver == "overlay" and datakeys.ENCRYPTED_OPTION in req.options:
            # Keys come from the managers, and a static peer may be a kernel VTEP (issue 18).
            raise InvalidArgument("an encrypted overlay is swarm-scoped: run swarm init first")
        if req.driver == "overlay":
            await self.agent._ensure_vtep()
        net = await self.agent._state(partial(self.agent.runtime.network_create, req))
        log.info("network created", extra={"fields": {"network": net.name, "id": net.id}})
        return {"id": net.id}

    async def network_ls(self, req: rq.NetworkLs) -> Any:
        rows = {
            n.id: {"id": n.id, "name": n.name, "driver": str(n.driver), "scope": n.scope}
            for n in list(self.agent.runtime.networks.values())
        }
        # A manager knows every swarm network; other hosts show one only while a container there
        # uses it (lazy extension), and the ingress network, as Docker does.
        for doc in await self._swarm_networks():
            if self.agent.swarm.is_manager or doc.get("ingress"):
                rows.setdefault(doc["id"], _swarm_row(doc))
        return sorted(rows.values(), key=lambda r: r["name"])

    async def _swarm_networks(self) -> list[dict[str, Any]]:
        if not self.agent.swarm.in_swarm:
            return []
        try:
            snap = await self.agent.swarm.snapshot()
        except ApiError:
            return []  # no manager reachable: show what this host has
        nets: list[dict[str, Any]] = snap["networks"]
        return nets

    async def _swarm_network_doc(self, ref: str) -> dict[str, Any] | None:
        """A swarm network this host has no copy of: a manager asks the managers; another host
        knows only what `network ls` shows it, the ingress network (from its state snapshot)."""
        if self.agent.swarm.is_manager:
            doc: dict[str, Any] = await self.agent.swarm.call("network.inspect", network=ref)
            return doc
        for doc in await self._swarm_networks():
            if doc.get("ingress") and ref in (doc.get("name"), doc.get("id")):
                return {k: v for k, v in doc.items() if k != "data_keys"}
        return None

    async def network_inspect(self, req: rq.NetworkInspect) -> Any:
        rt = self.agent.runtime
        ref = req.network
        try:
            net = rt.network(ref)
        except NotFound:
            doc = await self._swarm_network_doc(ref)
            if doc is None:
                raise
            return views.network_doc(
                hostcore.network_from_swarm(doc),
                [],
                {
                    "Overlay": {
                        "VNI": doc["vni"],
                        "Peers": [],
                        "Encrypted": bool(doc.get("encrypted")),
                        "KeyIds": doc.get("key_ids", []),
                    }
                },
            )
        extra: dict[str, Any] = {}
        if net.driver == Driver.OVERLAY:
            dataplane = self.agent.overlay.inspect(net)
            here = [self.agent.advertise_addr] if self.agent.advertise_addr else []
            peers = (dataplane or {}).get("peers", net.peers)
            names = {**await self.agent._node_names(), **dict.fromkeys(here, self.agent.paths.host)}
            extra["Peers"] = views.peers_doc([*here, *peers], names)
            extra["Overlay"] = {
                "VNI": net.vni,
                "VTEP": f"{self.agent.advertise_addr}:{VXLAN_PORT}",
                "Peers": sorted((dataplane or {}).get("peers", net.peers)),
                "StaticPeers": list(net.peers),
                "StaticEndpoints": list(net.static_endpoints),
                "DataPlane": dataplane,
                # Issue 18: the key ids this host seals and opens with, never a key.
                "Encrypted": self.agent.overlay.encrypted(net),
                "KeyIds": (dataplane or {}).get("key_ids", []),
            }
        return views.network_doc(net, list(rt.containers.values()), extra)

    async def network_peer(self, req: rq.NetworkPeer) -> Any:
        await self._refuse_remote_swarm_network(req.network, "peer")
        net = await self.agent._state(
            partial(self.agent.runtime.overlay_peer, req.network, req.host, req.add)
        )
        return {"peers": net.peers}

    async def network_fdb(self, req: rq.NetworkFdb) -> Any:
        await self._refuse_remote_swarm_network(req.network, "fdb")
        fn = partial(
            self.agent.runtime.overlay_fdb, req.network, req.mac, req.host, req.ip, req.add
        )
        net = await self.agent._state(fn)
        return {"static_endpoints": net.static_endpoints}

    async def _refuse_remote_swarm_network(self, ref: str, verb: str) -> None:
        """`network peer|fdb` name a swarm overlay this host has no copy of: say so, rather
        than "not found" for a network `network inspect` shows."""
        with contextlib.suppress(NotFound):
            self.agent.runtime.network(ref)
            return
        if not self.agent.swarm.in_swarm:
            return
        try:
            doc = await self._swarm_network_doc(ref)
        except ApiError:
            return  # not a swarm network either (or no manager to ask): the usual answer
        if doc is not None:
            raise InvalidArgument(
                f"network {ref} is a swarm overlay: its peers and FDB come from the managers "
                f"and gossip (`network {verb}` is for overlays made outside a swarm, e.g. "
                "toward a kernel VTEP)"
            )

    async def network_rm(self, req: rq.NetworkRm) -> Any:
        ref = req.network
        local = None
        with contextlib.suppress(NotFound):
            local = self.agent.runtime.network(ref)
        if self.agent.swarm.in_swarm and (local is None or local.scope == "swarm"):
            doc = await self.agent.swarm.call("network.rm", network=local.id if local else ref)
            return {"id": doc["id"], "name": doc["name"]}
        net = await self.agent._state(partial(self.agent.runtime.network_rm, ref))
        return {"id": net.id, "name": net.name}

    async def network_connect(self, req: rq.NetworkConnect) -> Any:
        async with self.agent._container(req.container) as cid:
            local, swarm_net = await self.agent._target(req.network)
            allocation = await self.agent._allocate(local or swarm_net, req.ip)
            fn = partial(
                self.agent.runtime.network_connect,
                req.network,
                cid,
                req.ip,
                req.aliases,
                swarm_net,
                allocation,
            )
            try:
                c = await self.agent._state(fn)
            except BaseException:
                await self.agent._release_allocation(local or swarm_net, allocation)
                raise
        return {"id": c.id}

    async def network_disconnect(self, req: rq.NetworkDisconnect) -> Any:
        async with self.agent._container(req.container) as cid:
            net = self.agent.runtime.network(req.network)
            ep = self.agent.runtime.containers[cid].endpoint_on(net.id)
            fn = partial(self.agent.runtime.network_disconnect, req.network, cid)
            c = await self.agent._state(fn)
            if ep is not None and net.scope == "swarm":
                await self.agent._release([(net, ep)])
        return {"id": c.id}


def _swarm_row(doc: dict[str, Any]) -> dict[str, str]:
    return {"id": doc["id"], "name": doc["name"], "driver": "overlay", "scope": "swarm"}
