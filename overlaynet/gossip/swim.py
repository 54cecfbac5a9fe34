"""SWIM membership as a pure state machine: randomised round-robin probes, ping-req through k
members, suspect/dead with incarnations and refutation, graceful leave, and Lifeguard's local
health, shrinking suspicion and buddy warning. Messages and `now` in; messages out."""

from __future__ import annotations

import random
from dataclasses import dataclass

from overlaynet.gossip.broadcast import BroadcastQueue
from overlaynet.gossip.config import SwimConfig, suspicion_timeouts
from overlaynet.gossip.suspicion import Awareness, Suspicion
from overlaynet.wire.gossip import (
    Ack,
    Address,
    Alive,
    Dead,
    MemberRecord,
    MemberState,
    Message,
    Nack,
    Ping,
    PingReq,
    Suspect,
    encode_message,
)

# Sequence numbers travel as 32 bits.
SEQ_MODULO = 1 << 32

LIVE_STATES = (MemberState.ALIVE, MemberState.SUSPECT)


@dataclass(frozen=True)
class MemberView:
    """A member as this node currently sees it."""

    name: str
    addr: Address
    state: MemberState
    incarnation: int


@dataclass(frozen=True)
class MemberChange:
    """A member's state changed here; `old` is None for a member seen for the first time."""

    name: str
    addr: Address
    incarnation: int
    old: MemberState | None
    new: MemberState


@dataclass(slots=True)
class _Member:
    name: str
    addr: Address
    incarnation: int
    state: MemberState
    changed_at: float


@dataclass(slots=True)
class _Probe:
    seq: int
    target: str
    timeout_at: float
    end_at: float
    indirect_sent: bool = False
    expected_nacks: int = 0
    nacks: int = 0


@dataclass(slots=True)
class _Relay:
    """A ping we send on behalf of a ping-req: forward the ack, or nack when it is late."""

    origin: Address
    origin_seq: int
    nack_at: float
    expire_at: float
    want_nack: bool


