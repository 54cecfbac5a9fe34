"""The lane: a second thread of the hot loop that serves only the urgent fds (issue 15, a ping
under load must not wait behind the bulk).

`HotLoop.serve` is one thread over every fd; a ping that arrives while it is inside a bulk drain
(up to `drain_budget` super-frames cut and sent) waits for that drain, then for a CPU. The lane
serves, with an epoll of its own, every network's `latency_fd` when its TAP has a second queue
(the kernel queues non-TCP there: pings, DNS, and UDP bulk such as `iperf3 -u` too) and the
checksum-0 receive socket (`HotLoop._rx`: pings, ACKs, ARP, lone frames) when a checksummed
twin socket takes the bulk (without one, `_rx` carries everything and stays with the main
loop). A kernel VTEP peer sends its bulk with UDP checksum 0 by default, which puts its whole
stream on the lane: `--lane` is meant for overlaynet peers. The main loop keeps the bulk fds.
The lane runs at a higher priority (`LANE_MODES`): SCHED_FIFO 1, or a nice value.

Thread safety. Both threads take `HotLoop.state_lock` for all their Python work and let it go
only around the long C calls (`fastingress.Engine.drain`'s `in_step`, `fastegress.FastEgress
.drain`'s `eg_run`), which touch per-thread C state only; so the Python side of both drains is
serialised and the C side runs in parallel (ctypes releases the GIL during C calls). What both
threads can touch during a drain, and why each is safe:
- `net.counters`, the loop's counters, `FdbEntry.rx_*`/`tx_*`: Python `+=` under the lock (a
  `Counter` increment is read, add, store: two threads could lose one without it).
- FDB learning (`switching.learn_source`, `net.learned`), `_age_learned`: under the lock.
- `_carried` (batches carried to a TAP queue's next drain): one dict per thread, the lane's in
  `Lane.carried` (else the main loop would flush, and spin on, the lane's queues).
  `_switch_tso` looks at both.
- `_held` (impairments), `tracer`, `refused`, `_small`, `_frame_id`, `reassembler`: under the
  lock (the Python and offload drains keep it for their whole drain).
- `fastingress` engines: one per socket fd (`_engines[loop][fd]`), and each socket is served by
  one thread only (`_rx` by the lane, `_rx_checked` by the main loop), so an engine's buffers,
  record and slots are never shared; the engines' dict is made under the lock.
- `fastegress.FastEgress`: its event list (`_ev`) and `emptied` are per instance, so the lane
  has its own instance (`Lane.fast`); the main loop's keeps the bulk queues.
- `fastoffload`: called only with the lock held (not released inside).
- `_woke`: a flag, set by either, read by the main loop for the "yield" nice policy only (the
  "paced" policies run as "fixed" with a lane: the lane's deliveries would read as its own).
- `_held`'s release: the main loop's (its wake-up computes the first datagram's due time); the
  lane pokes it after a drain that left datagrams held.
- TSO switching (`_switch_tso`): either thread, under the lock; a C drain that ran while the
  other thread switched does not clear the queue from the new backlog (`_drain_tap`).
If the lane's thread fails, it stops the loop and `HotLoop.serve` raises its error.
What the lock does not cover: the control thread's swaps of `networks`, `members`, FDB tables
(as before: wholesale swaps and `fdb.generation`).

Bounded: one drain (its own budget) per ready fd per wake-up, then epoll again. A flood on the
urgent path (UDP bulk) would let a SCHED_FIFO thread keep a CPU for itself (the kernel's RT
throttling, `sched_rt_runtime_us`, steps in only at 95 %): the lane measures its busy time in
windows of `LANE_WINDOW` and, past `LANE_SHARE` of one, drops to nice 0 (SCHED_OTHER) for the
rest of the window (`lane_demoted`), then takes its priority back.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overlaynet.dataplane.fastegress import FastEgress
    from overlaynet.dataplane.hotpath import HotLoop, _Carried
    from overlaynet.dataplane.switching import Network

#: The environment variable an agent takes its `--lane` default from (a lab's agents inherit
#: the environment of `lab up`).
LANE_ENV = "OVERLAYNET_LANE"
#: `--lane`: off (one thread, as before), fifo (the lane at SCHED_FIFO priority `LANE_FIFO`;
#: refused: counted, and the lane runs at `LANE_NICE`), nice (the lane at `LANE_NICE`).
LANE_MODES = ("off", "fifo", "nice")
#: SCHED_FIFO priority: the lowest real-time one, ahead of every ordinary process (iperf3, the
#: main loop) but behind the kernel's own RT threads.
LANE_FIFO = 1
#: Nice value of the lane for "nice" and when SCHED_FIFO is refused: the strongest, since the
#: lane only ever holds a CPU for lone frames (or is demoted: `LANE_SHARE`).
LANE_NICE = -20
#: Seconds of one accounting window of the lane's busy time.
LANE_WINDOW = 0.01
#: Share of a window the lane may be busy at its priority before it is demoted to nice 0 for
#: the rest of it: a ping is ~20 us of work, so only a flood gets near it.
LANE_SHARE = 0.5


class Lane:
    """The urgent fds of one `HotLoop`, served by a thread of their own (`start`/`join`)."""

    def __init__(self, loop: HotLoop, mode: str, rx: socket.socket | None) -> None:
        if mode not in LANE_MODES or mode == "off":
            raise ValueError(f"lane mode must be fifo or nice, not {mode!r}")
        self.loop = loop
        self.mode = mode
        self.nice = LANE_NICE
        #: Accounting window and the share of it at the lane's priority (`LANE_SHARE`).
        self.window = LANE_WINDOW
        self.share = LANE_SHARE
        #: The checksum-0 socket when it carries lone frames only (`HotLoop.set_lane`).
        self.rx = rx
        self.rx_fd = -1 if rx is None else rx.fileno()
        self.poller = select.epoll()
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.poller.register(self.wake_r, select.EPOLLIN)
        if rx is not None:
            self.poller.register(self.rx_fd, select.EPOLLIN)
        #: TAP queue fd → the lane's carried batches (`HotLoop._drain_tap`), apart from the
        #: main loop's.
        self.carried: dict[int, tuple[Network, _Carried | None]] = {}
        #: The lane's own C egress drain (per-instance event list), made by `start`.
        self.fast: FastEgress | None = None
        self.thread: threading.Thread | None = None
        #: The lane thread's native id once it runs (tests look at its scheduling).
        self.tid = 0
        #: Monotonic end of the current accounting window.
        self.window_end = 0.0
        #: What ended the thread, if it failed (`HotLoop.serve` raises it after the join).
        self.error: BaseException | None = None

    def register(self, fd: int) -> None:
        self.poller.register(fd, select.EPOLLIN)

    def unregister(self, fd: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.poller.unregister(fd)

    def wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self.wake_w, b"x")

    def arm(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_r, 4096):
                pass

    def start(self) -> None:
        """Start the thread (from `HotLoop.serve`), with its own C egress drain."""
        main = self.loop.fast_egress
        if main is not None and self.fast is None:
            from overlaynet.dataplane.fastegress import FastEgress

            fast, _reason = FastEgress.create(main.budget)
            if fast is not None:
                fast.tso = main.tso
            self.fast = fast
        self.thread = threading.Thread(target=self.serve, name="vtep-lane", daemon=True)
        self.thread.start()

    def join(self) -> None:
        """Wake the thread (the loop's `_stopping` is set) and wait for it."""
        self.wake()
        if self.thread is not None:
            self.thread.join()
            self.thread = None

    def close(self) -> None:
        self.poller.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    def _prioritise(self) -> bool:
        """Take the lane's priority; True when it is SCHED_FIFO."""
        loop = self.loop
        if self.mode == "fifo":
            try:
                os.sched_setscheduler(self.tid, os.SCHED_FIFO, os.sched_param(LANE_FIFO))
                return True
            except OSError:
                loop._counters["lane_fifo_refused"] += 1
                self.mode = "nice"  # asked once: not again at every window
        try:
            os.setpriority(os.PRIO_PROCESS, self.tid, self.nice)
        except OSError:
            loop._counters["lane_priority_refused"] += 1
        return False

    def _demote(self, fifo: bool) -> None:
        """Ordinary priority for the rest of the window (`LANE_SHARE`)."""
        with contextlib.suppress(OSError):
            if fifo:
                os.sched_setscheduler(self.tid, os.SCHED_OTHER, os.sched_param(0))
            os.setpriority(os.PRIO_PROCESS, self.tid, 0)

    def serve(self) -> None:
        """Serve the urgent fds until the loop's `stop()`. An exception stops the loop too
        (kept in `error`): a VTEP whose lane died must not look alive."""
        try:
            self._serve()
        except BaseException as error:
            self.error = error
            self.loop.stop()

    def _serve(self) -> None:
        loop = self.loop
        lock = loop.state_lock
        assert lock is not None
        self.tid = threading.get_native_id()
        with lock:
            fifo = self._prioritise()
        rx_fd, wake_fd = self.rx_fd, self.wake_r
        poll = self.poller.poll
        monotonic = time.monotonic
        carried = self.carried
        counters = loop._counters
        held = loop._held.heap
        self.window_end = monotonic() + self.window
        busy = 0.0
        demoted = False
        limit = self.window * self.share
        while not loop._stopping:
            ready = poll(0 if carried else -1)
            start = monotonic()
            if start >= self.window_end:
                if demoted:
                    demoted = False
                    with lock:
                        fifo = self._prioritise()
                self.window_end, busy = start + self.window, 0.0
                limit = self.window * self.share
            with lock:
                # What a wake-up waited for the main loop's Python work (and the GIL): the
                # lane's own latency, `lane_wait_us` over `lane_wakeups`. Not busy time: the
                # share counts only the lane's own work.
                begun = monotonic()
                counters["lane_wakeups"] += 1
                counters["lane_wait_us"] += int((begun - start) * 1e6)
                if carried:
                    listed = {fd for fd, _events in ready}
                    for fd, (owner, _state) in list(carried.items()):
                        if fd in listed:
                            continue
                        if loop._by_fd.get(fd) is owner:
                            loop._drain_tap(owner, fd, self)
                        else:
                            del carried[fd]
                for fd, _events in ready:
                    if fd == rx_fd and self.rx is not None:
                        loop._drain_udp(self.rx, merge=False)
                    elif fd == wake_fd:
                        self.arm()
                    else:
                        net = loop._by_fd.get(fd)
                        if net is not None:
                            loop._drain_tap(net, fd, self)
                        else:
                            self.unregister(fd)  # removed meanwhile
                if held:
                    # Impaired datagrams the main loop releases: its sleep was computed
                    # before they were held (up to AGE_SWEEP_INTERVAL), so it is woken.
                    loop.poke()
                busy += monotonic() - begun
                if busy > limit and not demoted:
                    demoted = True
                    counters["lane_demoted"] += 1
                    self._demote(fifo)
