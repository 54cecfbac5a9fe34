"""One host's gossip core: membership, network tables and piggybacked dissemination behind a
sans-IO interface (datagrams and `now` in; datagrams, push-pull requests and events out).

It talks only with members: a datagram from an address no member has (and that does not
introduce its sender) is refused, and nothing is ever sent to an address that is neither a
member's nor a join seed's, so a stranger cannot use a node as a reflector (issue 18)."""

from __future__ import annotations

import random
from dataclasses import dataclass

from overlaynet.gossip.broadcast import BroadcastQueue
from overlaynet.gossip.config import SwimConfig, push_pull_scale, retransmit_limit
from overlaynet.gossip.swim import LIVE_STATES, MemberChange, Membership, MemberView
from overlaynet.gossip.tables import EntryEvent, LamportClock, NetworkTables, TableEntry
from overlaynet.wire.gossip import (
    IDEMPOTENT_KINDS,
    PACKET_OVERHEAD,
    Address,
    Alive,
    Dead,
    MalformedGossip,
    MemberRecord,
    Message,
    NetworkEvent,
    OversizedGossip,
    PushPullHeader,
    Suspect,
    TableEvent,
    decode,
    decode_message,
    encode,
    encode_message,
    encode_packet,
    split,
)

GossipEvent = MemberChange | EntryEvent

# How many recently merged updates to recognise when they come again; a repeat only arrives
# within its retransmission window, a few seconds of traffic.
RECENT_MESSAGES = 4096


class NonMemberGossip(MalformedGossip):
    """Authenticated, but from an address that belongs to no member: never answered."""


def _about(msg: Message, name: str) -> bool:
    """A suspect or dead rumour about `name`."""
    return isinstance(msg, Suspect | Dead) and msg.node == name


@dataclass(frozen=True)
class PushPullRequest:
    """Ask the shell for a full-state exchange over TCP with `addr` (on join, periodically,
    after joining a network, and toward failed members to heal partitions)."""

    addr: Address
    join: bool


