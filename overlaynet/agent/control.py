"""The agent's control plane: gossip membership and the endpoint table, in and out.

Out: every running local container's endpoint on a swarm network is an entry in that network's
`endpoint_table` (key: endpoint id; value: `EndpointRecord` as JSON), and this host takes part
in a network's gossip only while it has such an endpoint (Docker's networkdb does the same).
In: other hosts' entries become FDB entries and ARP answers in the VTEP and names in the
embedded DNS; live members are the hosts the VTEP accepts VXLAN from; a member declared dead
has its entries withdrawn everywhere by the tables core.

Keys: the managers hold the gossip keyring and rotate it in stages (cluster/keyrotation.py);
this host reports the fingerprints of the keys it holds and takes the keyring the managers
answer, one stage at a time (`follow_keys`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from overlaynet.agent.records import ENDPOINT_TABLE, BadEndpointRecord, EndpointRecord
from overlaynet.errors import ApiError
from overlaynet.gossip.keyring import Keyring, KeyringError
from overlaynet.gossip.service import GossipService
from overlaynet.gossip.swim import LIVE_STATES
from overlaynet.gossip.tables import EntryEvent

if TYPE_CHECKING:
    from overlaynet.agent.swarm import SwarmMember

log = logging.getLogger(__name__)

# How often a host that found no seed to join retries (a manager may be restarting).
REJOIN_INTERVAL = 2.0


class ControlPlane:
    """Owns the gossip service while this host is in a swarm."""

    def __init__(self) -> None:
        self.gossip: GossipService | None = None
        self.node_id: str | None = None
        self.counters: Counter[str] = Counter()
        self._published: dict[tuple[str, str], bytes] = {}
        self._networks: set[str] = set()
        self._scope: trio.CancelScope | None = None
        self.changed = trio.Event()
        # Networks whose endpoint table changed since the planes last looked (None: all).
        self._dirty: set[str] | None = None

    @property
    def running(self) -> bool:
        return self.gossip is not None

    async def start(
        self,
        nursery: trio.Nursery,
        node_id: str,
        advertise_ip: str,
        key: bytes,
        seeds: list[str],
    ) -> None:
        service = GossipService(node_id, advertise_ip, Keyring([key]))
        scope = trio.CancelScope()

        async def serve(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with trio.open_nursery() as inner:
                    await inner.start(service.run)
                    inner.start_soon(self._follow, service)
                    inner.start_soon(self._join, service, [s for s in seeds if s != advertise_ip])
                    task_status.started()

        self.gossip, self.node_id, self._scope = service, node_id, scope
        self._dirty = None
        self._published.clear()
        self._networks.clear()
        await nursery.start(serve)

    async def _join(self, service: GossipService, seeds: list[str]) -> None:
        """Join through the seeds; keep trying while none answers (they may be restarting)."""
        while seeds:
            if await service.join(seeds) > 0:
                return
            self.counters["join_retries"] += 1
            await trio.sleep(REJOIN_INTERVAL)

    async def _follow(self, service: GossipService) -> None:
        async for event in service.subscribe():
            endpoints = isinstance(event, EntryEvent) and event.table == ENDPOINT_TABLE
            if endpoints and self._dirty is not None:
                assert isinstance(event, EntryEvent)
                self._dirty.add(event.network)
            self.changed.set()

    def take_dirty(self) -> set[str] | None:
        """Networks whose entries changed since the last call; None when all may have."""
        dirty, self._dirty = self._dirty, set()
        return dirty

    async def stop(self) -> None:
        if self.gossip is not None:
            with trio.move_on_after(2):
                await self.gossip.leave()
        if self._scope is not None:
            self._scope.cancel()
        self.gossip, self._scope = None, None
        self._dirty = None
        self._published.clear()
        self._networks.clear()

    # ---- out: our endpoints -------------------------------------------------------------

    def publish(self, records: dict[tuple[str, str], EndpointRecord]) -> None:
        """Make the table hold exactly these local endpoints (and join/leave networks)."""
        g = self.gossip
        if g is None:
            return
        wanted_nets = {net for net, _ in records}
        for net in wanted_nets - self._networks:
            g.join_network(net)
        for key in list(self._published):
            if key not in records:
                g.delete_entry(ENDPOINT_TABLE, key[0], key[1])
                del self._published[key]
        for key, rec in records.items():
            value = rec.to_bytes()
            if self._published.get(key) != value:
                g.set_entry(ENDPOINT_TABLE, key[0], key[1], value)
                self._published[key] = value
        for net in self._networks - wanted_nets:
            g.leave_network(net)
        self._networks = wanted_nets

    # ---- keys: what the managers say this host's gossip seals and opens with -------------

    def key_fingerprints(self) -> list[str]:
        """The fingerprints of the gossip keys held here, primary first (for `info`)."""
        return [] if self.gossip is None else self.gossip.key_fingerprints()

    def apply_keyring(self, keys: Sequence[bytes]) -> bool:
        """Make gossip open with exactly `keys` and seal with the first; whether anything
        changed. memberlist's order, so a ring never needs more than its three slots: drop
        the keys no longer given, install the new ones, use the primary, drop the old one."""
        g = self.gossip
        if g is None:
            return False
        try:
            wanted = Keyring(keys)
        except KeyringError as e:
            self.counters["bad_keyrings"] += 1
            log.warning("ignoring the managers' gossip keyring: %s", e)
            return False
        if g.keyring.keys[0] == wanted.keys[0] and set(g.keyring.keys) == set(wanted.keys):
            return False
        try:
            for key in g.keyring.keys[1:]:
                if key not in wanted.keys:
                    g.remove_key(key)
            for key in wanted.keys:
                g.install_key(key)
            g.use_key(wanted.keys[0])
            for key in g.keyring.keys[1:]:
                if key not in wanted.keys:
                    g.remove_key(key)
        except KeyringError:
            # Far behind (e.g. restarted with a key rotated out since): take the ring whole.
            g.keyring = wanted
        self.counters["keyring_changes"] += 1
        log.info("gossip keyring now %s", g.key_fingerprints())
        return True

    async def follow_keys(self, swarm: SwarmMember) -> None:
        """Report the keys held here to the managers and take the keyring they answer; after
        a change, report again at once so the leader's next step need not wait a period."""
        for _ in range(2):
            g = self.gossip
            if g is None:
                return
            try:
                reply = await swarm.call("gossip.report", key_fingerprints=g.key_fingerprints())
                keys = [bytes.fromhex(k) for k in reply["gossip_keyring"]]
            except (ApiError, OSError, KeyError, TypeError, ValueError) as e:
                # No manager reachable, or this node was removed: keep the keys it has.
                self.counters["key_reports_failed"] += 1
                log.debug("gossip key report failed: %s", e)
                return
            if not self.apply_keyring(keys):
                return
            swarm.remember_gossip_key(keys[0])

    # ---- in: what the others have -------------------------------------------------------

    def remote(self, network_id: str) -> list[EndpointRecord]:
        """Endpoints of other hosts on a network, as gossip has them now."""
        g = self.gossip
        if g is None:
            return []
        out = []
        for key, entry in g.entries(ENDPOINT_TABLE, network_id).items():
            if entry.owner == self.node_id:
                continue
            try:
                out.append(EndpointRecord.from_bytes(entry.value))
            except BadEndpointRecord as e:
                self.counters["bad_endpoint_entries"] += 1
                log.warning("ignoring endpoint %s from %s: %s", key, entry.owner, e)
        return out

    def peers(self, network_id: str) -> set[str]:
        """Underlay addresses of the other hosts taking part in a network's gossip."""
        g = self.gossip
        if g is None:
            return set()
        names = g.node.tables.participants(network_id) - {self.node_id}
        return {m.addr[0] for m in g.members() if m.name in names and m.state in LIVE_STATES}

    def live_addresses(self) -> set[str]:
        g = self.gossip
        if g is None:
            return set()
        return {m.addr[0] for m in g.members() if m.state in LIVE_STATES}

    def node_status(self, node_id: str) -> str:
        """Docker's node STATUS: Ready while gossip sees the node alive, Down once it is not."""
        if node_id == self.node_id:
            return "Ready"
        g = self.gossip
        if g is None:
            return "Unknown"
        # One member, not a scan: the managers ask this for every node of every status pass.
        m = g.member(node_id)
        if m is None:
            return "Unknown"
        return "Ready" if m.state in LIVE_STATES else "Down"

    def members_view(self) -> list[dict[str, str | int]]:
        g = self.gossip
        if g is None:
            return []
        return [
            {
                "name": m.name,
                "addr": m.addr[0],
                "state": m.state.name.lower(),
                "incarnation": m.incarnation,
            }
            for m in sorted(g.members(), key=lambda m: m.name)
        ]