class Membership:
    """One node's view of the cluster. The caller feeds `handle(message, now)` and
    `handle_timer(now)`, and drains `outbox` (primary messages per address) and `changes`."""

    def __init__(
        self,
        name: str,
        addr: Address,
        config: SwimConfig,
        rng: random.Random,
        now: float,
        broadcasts: BroadcastQueue,
    ) -> None:
        self.name = name
        self.addr = addr
        self.config = config
        self.rng = rng
        self.broadcasts = broadcasts
        self.awareness = Awareness(config.awareness_max_multiplier)
        self.members: dict[str, _Member] = {name: _Member(name, addr, 0, MemberState.ALIVE, now)}
        # How many known members (any state, us included) use each address: who may talk to
        # us and whom we may answer.
        self._addresses: dict[Address, int] = {addr: 1}
        self.outbox: list[tuple[Address, list[Message]]] = []
        self.changes: list[MemberChange] = []
        self.leaving = False
        # Live members other than us, as a list for O(1) sampling plus an index for O(1) removal.
        self._live: list[str] = []
        self._live_index: dict[str, int] = {}
        self._dead: set[str] = set()
        self._quiet = False
        self._probe_order: list[str] = []
        self._probe_pos = 0
        self._probe: _Probe | None = None
        self._relays: dict[int, _Relay] = {}
        self._suspicions: dict[str, Suspicion] = {}
        # Suspects whose timer ran out, getting one last probe before we declare them dead.
        self._final_checks: dict[str, _Probe] = {}
        # `views()` as last built; None once a member was added, removed or changed. The
        # manager asks for it per node per request (issue 15: rebuilding and sorting it each
        # time was most of an idle 60-host swarm manager's CPU).
        self._views: list[MemberView] | None = None
        self._seq = rng.randrange(SEQ_MODULO)
        # Stagger the first probe so nodes started together do not probe in lockstep.
        self.next_probe_at = now + rng.uniform(0, config.probe_interval)
        # memberlist setAlive: announce ourselves, so whoever we reach spreads the news.
        self._broadcast(Alive(0, name, addr))

    # ---- views -------------------------------------------------------------------------

    @property
    def incarnation(self) -> int:
        return self.members[self.name].incarnation

    def live_count(self) -> int:
        """Alive and suspect members including us: memberlist's estimate of N."""
        return len(self._live) + 1

    def state_of(self, name: str) -> MemberState | None:
        member = self.members.get(name)
        return None if member is None else member.state

    def is_live(self, name: str) -> bool:
        return name == self.name or name in self._live_index

    def suspicion_deadline(self, name: str) -> float | None:
        suspicion = self._suspicions.get(name)
        return None if suspicion is None else suspicion.deadline()

    def views(self) -> list[MemberView]:
        """Every member, by name. Built again only after a change (`_touch`)."""
        if self._views is None:
            self._views = [
                MemberView(m.name, m.addr, m.state, m.incarnation)
                for m in sorted(self.members.values(), key=lambda m: m.name)
            ]
        return list(self._views)

    def view_of(self, name: str) -> MemberView | None:
        """One member, without the whole list."""
        m = self.members.get(name)
        return None if m is None else MemberView(m.name, m.addr, m.state, m.incarnation)

    def _touch(self) -> None:
        """A member was added, removed, or its address, state or incarnation changed."""
        self._views = None

    def records(self) -> list[MemberRecord]:
        return [MemberRecord(m.name, m.addr, m.incarnation, m.state) for m in self.members.values()]

    def is_member_address(self, addr: Address) -> bool:
        """A known member's (alive, suspect, dead or departed, until reaped) address."""
        return addr in self._addresses

    def address_of(self, name: str) -> Address | None:
        member = self.members.get(name)
        return None if member is None else member.addr

    def random_live(self, k: int, exclude: frozenset[str] = frozenset()) -> list[str]:
        """Up to k live members other than us and `exclude`, uniformly at random."""
        pool = self._live
        if len(pool) <= k + len(exclude):
            picked = [n for n in pool if n not in exclude]
            self.rng.shuffle(picked)
            return picked[:k]
        picked = []
        for name in self.rng.sample(pool, k + len(exclude)):
            if name not in exclude:
                picked.append(name)
        return picked[:k]

    def gossip_targets(self, k: int) -> list[Address]:
        """k live members to gossip to."""
        return [self.members[n].addr for n in self.random_live(k)]

    def recently_dead(self, now: float) -> Address | None:
        """A member declared dead within gossip_to_the_dead, so it can hear it and refute."""
        if not self._dead:
            return None
        recent = [
            name
            for name in self._dead
            if now - self.members[name].changed_at < self.config.gossip_to_the_dead
        ]
        return self.members[self.rng.choice(sorted(recent))].addr if recent else None

    def random_dead(self) -> Address | None:
        """A failed (not departed) member to retry, so a healed partition merges again."""
        if not self._dead:
            return None
        return self.members[self.rng.choice(sorted(self._dead))].addr

    # ---- inputs ------------------------------------------------------------------------

    def handle(self, msg: Message, src: Address, now: float) -> None:
        match msg:
            case Ping():
                self._on_ping(msg, src)
            case PingReq():
                self._on_ping_req(msg, now)
            case Ack():
                self._on_ack(msg, now)
            case Nack():
                if self._probe is not None and msg.seq == self._probe.seq:
                    self._probe.nacks += 1
            case Alive():
                self.on_alive(msg, now)
            case Suspect():
                self.on_suspect(msg, now)
                if msg.node == self.name:
                    self._answer_rumour(msg.source, src)
            case Dead():
                self.on_dead(msg, now)
                if msg.node == self.name:
                    self._answer_rumour(msg.source, src)
            case _:
                pass

    def merge_remote(
        self, records: list[MemberRecord], now: float, announce: bool = True, peer: str = ""
    ) -> None:
        """Push-pull: take `peer`'s full view. A peer's dead verdict only makes us suspect
        (memberlist mergeState), so a stale view cannot kill a healthy member outright.
        Unlike memberlist, the suspicion is the peer's, not ours: counting ourselves would
        manufacture Lifeguard confirmations nobody probed for, and false positives with them.
        `announce=False` learns without queueing broadcasts (simulator start-up)."""
        self._quiet = not announce
        try:
            self._merge_records(records, now, peer or self.name)
        finally:
            self._quiet = False

    def _merge_records(self, records: list[MemberRecord], now: float, peer: str) -> None:
        for r in records:
            if r.state == MemberState.ALIVE:
                self.on_alive(Alive(r.incarnation, r.node, r.addr), now)
            elif r.state == MemberState.LEFT:
                self.on_dead(Dead(r.incarnation, r.node, r.node), now)
            elif r.node == self.name or r.node in self.members:
                self.on_suspect(Suspect(r.incarnation, r.node, peer), now)
            else:
                # Unlike memberlist, remember a failed member we never saw: retrying it
                # (random_dead) is what merges a partition whose bridges all died meanwhile.
                self.members[r.node] = _Member(r.node, r.addr, r.incarnation, MemberState.DEAD, now)
                self._touch()
                self._count_address(r.addr, 1)
                self._dead.add(r.node)

    def leave(self, now: float) -> None:
        """Graceful leave: announce our own death with source == us; others mark us LEFT."""
        self.leaving = True
        me = self.members[self.name]
        self._broadcast(Dead(me.incarnation, self.name, self.name))

    # ---- timers ------------------------------------------------------------------------

    def next_deadline(self) -> float:
        deadline = self.next_probe_at
        probe = self._probe
        if probe is not None:
            deadline = min(deadline, probe.end_at)
            if not probe.indirect_sent:
                deadline = min(deadline, probe.timeout_at)
        for relay in self._relays.values():
            deadline = min(deadline, relay.nack_at if relay.want_nack else relay.expire_at)
        for name, suspicion in self._suspicions.items():
            check = self._final_checks.get(name)
            if check is None:
                deadline = min(deadline, suspicion.deadline() - self._final_check_lead())
            else:
                deadline = min(deadline, check.end_at)
                if not check.indirect_sent:
                    deadline = min(deadline, check.timeout_at)
        return deadline

    def handle_timer(self, now: float) -> None:
        self._run_probe_timers(now)
        self._run_relay_timers(now)
        lead = self._final_check_lead()
        for name, suspicion in list(self._suspicions.items()):
            if name in self._final_checks or suspicion.deadline() - lead <= now:
                self._run_final_check(name, suspicion.deadline(), now)
        if now >= self.next_probe_at:
            self.next_probe_at = now + self.awareness.scale(self.config.probe_interval)
            if not self.leaving:
                self._start_probe(now)

    def reap(self, now: float) -> list[str]:
        """Forget members dead or departed for dead_reap_time; returns their names."""
        gone = [
            m.name
            for m in self.members.values()
            if m.state not in LIVE_STATES and now - m.changed_at >= self.config.dead_reap_time
        ]
        for name in gone:
            self._touch()
            self._count_address(self.members.pop(name).addr, -1)
            self._dead.discard(name)
        return gone

    # ---- probing -----------------------------------------------------------------------

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) % SEQ_MODULO
        return self._seq

    def _next_target(self) -> _Member | None:
        for _ in range(2):
            while self._probe_pos < len(self._probe_order):
                name = self._probe_order[self._probe_pos]
                self._probe_pos += 1
                member = self.members.get(name)
                if member is not None and member.state in LIVE_STATES and name != self.name:
                    return member
            # End of a round: a fresh random order (SWIM section 4.3, randomised round robin).
            self._probe_order = list(self._live)
            self.rng.shuffle(self._probe_order)
            self._probe_pos = 0
        return None

    def _start_probe(self, now: float) -> None:
        target = self._next_target()
        if target is None:
            return
        seq = self._next_seq()
        self._probe = _Probe(
            seq,
            target.name,
            timeout_at=now + self.awareness.scale(self.config.probe_timeout),
            end_at=now + self.awareness.scale(self.config.probe_interval),
        )
        msgs: list[Message] = [Ping(seq, target.name, self.name, self.addr)]
        if target.state == MemberState.SUSPECT:
            # Lifeguard's buddy system: tell the suspect directly so it can refute at once.
            msgs.append(Suspect(target.incarnation, target.name, self.name))
        self.outbox.append((target.addr, msgs))

    def _run_probe_timers(self, now: float) -> None:
        probe = self._probe
        if probe is None:
            return
        target = self.members.get(probe.target)
        if target is None or target.state not in LIVE_STATES:
            self._probe = None
            return
        if not probe.indirect_sent and now >= probe.timeout_at:
            probe.indirect_sent = True
            helpers = self.random_live(self.config.indirect_checks, frozenset({probe.target}))
            probe.expected_nacks = len(helpers)
            for helper in helpers:
                req = PingReq(probe.seq, target.name, target.addr, self.name, self.addr, True)
                self.outbox.append((self.members[helper].addr, [req]))
        if now >= probe.end_at:
            self._probe = None
            # memberlist probeNode: missing nacks mean *we* may be the slow one.
            if probe.expected_nacks > 0:
                self.awareness.apply(max(0, probe.expected_nacks - probe.nacks))
            else:
                self.awareness.apply(1)
            self.on_suspect(Suspect(target.incarnation, target.name, self.name), now)

    def _final_check_lead(self) -> float:
        """How long before a suspicion's deadline its final probe starts: one probe period."""
        return self.awareness.scale(self.config.probe_interval)

    def _run_final_check(self, name: str, deadline: float, now: float) -> None:
        """A suspicion about to run out: probe the suspect once more, directly with the
        rumour attached (so a live suspect answers with its Alive, _answer_rumour) and then
        through k members; the verdict falls at the deadline, or when the probe period ends if
        confirmations brought the deadline closer than that. Unlike memberlist: a refutation
        is broadcast only about retransmit-limit times, and at 10 % loss that now and then
        misses one host for a whole timeout; a final probe makes such a miss a verdict only
        when that probe fails too, and it overlaps the timer so a crash is not found later."""
        member = self.members[name]
        check = self._final_checks.get(name)
        if check is None:
            seq = self._next_seq()
            check = _Probe(
                seq,
                name,
                timeout_at=now + self.awareness.scale(self.config.probe_timeout),
                end_at=max(deadline, now + self._final_check_lead()),
            )
            self._final_checks[name] = check
            msgs: list[Message] = [
                Ping(seq, name, self.name, self.addr),
                Suspect(member.incarnation, name, self.name),
            ]
            self.outbox.append((member.addr, msgs))
            return
        if not check.indirect_sent and now >= check.timeout_at:
            check.indirect_sent = True
            # No nacks wanted: this probe is about the suspect, not our own health.
            for helper in self.random_live(self.config.indirect_checks, frozenset({name})):
                req = PingReq(check.seq, name, member.addr, self.name, self.addr, False)
                self.outbox.append((self.members[helper].addr, [req]))
        if now >= check.end_at:
            self.on_dead(Dead(member.incarnation, name, self.name), now)

    def _run_relay_timers(self, now: float) -> None:
        for seq, relay in list(self._relays.items()):
            if relay.want_nack and now >= relay.nack_at:
                relay.want_nack = False
                self.outbox.append((relay.origin, [Nack(relay.origin_seq, self.name)]))
            if now >= relay.expire_at:
                del self._relays[seq]

    def _on_ping(self, msg: Ping, src: Address) -> None:
        if msg.target != self.name:
            return  # meant for a previous owner of this address
        self.outbox.append((src, [Ack(msg.seq, self.name)]))

    def _on_ping_req(self, msg: PingReq, now: float) -> None:
        seq = self._next_seq()
        self._relays[seq] = _Relay(
            msg.source_addr,
            msg.seq,
            nack_at=now + self.config.probe_timeout,
            expire_at=now + self.config.probe_interval,
            want_nack=msg.want_nack,
        )
        self.outbox.append((msg.target_addr, [Ping(seq, msg.target, self.name, self.addr)]))

    def _on_ack(self, msg: Ack, now: float) -> None:
        probe = self._probe
        if probe is not None and msg.seq == probe.seq:
            self._probe = None
            self.awareness.apply(-1)
            return
        for name, check in self._final_checks.items():
            if check.seq == msg.seq:
                # The suspect answered: no verdict. Its suspicion starts over, and the Alive
                # it sends for the rumour in our ping should end it before then.
                del self._final_checks[name]
                self._suspicions[name].restart(now)
                return
        relay = self._relays.pop(msg.seq, None)
        if relay is not None:
            self.outbox.append((relay.origin, [Ack(relay.origin_seq, self.name)]))

    # ---- state rules -------------------------------------------------------------------

    def on_alive(self, msg: Alive, now: float) -> None:
        if msg.node == self.name:
            # Someone holds a newer claim about us (an earlier life): outbid it.
            if msg.incarnation > self.incarnation and not self.leaving:
                self._refute(msg.incarnation)
            return
        member = self.members.get(msg.node)
        if member is None:
            member = _Member(msg.node, msg.addr, msg.incarnation, MemberState.ALIVE, now)
            self.members[msg.node] = member
            self._touch()
            self._count_address(msg.addr, 1)
            self._add_live(msg.node, insert_in_probe_order=True)
            self.changes.append(
                MemberChange(msg.node, msg.addr, msg.incarnation, None, MemberState.ALIVE)
            )
            self._broadcast(msg)
            return
        # SWIM: only a strictly newer incarnation overrides suspect, dead or a known alive.
        if msg.incarnation <= member.incarnation:
            return
        member.incarnation = msg.incarnation
        self._touch()
        if member.addr != msg.addr:
            self._count_address(member.addr, -1)
            self._count_address(msg.addr, 1)
            member.addr = msg.addr
        self._set_state(member, MemberState.ALIVE, now)
        self._broadcast(msg)

    def on_suspect(self, msg: Suspect, now: float) -> None:
        member = self._rumour_subject(msg)
        if member is None:
            return
        if member.state == MemberState.SUSPECT and msg.incarnation == member.incarnation:
            suspicion = self._suspicions.get(msg.node)
            if suspicion is not None and suspicion.confirm(msg.source):
                # Pass independent confirmations on so others' timers shrink too.
                self._broadcast(msg, subject_suffix=msg.source)
            return
        member.incarnation = msg.incarnation
        self._touch()
        self._set_state(member, MemberState.SUSPECT, now)
        n = self.live_count()
        # memberlist: k = SuspicionMult - 2 confirmations, none in clusters too small for them.
        k = int(self.config.suspicion_mult) - 2
        if n - 2 < k:
            k = 0
        low, high = suspicion_timeouts(self.config, n)
        suspicion = Suspicion(now, k, low, high, origin=msg.source)
        self._suspicions[msg.node] = suspicion
        self._final_checks.pop(msg.node, None)
        self._broadcast(msg)

    def on_dead(self, msg: Dead, now: float) -> None:
        member = self._rumour_subject(msg)
        if member is None:
            return
        member.incarnation = msg.incarnation
        self._touch()
        left = msg.source == msg.node
        self._set_state(member, MemberState.LEFT if left else MemberState.DEAD, now)
        self._broadcast(msg)

    def _rumour_subject(self, msg: Suspect | Dead) -> _Member | None:
        """The member a suspect/dead rumour can still change; None when it is stale, about a
        member already gone, or about us (then we refute it, unless we are leaving)."""
        member = self.members.get(msg.node)
        if member is None or msg.incarnation < member.incarnation:
            return None
        if member.state not in LIVE_STATES:
            return None
        if msg.node == self.name:
            if not self.leaving:
                self._refute(msg.incarnation)
            return None
        return member

    def _answer_rumour(self, suspecter: str, src: Address) -> None:
        """Whoever tells us we are suspect or dead, and whoever raised it, still holds that
        rumour and its timer: send them our current Alive directly. The broadcast refutation
        alone can miss one host for a whole suspicion timeout (a false positive), and a
        rumour older than our incarnation gets no broadcast at all (Lifeguard section 4.3
        tells the suspect; this tells the suspecters back)."""
        if self.leaving:
            return
        me = self.members[self.name]
        alive = Alive(me.incarnation, self.name, self.addr)
        targets = [src]
        origin = self.members.get(suspecter)
        if origin is not None and origin.name != self.name and origin.addr != src:
            targets.append(origin.addr)
        for target in targets:
            self.outbox.append((target, [alive]))

    def _refute(self, seen: int) -> None:
        me = self.members[self.name]
        me.incarnation = max(me.incarnation, seen) + 1
        self._touch()
        # Lifeguard: being suspected hints that we are the slow one.
        self.awareness.apply(1)
        self._broadcast(Alive(me.incarnation, self.name, self.addr))

    def _set_state(self, member: _Member, state: MemberState, now: float) -> None:
        old = member.state
        if old == state:
            return
        member.state = state
        member.changed_at = now
        self._touch()
        if state != MemberState.SUSPECT:
            self._suspicions.pop(member.name, None)
            self._final_checks.pop(member.name, None)
        if state == MemberState.DEAD:
            self._dead.add(member.name)
        else:
            self._dead.discard(member.name)
        if state in LIVE_STATES and old not in LIVE_STATES:
            self._add_live(member.name, insert_in_probe_order=True)
        elif state not in LIVE_STATES and old in LIVE_STATES:
            self._remove_live(member.name)
        self.changes.append(MemberChange(member.name, member.addr, member.incarnation, old, state))

    def _count_address(self, addr: Address, delta: int) -> None:
        left = self._addresses.get(addr, 0) + delta
        if left > 0:
            self._addresses[addr] = left
        else:
            self._addresses.pop(addr, None)

    def _add_live(self, name: str, insert_in_probe_order: bool) -> None:
        if name in self._live_index:
            return
        self._live_index[name] = len(self._live)
        self._live.append(name)
        if insert_in_probe_order:
            # memberlist puts new members at a random spot so they are probed this round.
            spot = self.rng.randint(self._probe_pos, len(self._probe_order))
            self._probe_order.insert(spot, name)

    def _remove_live(self, name: str) -> None:
        index = self._live_index.pop(name)
        last = self._live.pop()
        if last != name:
            self._live[index] = last
            self._live_index[last] = index

    def _broadcast(self, msg: Alive | Suspect | Dead, subject_suffix: str = "") -> None:
        if self._quiet:
            return
        self.broadcasts.push(("member", msg.node, subject_suffix), encode_message(msg))
