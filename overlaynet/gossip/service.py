"""The trio shell around GossipNode: UDP and TCP on port 7946 in the host's namespace, every
message sealed with the cluster keyring and admitted once while fresh (replay.py); bad input
is counted by reason and dropped, and one bad peer ends only its own datagram or connection."""

from __future__ import annotations

import logging
import random
import socket
import struct
import time
from collections import Counter

import trio

from overlaynet.boundary import contained
from overlaynet.gossip.config import GOSSIP_PORT, MAX_DATAGRAM, SwimConfig, config_from_env
from overlaynet.gossip.keyring import Keyring, Unauthenticated
from overlaynet.gossip.node import GossipEvent, GossipNode, NonMemberGossip, PushPullRequest
from overlaynet.gossip.replay import ReplayedGossip, ReplayGuard, StaleGossip, replay_window
from overlaynet.gossip.swim import MemberView
from overlaynet.gossip.tables import TableEntry
from overlaynet.wire.gossip import Address, FutureGossip, MalformedGossip, OversizedGossip

log = logging.getLogger(__name__)

# memberlist TCPTimeout is 10 s on a LAN; lab hosts answer in well under a second.
TCP_TIMEOUT = 3.0
# A full state for 1000 hosts with their endpoints is a few hundred KB; refuse anything absurd.
MAX_STREAM = 8 << 20
# Push-pulls served at once. A member starts one every push-pull interval, plus joins and
# reconnects: a handful at a time even at N = 1000. The cap bounds what strangers can make us
# buffer (16 x MAX_STREAM) and hold open (16 x TCP_TIMEOUT); past it a connection is closed.
MAX_PUSH_PULL_STREAMS = 16
_FRAME = struct.Struct("!I")
# Subscribers that do not keep up lose events (counted) rather than stall the control plane.
SUBSCRIBER_BUFFER = 4096
# After announcing a leave, keep gossiping this long so the news gets out (memberlist waits
# for the broadcast too, bounded by LeaveTimeout).
LEAVE_PROPAGATION = 1.0

# Why an input was dropped; each is a `dropped_<reason>` counter, always present in stats().
DROP_REASONS = (
    "unauthenticated",  # no key of the ring opens it
    "stale",  # sent before the replay window
    "replayed",  # its nonce was already taken inside the window
    "future",  # stamped after the window, or a newer protocol version (authenticated)
    "malformed",  # authenticated but not valid gossip, or a stream that ended early
    "oversized",  # larger than a datagram or MAX_STREAM
    "non_member",  # authenticated, from an address no member has
    "idle_timeout",  # a push-pull connection that did not finish within TCP_TIMEOUT
    "busy",  # a push-pull connection past MAX_PUSH_PULL_STREAMS
)


