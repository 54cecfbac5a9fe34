"""The agent's read-only views under the hood: gossip members and endpoint tables, the
kernel's links, every plane's counters (`stats`, the metrics page), the embedded DNS records.

`ViewRequests(agent)` is bound to the agent as its other planes are (`LbPlane`, `TracePlane`):
reads on the event loop walk copies, as `info` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from overlaynet.agent import metrics, views
from overlaynet.agent import requests as rq
from overlaynet.agent.records import ENDPOINT_TABLE, BadEndpointRecord, EndpointRecord
from overlaynet.dns import feed as dns_feed
from overlaynet.dns.records import NameRecord
from overlaynet.errors import InvalidArgument, NotFound
from overlaynet.model import Status

if TYPE_CHECKING:
    from overlaynet.agent.daemon import Agent


class ViewRequests:
    """The handlers of the read-only views (gossip, kernel, stats, DNS records)."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    async def gossip_members(self, req: rq.GossipMembers) -> Any:
        return self.agent.control.members_view()

    async def gossip_endpoints(self, req: rq.GossipEndpoints) -> Any:
        """The endpoint table of one network as this host's gossip has it (all owners)."""
        g = self.agent.control.gossip
        if g is None:
            raise InvalidArgument("gossip runs only in a swarm: this host is in none")
        try:
            net_id = self.agent.runtime.network(req.network).id
        except NotFound:
            net_id = req.network
        rows = []
        for key, entry in sorted(g.entries(ENDPOINT_TABLE, net_id).items()):
            try:
                rec = EndpointRecord.from_bytes(entry.value)
            except BadEndpointRecord:
                continue
            rows.append(
                {
                    "key": key,
                    "name": rec.name,
                    "ip": rec.ip,
                    "mac": rec.mac,
                    "host": rec.host,
                    "owner": entry.owner,
                    "ltime": entry.ltime,
                }
            )
        return rows

    async def host_kernel(self, req: rq.HostKernel) -> Any:
        """What is built under the hood: links (with their bridge), addresses, routes."""
        return await trio.to_thread.run_sync(views.kernel_doc)

    def stats_samples(self) -> list[metrics.Sample]:
        """Every plane's counters now (read on the event loop from copies, as `info` does)."""
        vtep = self.agent.overlay.vtep
        gossip = self.agent.control.gossip
        networks = list(self.agent.runtime.networks.values())
        return metrics.collect(
            vtep=vtep.stats() if vtep is not None else None,
            vni_names={n.vni: n.name for n in networks if n.vni is not None},
            dns=self.agent.dns.counters(),
            gossip=gossip.stats() if gossip is not None else None,
            control=dict(self.agent.control.counters),
            manager=self.agent._cluster_counters(),
            tasks=dict(self.agent.task_runner.counters),
            api=dict(self.agent.counters),
        )

    async def stats(self, req: rq.Stats) -> Any:
        return metrics.stats_doc(self.agent.paths.host, self.stats_samples())

    async def dns_records(self, req: rq.DnsRecords) -> Any:
        """The records the embedded DNS holds for one network, each with where it came from:
        a running local container, or the gossip entry (and its owner) it was built from."""
        rt = self.agent.runtime
        net = rt.network(req.network)
        origins: dict[NameRecord, dict[str, str]] = {}
        gossip = self.agent.control.gossip
        if gossip is not None and net.scope == "swarm":
            names = await self.agent._node_names()
            for entry in list(gossip.entries(ENDPOINT_TABLE, net.id).values()):
                if entry.owner == self.agent.control.node_id:
                    continue
                try:
                    rec = EndpointRecord.from_bytes(entry.value)
                except BadEndpointRecord:
                    continue  # counted by the control plane, and never in the table
                origin = {
                    "Source": "gossip",
                    "Owner": names.get(entry.owner, entry.owner),
                    "NodeID": entry.owner,
                    "HostIP": rec.host,
                    "Container": rec.name,
                }
                origins.update(dict.fromkeys(rec.dns_records(net.id), origin))
        for c in list(rt.containers.values()):
            if c.status != Status.RUNNING:
                continue
            origin = {"Source": "local", "Owner": self.agent.paths.host, "Container": c.name}
            mine = [r for r in dns_feed.container_records(c) if r.network_id == net.id]
            origins.update(dict.fromkeys(mine, origin))
        table = self.agent.dns_table
        dns_net = table.network(net.id)
        resolves = dns_net is not None and dns_net.resolves_names
        return views.dns_doc(net.name, resolves, table.ttl, table.records_of(net.id), origins)
