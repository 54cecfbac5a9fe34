"""The "paced" nice policies' decision, sans-IO: when the hot loop's thread leaves its negative
nice value for 0 and when it takes it back (issue 15, UDP loss at 80 % of the sustained rate).

At nice -10 the loop preempts the receiving application on every datagram of a paced stream
(one datagram per wake-up, no batch ever forms, 60 % more CPU per datagram), and on 2 cores
`iperf3 -u` loses datagrams at its own socket; at nice 0 batches form and the loss goes
(benchmarks/profiles/udploss-offload.md). A ping (a lone frame every 10-1000 ms) and bulk TCP
want -10 (loaded-latency-budget.md). The loop feeds `Pacer` what it sees without cost per
frame: every `SAMPLE_PASSES` passes, how many of them were "lone" passes and the monotonic
time; and when a short sleep ended with nothing to do. What makes a pass lone is the policy's
(`hotpath.NICE_POLICIES`): under "paced" it moved a non-TCP frame (drained a TAP latency queue,
or delivered a frame to one), which bulk IPv4 TCP never does, its ACKs included (the queue
split knows IPv4 TCP only: IPv6 or VLAN-tagged TCP counts as lone); under "paced-wake"
it slept first, which a bursty paced stream at -10 does as seldom as bulk through offload
(benchmarks/profiles/s9-paced.md). The pacer answers with the nice value to take, or None."""

from __future__ import annotations

from typing import TypedDict

#: Passes per sample: at `PACED_RATE` a sample spans ~13 ms ("the last few ms"), and the loop
#: reads the clock once per sample, not per pass. A ping takes 64 passes 0.6-64 s.
SAMPLE_PASSES = 64
#: Passes per second from which a stream of lone frames counts as paced: a ping is 1-100, a
#: UDP stream at 80 % of the offload path (0.7-1.5 Gb/s of 1400-octet datagrams) 60-130 k.
#: Below ~5 k the loop's preemption costs the receiver too little CPU to matter (≤ 5 % of a
#: core at the 9 µs per datagram measured).
PACED_RATE = 5000.0
#: Share of a sample's passes that must be lone to step down: a paced UDP stream moves a
#: non-TCP frame on nearly every pass (its TAP queue at the sender, its delivery at the
#: receiver), bulk TCP on almost none; a ping's passes are too few for the rate. ("paced-wake":
#: a paced stream at -10 would wake for every datagram, bulk find work pass after pass.)
PACED_LONE_SHARE = 0.75
#: Back up while paced when fewer than this share of a sample's passes were lone (bulk
#: returned).
BULK_LONE_SHARE = 0.25
#: ... or when the wake-up rate fell below this share of the rate that stepped down. Low,
#: because stepping down itself lowers the rate: at nice 0 the loop wakes once for several
#: datagrams (at 1/2, a 100 Mb/s stream stepped up and down 16 times a second).
LEAVE_RATE_SHARE = 0.125
#: Seconds of sleep with nothing to do after which a paced loop takes its nice value back (the
#: stream ended): the loop's poll timeout while stepped down. At `PACED_RATE` the gap between
#: datagrams is 0.2 ms; a ping arriving within this of a stream's end meets nice 0.
PACED_QUIET = 0.01


class PacerArgs(TypedDict, total=False):
    """`Pacer`'s thresholds, for the loop to pass on (tests lower them)."""

    rate: float
    lone_share: float
    bulk_share: float
    leave_share: float
    quiet: float
    sample: int


class Pacer:
    """Nice value of the loop's thread under the "paced" policies: `high` (the loop's
    `nice`, for pings and bulk) or `low` (while a paced stream makes most passes lone)."""

    def __init__(
        self,
        high: int,
        low: int = 0,
        *,
        rate: float = PACED_RATE,
        lone_share: float = PACED_LONE_SHARE,
        bulk_share: float = BULK_LONE_SHARE,
        leave_share: float = LEAVE_RATE_SHARE,
        quiet: float = PACED_QUIET,
        sample: int = SAMPLE_PASSES,
    ) -> None:
        if sample < 1 or rate <= 0 or quiet <= 0 or not 0 < leave_share <= 1:
            raise ValueError("sample, rate, quiet and leave_share must be positive")
        if not 0 <= bulk_share <= lone_share <= 1:
            raise ValueError("need 0 <= bulk_share <= lone_share <= 1")
        self.high, self.low = high, low
        self.sample = sample
        self.quiet = quiet
        # A sample shorter than this is fast enough to step down; one longer than `_slow`
        # slow enough to step back up.
        self._fast = sample / rate
        self._slow = self._fast / leave_share
        self._lone_min = lone_share * sample
        self._lone_bulk = bulk_share * sample
        #: The value the pacer last asked for (the loop starts at `high`).
        self.nice = high
        self._since: float | None = None

    @property
    def paced(self) -> bool:
        return self.nice == self.low and self.low != self.high

    def start(self, now: float) -> None:
        """The loop begins counting passes at `now`."""
        self._since = now

    def on_sample(self, now: float, lone: int) -> int | None:
        """`sample` passes ended at `now`, `lone` of them lone (the policy's sign of a lone
        frame): the nice value to take, or None to keep the current one."""
        since, self._since = self._since, now
        if since is None:  # no start: this sample only opens the first
            return None
        span = now - since
        if self.nice == self.high:
            if span <= self._fast and lone >= self._lone_min:
                return self._take(self.low)
        elif lone < self._lone_bulk or span > self._slow:
            return self._take(self.high)
        return None

    def on_quiet(self, now: float) -> int | None:
        """The loop slept `quiet` seconds and nothing came: the stream ended."""
        self._since = now  # the passes counted so far are no longer a rate
        if self.nice != self.high:
            return self._take(self.high)
        return None

    def _take(self, nice: int) -> int | None:
        if nice == self.nice:
            return None
        self.nice = nice
        return nice