class GossipService:
    """One host's gossip agent. Start `run()` in a nursery; the rest are plain calls."""

    def __init__(
        self,
        node_name: str,
        advertise_ip: str,
        keyring: Keyring,
        port: int = GOSSIP_PORT,
        config: SwimConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`config` None: the lab profile for the lab's size, as `lab up` told its agents
        (config.py `config_from_env`)."""
        if config is None:
            config = config_from_env()
        self.addr: Address = (advertise_ip, port)
        self.keyring = keyring
        self.config = config
        self.node = GossipNode(
            node_name, self.addr, config, rng or random.Random(), trio.current_time()
        )
        self.counters: Counter[str] = Counter()
        self.replay = ReplayGuard(replay_window(config))
        self._streams = 0
        self._subscribers: list[trio.MemorySendChannel[GossipEvent]] = []
        self._udp: socket.socket | None = None
        self._nursery: trio.Nursery | None = None
        self._kick = trio.Event()

    # ---- lifetime ----------------------------------------------------------------------

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind UDP and TCP on the advertised address and serve until cancelled."""
        # A plain non-blocking socket: sends happen synchronously from _flush (a full buffer is
        # a lost datagram, which SWIM tolerates), receives wait on trio's readiness.
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setblocking(False)
        udp.bind(self.addr)
        listeners = await trio.open_tcp_listeners(self.addr[1], host=self.addr[0])
        self._udp = udp
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._receive_loop)
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(trio.serve_listeners, self._serve_contained, listeners)
                self._flush()
                task_status.started()
        finally:
            self._nursery = None
            udp.close()
            for channel in self._subscribers:
                channel.close()

    async def join(self, addrs: list[str]) -> int:
        """Push-pull with each address (ip or ip:port); returns how many answered. These seeds
        are the only non-members the node ever contacts."""
        targets = [_parse(a) for a in addrs]
        self.node.add_seeds(targets)
        ok = 0
        for target in targets:
            if target != self.addr and await self._push_pull(PushPullRequest(target, True)):
                ok += 1
        return ok

    async def leave(self) -> None:
        self.node.leave(trio.current_time())
        self._flush()
        await trio.sleep(LEAVE_PROPAGATION)

    # ---- views and commands ------------------------------------------------------------

    def members(self) -> list[MemberView]:
        return self.node.members()

    def member(self, name: str) -> MemberView | None:
        """One member by name (None: not known): what a node's status needs, in O(1)."""
        return self.node.member(name)

    def join_network(self, net_id: str) -> None:
        self.node.join_network(net_id, trio.current_time())
        self._flush()

    def leave_network(self, net_id: str) -> None:
        self.node.leave_network(net_id, trio.current_time())
        self._flush()

    def set_entry(self, table: str, net_id: str, key: str, value: bytes) -> None:
        self.node.set_entry(table, net_id, key, value, trio.current_time())
        self._flush()

    def delete_entry(self, table: str, net_id: str, key: str) -> None:
        self.node.delete_entry(table, net_id, key, trio.current_time())
        self._flush()

    def entries(self, table: str, net_id: str) -> dict[str, TableEntry]:
        return self.node.entries(table, net_id)

    def subscribe(self) -> trio.MemoryReceiveChannel[GossipEvent]:
        send, receive = trio.open_memory_channel[GossipEvent](SUBSCRIBER_BUFFER)
        self._subscribers.append(send)
        return receive

    def stats(self) -> dict[str, int]:
        """Traffic and every drop by reason (zero included), for `info` and metrics."""
        out = {f"dropped_{reason}": 0 for reason in DROP_REASONS}
        out.update(self.counters)
        out["refused_non_member_sends"] = self.node.refused_sends
        out["replay_cache"] = len(self.replay)
        return out

    # ---- key rotation: each step on every member before the next (keyring.py) ----------

    def install_key(self, key: bytes) -> None:
        """Open messages sealed with `key` too; keep sealing with the primary."""
        self.keyring = self.keyring.with_key(key)

    def use_key(self, key: bytes) -> None:
        """Seal with `key` (installed on every member first, or they stop hearing us)."""
        self.keyring = self.keyring.with_primary(key)

    def remove_key(self, key: bytes) -> None:
        """Stop opening messages sealed with `key`: whoever still seals with it is cut off."""
        self.keyring = self.keyring.without_key(key)

    def key_fingerprints(self) -> list[str]:
        """Digests of the installed keys, primary first (never the keys themselves)."""
        return self.keyring.fingerprints()

    # ---- the loops ---------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        udp = self._udp
        assert udp is not None
        while True:
            await trio.lowlevel.wait_readable(udp)
            while True:
                try:
                    data, src = udp.recvfrom(MAX_DATAGRAM + 1)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    self.counters["receive_errors"] += 1
                    break
                with contained(self.counters, "datagram_errors", log, f"datagram from {src}"):
                    self._on_datagram(data, src)
            self._flush()

    def _on_datagram(self, data: bytes, src: tuple[str, int]) -> None:
        self.counters["bytes_received"] += len(data)
        self.counters["datagrams_received"] += 1
        try:
            if len(data) > MAX_DATAGRAM:
                raise OversizedGossip(f"datagram of {len(data)} bytes")
            plain = self._open(data)
            self.node.receive_datagram(plain, (src[0], src[1]), trio.current_time())
        except MalformedGossip as exc:
            self._count_drop(exc)

    async def _timer_loop(self) -> None:
        """Sleep until the core's next deadline; every path that gives the core work ends in
        `_flush`, whose kick makes this loop take the (maybe earlier) deadline again: the core
        leaves the gossip tick out while nothing is queued (node.py `next_deadline`)."""
        while True:
            deadline = self.node.next_deadline()
            with trio.move_on_at(deadline):
                await self._kick.wait()
            if self._kick.is_set():
                self._kick = trio.Event()
            now = trio.current_time()
            if now >= self.node.next_deadline():
                self.node.handle_timer(now)
                self._flush()
                # Our own flush: the deadline is taken again above, no second pass for it.
                self._kick = trio.Event()

    async def _serve_contained(self, stream: trio.SocketStream) -> None:
        """One push-pull connection: whatever it raises ends it, never the listener."""
        if self._streams >= MAX_PUSH_PULL_STREAMS:
            self.counters["dropped_busy"] += 1
            await trio.aclose_forcefully(stream)
            return
        self._streams += 1
        try:
            with contained(self.counters, "push_pull_crashes", log, "push-pull connection"):
                async with stream:
                    await self._serve_push_pull(stream)
        finally:
            self._streams -= 1
            self._flush()

    async def _serve_push_pull(self, stream: trio.SocketStream) -> None:
        # One deadline for the whole exchange, not per byte: a slow sender cannot keep it open.
        with trio.move_on_after(TCP_TIMEOUT) as deadline:
            try:
                peer_host = _peer_host(stream)
                theirs = await self._read_frame(stream)
                ours = self.node.push_pull_payload(False)
                self.node.merge_push_pull(theirs, trio.current_time(), src_host=peer_host)
                await self._write_frame(stream, ours)
                self.counters["push_pulls_served"] += 1
            except MalformedGossip as exc:
                self._count_drop(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.counters["push_pull_errors"] += 1
        if deadline.cancelled_caught:
            self.counters["dropped_idle_timeout"] += 1

    async def _push_pull(self, request: PushPullRequest) -> bool:
        """Our side of an exchange with a member or a seed; False when it did not complete."""
        if not self.node.may_contact(request.addr):
            self.node.refused_sends += 1
            return False
        done = False
        with contained(self.counters, "push_pull_crashes", log, f"push-pull to {request.addr}"):
            with trio.move_on_after(TCP_TIMEOUT) as deadline:
                try:
                    # From our advertised address: the peer checks it is a member's.
                    stream = await trio.open_tcp_stream(*request.addr, local_address=self.addr[0])
                    async with stream:
                        await self._write_frame(stream, self.node.push_pull_payload(request.join))
                        theirs = await self._read_frame(stream)
                    self.node.merge_push_pull(theirs, trio.current_time())
                    self.counters["push_pulls_done"] += 1
                    done = True
                except MalformedGossip as exc:
                    self._count_drop(exc)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self.counters["push_pull_errors"] += 1
            if deadline.cancelled_caught:
                self.counters["push_pull_timeouts"] += 1
        self._flush()
        return done

    async def _write_frame(self, stream: trio.SocketStream, payload: bytes) -> None:
        sealed = self.keyring.seal(payload, time.time())
        await stream.send_all(_FRAME.pack(len(sealed)) + sealed)
        self.counters["bytes_sent"] += _FRAME.size + len(sealed)

    async def _read_frame(self, stream: trio.SocketStream) -> bytes:
        head = await _receive_exactly(stream, _FRAME.size)
        (length,) = _FRAME.unpack(head)
        if length > MAX_STREAM:
            raise OversizedGossip(f"push-pull of {length} bytes")
        sealed = await _receive_exactly(stream, length)
        self.counters["bytes_received"] += _FRAME.size + length
        return self._open(sealed)

    # ---- plumbing ----------------------------------------------------------------------

    def _open(self, sealed: bytes) -> bytes:
        """Authenticate, then admit once while fresh: the plaintext, or MalformedGossip."""
        opened = self.keyring.open(sealed)
        self.replay.admit(opened.sent_at, opened.nonce, time.time())
        return opened.plaintext

    def _count_drop(self, exc: MalformedGossip) -> None:
        self.counters[f"dropped_{_reason(exc)}"] += 1
        log.debug("gossip input dropped: %s", exc)

    def _flush(self) -> None:
        """Send what the core produced, start its push-pulls, hand out its events."""
        if self._udp is not None:
            for addr, data in self.node.drain_datagrams():
                self._sendto(self.keyring.seal(data, time.time()), addr)
        if self._nursery is not None:
            for request in self.node.drain_push_pulls():
                self._nursery.start_soon(self._push_pull, request)
        for event in self.node.drain_events():
            for channel in list(self._subscribers):
                try:
                    channel.send_nowait(event)
                except trio.WouldBlock:
                    self.counters["events_dropped"] += 1
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    self._subscribers.remove(channel)
        self._kick.set()

    def _sendto(self, sealed: bytes, addr: Address) -> None:
        assert self._udp is not None
        try:
            self._udp.sendto(sealed, addr)
        except (OSError, ValueError, TypeError):
            # The codec admits IP literals only, so this is a full buffer or no route; an
            # address it let through by mistake must cost one datagram, not the service.
            self.counters["send_errors"] += 1
            return
        self.counters["bytes_sent"] += len(sealed)
        self.counters["datagrams_sent"] += 1


async def _receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = await stream.receive_some(n - len(chunks))
        if not chunk:
            raise MalformedGossip("stream ended early")
        chunks += chunk
    return bytes(chunks)


# Most specific first: every reason is a MalformedGossip.
_REASONS: tuple[tuple[type[MalformedGossip], str], ...] = (
    (Unauthenticated, "unauthenticated"),
    (StaleGossip, "stale"),
    (ReplayedGossip, "replayed"),
    (FutureGossip, "future"),
    (OversizedGossip, "oversized"),
    (NonMemberGossip, "non_member"),
)


def _reason(exc: MalformedGossip) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return "malformed"


def _peer_host(stream: trio.SocketStream) -> str:
    peer = stream.socket.getpeername()
    host: str = peer[0]
    return host


def _parse(addr: str) -> Address:
    host, _, port = addr.partition(":")
    return host, int(port) if port else GOSSIP_PORT
