"""The trio shell around GossipNode: UDP and TCP on port 7946 in the host's namespace, every
message sealed with the cluster keyring; bad input is counted and dropped, never raised."""

from __future__ import annotations

import random
import socket
import struct
import time
from collections import Counter

import trio

from overlaynet.gossip.config import LAB_CONFIG, MAX_DATAGRAM, SwimConfig
from overlaynet.gossip.keyring import Keyring, Unauthenticated
from overlaynet.gossip.node import GossipEvent, GossipNode, PushPullRequest
from overlaynet.gossip.swim import MemberView
from overlaynet.gossip.tables import TableEntry
from overlaynet.wire.gossip import Address, FutureGossip, MalformedGossip

GOSSIP_PORT = 7946
# memberlist TCPTimeout is 10 s on a LAN; lab hosts answer in well under a second.
TCP_TIMEOUT = 3.0
# A full state for 1000 hosts with their endpoints is a few hundred KB; refuse anything absurd.
MAX_STREAM = 8 << 20
_FRAME = struct.Struct("!I")
# Subscribers that do not keep up lose events (counted) rather than stall the control plane.
SUBSCRIBER_BUFFER = 4096
# After announcing a leave, keep gossiping this long so the news gets out (memberlist waits
# for the broadcast too, bounded by LeaveTimeout).
LEAVE_PROPAGATION = 1.0


class GossipService:
    """One host's gossip agent. Start `run()` in a nursery; the rest are plain calls."""

    def __init__(
        self,
        node_name: str,
        advertise_ip: str,
        keyring: Keyring,
        port: int = GOSSIP_PORT,
        config: SwimConfig = LAB_CONFIG,
        rng: random.Random | None = None,
    ) -> None:
        self.addr: Address = (advertise_ip, port)
        self.keyring = keyring
        self.config = config
        self.node = GossipNode(
            node_name, self.addr, config, rng or random.Random(), trio.current_time()
        )
        self.counters: Counter[str] = Counter()
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
                nursery.start_soon(trio.serve_listeners, self._serve_push_pull, listeners)
                self._flush()
                task_status.started()
        finally:
            self._nursery = None
            udp.close()
            for channel in self._subscribers:
                channel.close()

    async def join(self, addrs: list[str]) -> int:
        """Push-pull with each address (ip or ip:port); returns how many answered."""
        targets = [_parse(a) for a in addrs]
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
        return dict(self.counters)

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
                self._on_datagram(data, src)
            self._flush()

    def _on_datagram(self, data: bytes, src: tuple[str, int]) -> None:
        self.counters["bytes_received"] += len(data)
        self.counters["datagrams_received"] += 1
        if len(data) > MAX_DATAGRAM:
            self.counters["dropped_oversized"] += 1
            return
        try:
            plain = self.keyring.open(data, time.time())
            self.node.receive_datagram(plain, (src[0], src[1]), trio.current_time())
        except MalformedGossip as exc:
            self._count_drop(exc)

    async def _timer_loop(self) -> None:
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

    async def _serve_push_pull(self, stream: trio.SocketStream) -> None:
        async with stream:
            with trio.move_on_after(TCP_TIMEOUT):
                try:
                    theirs = await self._read_frame(stream)
                    ours = self.node.push_pull_payload(False)
                    self.node.merge_push_pull(theirs, trio.current_time())
                    await self._write_frame(stream, ours)
                    self.counters["push_pulls_served"] += 1
                except MalformedGossip as exc:
                    self._count_drop(exc)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    self.counters["push_pull_errors"] += 1
                self._flush()

    async def _push_pull(self, request: PushPullRequest) -> bool:
        with trio.move_on_after(TCP_TIMEOUT):
            try:
                stream = await trio.open_tcp_stream(*request.addr)
                async with stream:
                    await self._write_frame(stream, self.node.push_pull_payload(request.join))
                    theirs = await self._read_frame(stream)
                self.node.merge_push_pull(theirs, trio.current_time())
                self.counters["push_pulls_done"] += 1
                return True
            except MalformedGossip as exc:
                self._count_drop(exc)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.counters["push_pull_errors"] += 1
            finally:
                self._flush()
        self.counters["push_pull_timeouts"] += 1
        return False

    async def _write_frame(self, stream: trio.SocketStream, payload: bytes) -> None:
        sealed = self.keyring.seal(payload, time.time())
        await stream.send_all(_FRAME.pack(len(sealed)) + sealed)
        self.counters["bytes_sent"] += _FRAME.size + len(sealed)

    async def _read_frame(self, stream: trio.SocketStream) -> bytes:
        head = await _receive_exactly(stream, _FRAME.size)
        (length,) = _FRAME.unpack(head)
        if length > MAX_STREAM:
            self.counters["dropped_oversized"] += 1
            raise MalformedGossip(f"push-pull of {length} bytes")
        sealed = await _receive_exactly(stream, length)
        self.counters["bytes_received"] += _FRAME.size + length
        return self.keyring.open(sealed, time.time())

    # ---- plumbing ----------------------------------------------------------------------

    def _count_drop(self, exc: MalformedGossip) -> None:
        if isinstance(exc, Unauthenticated):
            self.counters["dropped_unauthenticated"] += 1
        elif isinstance(exc, FutureGossip):
            self.counters["dropped_future"] += 1
        else:
            self.counters["dropped_malformed"] += 1

    def _flush(self) -> None:
        """Send what the core produced, start its push-pulls, hand out its events."""
        if self._udp is not None:
            for addr, data in self.node.drain_datagrams():
                self._sendto(self.keyring.seal(data, time.time()), addr)
        if self._nursery is not None:
            for request in self.node.drain_push_pulls():
                self._nursery.start_soon(self._push_pull, request)
        for event in self.node.drain_events():
            for channel in self._subscribers:
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
        except OSError:
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


def _parse(addr: str) -> Address:
    host, _, port = addr.partition(":")
    return host, int(port) if port else GOSSIP_PORT