class GossipNode:
    """The whole control-plane core of one host. Drive it with `receive_datagram`,
    `handle_timer` at `next_deadline()`, and the push-pull pair; drain the outputs after."""

    def __init__(
        self, name: str, addr: Address, config: SwimConfig, rng: random.Random, now: float
    ) -> None:
        self.name = name
        self.addr = addr
        self.config = config
        self.rng = rng
        self._member_queue = BroadcastQueue()
        self._network_queues: dict[str, BroadcastQueue] = {}
        self.membership = Membership(name, addr, config, rng, now, self._member_queue)
        self.clock = LamportClock()
        self.tables = NetworkTables(name, self.clock, config.tombstone_ttl, self.membership.is_live)
        self._datagrams: list[tuple[Address, bytes]] = []
        self._push_pulls: list[PushPullRequest] = []
        self._events: list[GossipEvent] = []
        self._recent: dict[bytes, None] = {}
        # Addresses we were told to join through: the only non-members we may contact.
        self._seeds: set[Address] = set()
        # Datagrams and push-pulls toward an address that is neither a member's nor a seed's,
        # suppressed (a ping-req naming a host we have not heard of yet, say).
        self.refused_sends = 0
        self.next_gossip_at = now + rng.uniform(0, config.gossip_interval)
        self.next_push_pull_at = now + rng.uniform(0.5, 1.5) * config.push_pull_interval
        self.next_reconnect_at = now + rng.uniform(0.5, 1.5) * config.reconnect_interval
        self.next_reap_at = now + config.reap_interval

    # ---- outputs -----------------------------------------------------------------------

    def drain_datagrams(self) -> list[tuple[Address, bytes]]:
        out, self._datagrams = self._datagrams, []
        return out

    def drain_push_pulls(self) -> list[PushPullRequest]:
        out, self._push_pulls = self._push_pulls, []
        allowed = [r for r in out if self.may_contact(r.addr)]
        self.refused_sends += len(out) - len(allowed)
        return allowed

    def drain_events(self) -> list[GossipEvent]:
        out, self._events = self._events, []
        return out

    def next_deadline(self) -> float:
        """When `handle_timer` is next due. The gossip tick counts only while something waits
        to be gossiped: an idle lab host would otherwise wake every gossip interval (10 times a
        second in the lab profile) to send nothing (issue 15). Once news is queued the stale
        tick is due at once, so it leaves without waiting an interval."""
        deadline = min(
            self.membership.next_deadline(),
            self.next_push_pull_at,
            self.next_reconnect_at,
            self.next_reap_at,
        )
        if self.has_gossip():
            deadline = min(deadline, self.next_gossip_at)
        return deadline

    def has_gossip(self) -> bool:
        """Something waits in the member queue or a network's queue."""
        return bool(len(self._member_queue)) or any(map(len, self._network_queues.values()))

    # ---- reads -------------------------------------------------------------------------

    def members(self) -> list[MemberView]:
        return self.membership.views()

    def member(self, name: str) -> MemberView | None:
        """One member by name (None: not known), without building the whole list."""
        return self.membership.view_of(name)

    def entries(self, table: str, network: str) -> dict[str, TableEntry]:
        return self.tables.entries(table, network)

    def networks(self) -> set[str]:
        return set(self.tables.local_networks)

    def may_contact(self, addr: Address) -> bool:
        """A member's address, or a seed we were told to join through."""
        return self.membership.is_member_address(addr) or addr in self._seeds

    # ---- local commands ----------------------------------------------------------------

    def start_join(self, addrs: list[Address]) -> None:
        """Join through known addresses: a push-pull with each (memberlist Join)."""
        self.add_seeds(addrs)
        self._push_pulls.extend(PushPullRequest(a, True) for a in addrs if a != self.addr)

    def add_seeds(self, addrs: list[Address]) -> None:
        """Addresses we may contact before they are members (the shell joins through them)."""
        self._seeds.update(a for a in addrs if a != self.addr)

    def leave(self, now: float) -> None:
        self.membership.leave(now)
        self._after(now)

    def join_network(self, network: str, now: float) -> None:
        if network in self.tables.local_networks:
            return
        # Updates for this network were ignored until now: let their repeats count again.
        self._recent.clear()
        self._broadcast_network(self.tables.join_network(network))
        # networkdb bulk-syncs with a member of the network on join.
        peers = self._network_peers(network, 1)
        if peers:
            self._push_pulls.append(PushPullRequest(peers[0], False))
        self._after(now)

    def leave_network(self, network: str, now: float) -> None:
        if network not in self.tables.local_networks:
            return
        self._broadcast_network(self.tables.leave_network(network))
        self._network_queues.pop(network, None)
        self._after(now)

    def set_entry(self, table: str, network: str, key: str, value: bytes, now: float) -> None:
        self._broadcast_entry(self.tables.set_entry(table, network, key, value, now))
        self._after(now)

    def delete_entry(self, table: str, network: str, key: str, now: float) -> None:
        event = self.tables.delete_entry(table, network, key, now)
        if event is not None:
            self._broadcast_entry(event)
        self._after(now)

    # ---- network inputs ----------------------------------------------------------------

    def receive_datagram(self, data: bytes, src: Address, now: float) -> None:
        """One decrypted datagram; MalformedGossip leaves the state untouched."""
        if len(data) > self.config.packet_budget:
            raise OversizedGossip(f"datagram of {len(data)} bytes over budget")
        fresh: list[tuple[bytes, Message]] = []
        for raw in split(data):
            # Each update arrives about retransmit-limit times: skip exact repeats unparsed.
            if raw[0] in IDEMPOTENT_KINDS and raw in self._recent:
                continue
            fresh.append((raw, decode_message(raw)))
        if not self.membership.is_member_address(src) and not any(
            isinstance(msg, Alive) and msg.addr == src for _, msg in fresh
        ):
            # A joiner's first datagrams carry its own Alive (it broadcasts one at start and
            # piggybacks it on its probes): that introduces it. Anything else is a stranger's.
            raise NonMemberGossip(f"datagram from {src[0]}:{src[1]}, no member's address")
        for raw, msg in fresh:
            # A rumour about us is answered on every arrival (swim.py _answer_rumour): each
            # copy names a host still holding it.
            if raw[0] in IDEMPOTENT_KINDS and not _about(msg, self.name):
                self._remember(raw)
            self._dispatch(msg, src, now)
        self._after(now)

    def _remember(self, raw: bytes) -> None:
        self._recent[raw] = None
        if len(self._recent) > RECENT_MESSAGES:
            del self._recent[next(iter(self._recent))]

    def push_pull_payload(self, join: bool) -> bytes:
        """Our full state for a push-pull exchange."""
        networks, tables = self.tables.snapshot()
        messages: list[Message] = [PushPullHeader(self.name, join)]
        messages.extend(self.membership.records())
        messages.extend(networks)
        messages.extend(tables)
        return encode(messages)

    def merge_push_pull(self, data: bytes, now: float, src_host: str | None = None) -> str:
        """A peer's full state; returns its name. MalformedGossip leaves the state untouched.
        `src_host`, the IP the connection came from, must be the sender's own (as it states
        it, or as we know it): we answer a push-pull, so we answer only members."""
        messages = decode(data)
        if not messages or not isinstance(messages[0], PushPullHeader):
            raise MalformedGossip("push-pull without its header")
        if src_host is not None:
            self._check_push_pull_source(messages, src_host)
        records = [m for m in messages if isinstance(m, MemberRecord)]
        self.membership.merge_remote(records, now, peer=messages[0].sender)
        self._absorb_changes()
        for msg in messages:
            if isinstance(msg, NetworkEvent):
                restated = self.tables.apply_network_event(msg, now)
                # Like table entries: repair quietly, but broadcast a restatement of our own.
                if restated is not None and restated.node == self.name:
                    self._broadcast_network(restated)
        for msg in messages:
            if isinstance(msg, TableEvent):
                # networkdb bulk sync: repair quietly, broadcast only our own restatements.
                event = self.tables.apply_table_event(msg, now, rebroadcast=False)
                if event is not None:
                    self._broadcast_entry(event)
        self._after(now)
        return messages[0].sender

    def _check_push_pull_source(self, messages: list[Message], src_host: str) -> None:
        sender = messages[0]
        assert isinstance(sender, PushPullHeader)
        stated = [
            m.addr[0] for m in messages if isinstance(m, MemberRecord) and m.node == sender.sender
        ]
        known = self.membership.address_of(sender.sender)
        if src_host not in stated and (known is None or known[0] != src_host):
            raise NonMemberGossip(f"push-pull for {sender.sender!r} from {src_host}")

    def bootstrap(
        self, records: list[MemberRecord], networks: list[NetworkEvent], now: float
    ) -> None:
        """Simulator start-up: learn a converged membership and network participation
        without announcing it (a large cluster's join storm is not what a benchmark measures)."""
        self.membership.merge_remote(records, now, announce=False)
        for event in networks:
            if event.node != self.name:
                self.tables.apply_network_event(event, now)
        self._member_queue.clear()
        self.membership.changes.clear()
        # Spread the first full syncs over one scaled period, as a long-running cluster would.
        n = self.membership.live_count()
        scaled = push_pull_scale(self.config.push_pull_interval, n)
        self.next_push_pull_at = now + self.rng.uniform(0, scaled)

    # ---- timers ------------------------------------------------------------------------

    def handle_timer(self, now: float) -> None:
        self.membership.handle_timer(now)
        if now >= self.next_gossip_at:
            self.next_gossip_at = now + self.config.gossip_interval
            self._gossip(now)
        if now >= self.next_push_pull_at:
            n = self.membership.live_count()
            self.next_push_pull_at = now + push_pull_scale(self.config.push_pull_interval, n)
            peers = self.membership.random_live(1)
            addr = None if not peers else self.membership.address_of(peers[0])
            if addr is not None:
                self._push_pulls.append(PushPullRequest(addr, False))
        if now >= self.next_reconnect_at:
            self.next_reconnect_at = now + self.config.reconnect_interval
            dead = self.membership.random_dead()
            if dead is not None:
                self._push_pulls.append(PushPullRequest(dead, False))
        if now >= self.next_reap_at:
            self.next_reap_at = now + self.config.reap_interval
            for name in self.membership.reap(now):
                self.tables.forget_owner(name, now)
            self.tables.reap(now)
        self._after(now)

    # ---- internals ---------------------------------------------------------------------

    def _dispatch(self, msg: Message, src: Address, now: float) -> None:
        if isinstance(msg, NetworkEvent):
            self._on_network_event(msg, now)
        elif isinstance(msg, TableEvent):
            event = self.tables.apply_table_event(msg, now)
            if event is not None:
                self._broadcast_entry(event)
        elif not isinstance(msg, MemberRecord | PushPullHeader):
            self.membership.handle(msg, src, now)

    def _on_network_event(self, msg: NetworkEvent, now: float) -> None:
        event = self.tables.apply_network_event(msg, now)
        if event is not None:
            self._broadcast_network(event)

    def _broadcast_network(self, event: NetworkEvent) -> None:
        self._member_queue.push(("network", event.node, event.network), encode_message(event))

    def _broadcast_entry(self, event: TableEvent) -> None:
        queue = self._network_queues.setdefault(event.network, BroadcastQueue())
        queue.push(("entry", event.table, event.key), encode_message(event))

    def _network_peers(self, network: str, k: int) -> list[Address]:
        # Sorted: set order follows the per-process hash seed, and runs must repeat exactly.
        live = sorted(
            n
            for n in self.tables.participants(network)
            if n != self.name and self.membership.is_live(n)
        )
        picked = self.rng.sample(live, k) if len(live) > k else live
        return [a for a in map(self.membership.address_of, picked) if a is not None]

    def _gossip(self, now: float) -> None:
        budget = self.config.packet_budget - PACKET_OVERHEAD
        if len(self._member_queue):
            limit = retransmit_limit(self.config.retransmit_mult, self.membership.live_count())
            batch: list[bytes] = []
            for addr in self.membership.gossip_targets(self.config.gossip_nodes):
                batch = self._member_queue.take(budget, limit)
                self._send(addr, batch)
            # A copy for a recently dead member does not spend transmissions: counting it
            # would cut the live fanout by a quarter while anyone is dead, and refutations
            # that miss a node are how false positives happen.
            dead = self.membership.recently_dead(now)
            if dead is not None:
                self._send(dead, batch)
        for network, queue in list(self._network_queues.items()):
            if not len(queue):
                continue
            peers = self._network_peers(network, self.config.gossip_nodes)
            n = len(self.tables.participants(network))
            limit = retransmit_limit(self.config.retransmit_mult, n)
            for addr in peers:
                self._send(addr, queue.take(budget, limit))

    def _send(self, addr: Address, messages: list[bytes]) -> None:
        if messages:
            self._emit(addr, encode_packet(messages))

    def _emit(self, addr: Address, data: bytes) -> None:
        """The one way out for datagrams: toward members (or seeds) only."""
        if self.may_contact(addr):
            self._datagrams.append((addr, data))
        else:
            self.refused_sends += 1

    def _absorb_changes(self) -> None:
        for change in self.membership.changes:
            was = change.old in LIVE_STATES
            now_live = change.new in LIVE_STATES
            if was != now_live:
                self.tables.owner_liveness_changed(change.name, now_live)
            self._events.extend(self.tables.events)
            self.tables.events.clear()
            self._events.append(change)
        self.membership.changes.clear()

    def _after(self, now: float) -> None:
        """Turn what the cores produced into datagrams and events."""
        self._absorb_changes()
        self._events.extend(self.tables.events)
        self.tables.events.clear()
        if self.membership.outbox:
            limit = retransmit_limit(self.config.retransmit_mult, self.membership.live_count())
            for addr, primaries in self.membership.outbox:
                encoded = [encode_message(m) for m in primaries]
                room = self.config.packet_budget - PACKET_OVERHEAD - sum(map(len, encoded))
                # Piggyback fresh updates on every probe message (SWIM section 4.4).
                encoded.extend(self._member_queue.take(room, limit))
                self._emit(addr, encode_packet(encoded))
            self.membership.outbox.clear()
