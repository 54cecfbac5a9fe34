"""The agent operations a trace uses, one frozen dataclass each (listed in agent/requests.py).

`trace.plan` resolves TO inside FROM and picks the network; `trace.arm` sets the VTEP's trace
flag on a host; `trace.probe` sends the probe from FROM with captures on the ports between;
`trace.records` returns (and disarms) a host's VTEP records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from overlaynet.api import Request, check_seconds
from overlaynet.dataplane.tracing import MAX_ARMED_SECONDS, TraceMatch
from overlaynet.errors import InvalidArgument
from overlaynet.trace.probe import match_of

#: The longest a probe waits for its reply: a round trip on the lab is well under a second; a
#: lost probe must not hold the command (nor a worker thread of the agent) for long.
MAX_WAIT = 10.0
#: Smallest probe: an IPv4 header and an 8-octet ICMP/UDP header (TCP gets its 20 anyway).
MIN_SIZE = 28
#: Largest probe: what an IPv4 total length can say.
MAX_SIZE = 65535


@dataclass(frozen=True)
class TracePlan(Request):
    """Resolve `to` (a name or an IPv4 address) as `container` would; pick the network."""

    OP: ClassVar[str] = "trace.plan"
    container: str
    to: str
    network: str | None = None


@dataclass(frozen=True)
class TraceArm(Request):
    """Record what this host's VTEP decides about one probe (`tracing.TraceMatch`), for
    `seconds`."""

    OP: ClassVar[str] = "trace.arm"
    src: str
    dst: str
    proto: str = "icmp"
    ip_id: int = 0
    sport: int = 0
    dport: int = 0
    seconds: float = 10.0

    def check(self) -> None:
        if not 0 < self.seconds <= MAX_ARMED_SECONDS:
            raise InvalidArgument(f"a trace is armed for 0 < seconds <= {MAX_ARMED_SECONDS:g}")

    def match(self) -> TraceMatch:
        """The match, or InvalidArgument (checked by the handler, as addresses are)."""
        try:
            return TraceMatch(self.src, self.dst, self.proto, self.ip_id, self.sport, self.dport)
        except ValueError as e:
            raise InvalidArgument(f"bad trace match: {e}") from None


@dataclass(frozen=True)
class TraceRecords(Request):
    """This host's VTEP trace records (the trace is disarmed)."""

    OP: ClassVar[str] = "trace.records"


@dataclass(frozen=True)
class TraceProbe(Request):
    """Send `packet` (an IPv4 probe, hex; the CLI builds it with scapy) from `container` and
    report what the source host saw. Its addresses, protocol, IP id and ports are the match."""

    OP: ClassVar[str] = "trace.probe"
    container: str
    packet: str
    network: str | None = None
    reply_wait: float = 2.0

    def check(self) -> None:
        check_seconds("reply_wait", self.reply_wait, MAX_WAIT)

    def probe(self) -> tuple[bytes, TraceMatch]:
        """The packet and its match, or InvalidArgument (checked by the handler)."""
        try:
            raw = bytes.fromhex(self.packet)
        except ValueError:
            raise InvalidArgument("the probe packet must be hex") from None
        if not MIN_SIZE <= len(raw) <= MAX_SIZE:
            raise InvalidArgument(f"probe size {len(raw)}: from {MIN_SIZE} to {MAX_SIZE} octets")
        try:
            return raw, match_of(raw)
        except ValueError as e:
            raise InvalidArgument(f"bad probe: {e}") from None


TRACE_REQUESTS: tuple[type[Request], ...] = (TracePlan, TraceArm, TraceRecords, TraceProbe)
