"""The VTEP's hot loop: one epoll loop over the UDP socket and every TAP, draining each until
EAGAIN, in a thread of its own (FASTPATH.md: one loop for both directions beat two threads).

All decisions come from `switching`; this module only moves bytes between file descriptors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import sys
from collections import Counter

from overlaynet.dataplane.switching import Network, Verdict, egress, flow_hash, ingress

#: Frames handled per fd before looking at the others again: bounds how long one busy
#: direction can starve the other, while still amortising the epoll_wait over many frames.
DRAIN_BUDGET = 256
#: Read buffer: larger than any frame a TAP or the underlay can hand us (64 KiB IP limit), so
#: oversized input is seen whole and counted instead of silently truncated.
READ_SIZE = 65536
#: From <linux/udp.h>: UDP_SEGMENT (send one buffer as equal-size datagrams, "UDP GSO") and
#: UDP_GRO (receive coalesced datagrams plus their size in a control message).
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
#: UDP-GSO totals are capped at 65,507 octets (FASTPATH.md, "Traps") and at 64 segments
#: (UDP_MAX_SEGMENTS in <linux/udp.h> before 6.x raised it).
GSO_MAX_BYTES = 65507
GSO_MAX_SEGMENTS = 64
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)


class HotLoop:
    """Moves frames TAP → UDP and UDP → TAP for every registered network until `stop()`.

    Thread-safety: the control side (another thread) swaps `networks` and `members` for new
    objects and registers fds through epoll, which the kernel serialises; the loop only reads.
    """

    def __init__(
        self,
        rx: socket.socket,
        tx: list[socket.socket],
        port: int,
        counters: Counter[str],
        *,
        strict: bool = False,
        gso: bool = False,
    ) -> None:
        if not tx:
            raise ValueError("at least one sending socket is needed")
        self._rx = rx
        self._tx = tx
        self._port = port
        self._counters = counters
        self._strict = strict
        #: Batch mode: equal-size datagrams to one peer leave in one UDP-GSO sendmsg, and
        #: the receive socket takes coalesced (GRO) buffers. Needs UDP checksums on.
        self._gso = gso
        #: VNI octets → network, for ingress; replaced wholesale on change.
        self.networks: dict[bytes, Network] = {}
        self._by_fd: dict[int, Network] = {}
        self.members: frozenset[str] = frozenset()
        self._poller = select.epoll()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poller.register(self._wake_r, select.EPOLLIN)
        self._poller.register(rx.fileno(), select.EPOLLIN)
        self._stopping = False

    def add(self, net: Network) -> None:
        """Start moving frames for `net`."""
        self.networks = {**self.networks, net.vni_key: net}
        self._by_fd = {**self._by_fd, net.tap_fd: net}
        self._poller.register(net.tap_fd, select.EPOLLIN)

    def remove(self, net: Network) -> None:
        """Stop moving frames for `net`; safe while the loop runs."""
        # The owner may already have closed the TAP fd, which takes it out of epoll anyway.
        with contextlib.suppress(OSError):
            self._poller.unregister(net.tap_fd)
        self._by_fd = {fd: n for fd, n in self._by_fd.items() if n is not net}
        self.networks = {k: n for k, n in self.networks.items() if n is not net}

    def stop(self) -> None:
        """Ask `serve()` to return; callable from any thread or a signal handler."""
        self._stopping = True
        # A full pipe means a wake-up is already pending.
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def close(self) -> None:
        """Release the epoll fd and the wake pipe (not the sockets or TAPs: their owner does)."""
        self._poller.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def arm(self) -> None:
        """Clear an earlier `stop()`; called before each `serve()` so that a stop arriving
        before the thread gets going is not lost."""
        self._stopping = False
        _drain_pipe(self._wake_r)

    def serve(self) -> None:
        """Run until `stop()`."""
        rx_fd = self._rx.fileno()
        wake_fd = self._wake_r
        poll = self._poller.poll
        while not self._stopping:
            for fd, _events in poll():
                if fd == rx_fd:
                    if self._gso:
                        self._drain_udp_gro()
                    else:
                        self._drain_udp()
                elif fd == wake_fd:
                    _drain_pipe(wake_fd)
                else:
                    net = self._by_fd.get(fd)
                    if net is None:
                        continue
                    if self._gso:
                        self._drain_tap_gso(net)
                    else:
                        self._drain_tap(net)

    def _drain_tap(self, net: Network) -> None:
        """Egress: frames from one TAP, encapsulated and sent to the peers."""
        read, write = os.read, os.write
        fd = net.tap_fd
        tx = self._tx
        n_tx = len(tx)
        port = self._port
        counters = net.counters
        for _ in range(DRAIN_BUDGET):
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                counters["tap_read_error"] += 1
                return
            verdict, data, targets = egress(net, frame)
            if verdict is Verdict.DROP:
                continue
            if verdict is Verdict.REPLY:
                write(fd, data)
                continue
            sendto = tx[flow_hash(frame) % n_tx].sendto
            for host in targets:
                try:
                    sendto(data, (host, port))
                except OSError as error:
                    # EMSGSIZE: the underlay path MTU is below the frame (DF is always set).
                    key = "tx_drop_too_big" if error.errno == errno.EMSGSIZE else "tx_error"
                    counters[key] += 1

    def _drain_tap_gso(self, net: Network) -> None:
        """Egress in batch mode: consecutive unicast frames for the same peer and source socket
        are sent as one UDP-GSO buffer; a shorter frame may end a batch (the kernel allows a
        short last segment), anything else flushes it."""
        read, write = os.read, os.write
        fd = net.tap_fd
        tx = self._tx
        n_tx = len(tx)
        port = self._port
        counters = net.counters
        batch: list[bytes] = []
        batch_sock = tx[0]
        batch_host = ""
        segment = total = 0

        def flush() -> None:
            address = (batch_host, port)
            try:
                if len(batch) == 1:
                    batch_sock.sendto(batch[0], address)
                else:
                    gso = [(SOL_UDP, UDP_SEGMENT, segment.to_bytes(2, sys.byteorder))]
                    batch_sock.sendmsg([b"".join(batch)], gso, 0, address)
            except OSError as error:
                key = "tx_drop_too_big" if error.errno == errno.EMSGSIZE else "tx_error"
                counters[key] += len(batch)
            batch.clear()

        for _ in range(DRAIN_BUDGET):
            try:
                frame = read(fd, READ_SIZE)
            except BlockingIOError:
                break
            except OSError:
                counters["tap_read_error"] += 1
                break
            verdict, data, targets = egress(net, frame)
            if verdict is Verdict.DROP:
                continue
            if verdict is Verdict.REPLY:
                write(fd, data)
                continue
            sock = tx[flow_hash(frame) % n_tx]
            if verdict is Verdict.UNICAST:
                size = len(data)
                host = targets[0]
                if batch and (
                    host != batch_host
                    or sock is not batch_sock
                    or size > segment
                    or total + size > GSO_MAX_BYTES
                    or len(batch) >= GSO_MAX_SEGMENTS
                ):
                    flush()
                if not batch:
                    batch_host, batch_sock, segment, total = host, sock, size, 0
                batch.append(data)
                total += size
                if size < segment:
                    flush()
                continue
            if batch:
                flush()
            for host in targets:
                try:
                    sock.sendto(data, (host, port))
                except OSError:
                    counters["tx_error"] += 1
        if batch:
            flush()

    def _drain_udp_gro(self) -> None:
        """Ingress in batch mode: one recvmsg may carry many datagrams of one sender, all of
        the size given in the UDP_GRO control message except perhaps the last."""
        recvmsg = self._rx.recvmsg
        write = os.write
        networks, members, counters = self.networks, self.members, self._counters
        strict = self._strict
        for _ in range(DRAIN_BUDGET):
            try:
                data, ancillary, _flags, address = recvmsg(READ_SIZE, _GRO_CMSG_SPACE)
            except BlockingIOError:
                return
            except OSError:
                counters["rx_error"] += 1
                return
            size = len(data)
            segment = size
            for level, kind, value in ancillary:
                if level == SOL_UDP and kind == UDP_GRO:
                    segment = int.from_bytes(value[:4], sys.byteorder) or size
            sender = address[0]
            for offset in range(0, size, segment):
                datagram = data[offset : offset + segment] if segment != size else data
                net, inner = ingress(networks, members, datagram, sender, counters, strict=strict)
                if net is not None:
                    try:
                        write(net.tap_fd, inner)
                    except OSError:
                        net.counters["rx_drop_tap_error"] += 1

    def _drain_udp(self) -> None:
        """Ingress: datagrams from the underlay, decapsulated into the right TAP."""
        recvfrom = self._rx.recvfrom
        write = os.write
        networks, members, counters = self.networks, self.members, self._counters
        strict = self._strict
        for _ in range(DRAIN_BUDGET):
            try:
                data, address = recvfrom(READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                counters["rx_error"] += 1
                return
            net, inner = ingress(networks, members, data, address[0], counters, strict=strict)
            if net is not None:
                try:
                    write(net.tap_fd, inner)
                except OSError:
                    net.counters["rx_drop_tap_error"] += 1


def _drain_pipe(fd: int) -> None:
    """Empty the wake pipe so level-triggered epoll stops reporting it."""
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 4096):
            pass
