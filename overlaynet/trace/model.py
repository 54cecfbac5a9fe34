"""The records a trace is made of, as the agents report them, and the hops it prints (pure).

Everything here travels as JSON through the agents' API: `from_json`/`to_json` are the only
conversions, and an unknown field is ignored, so an agent and a CLI of nearby versions agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Where a probe can stop, in path order; `Stop.where` is one of these.
STAGES = (
    "dns",
    "container",
    "veth",
    "bridge",
    "vtep",
    "underlay",
    "peer-vtep",
    "destination",
    "reply",
)


@dataclass(frozen=True)
class Capture:
    """A probe or reply frame seen on a port by a short AF_PACKET capture on the source host.

    `stage`: "container" (the container's own interface, eth0 or eth1…, in its namespace),
    "veth" (the host end of the source container's veth), "port" (another port of the same
    bridge: a TAP or another container's veth)."""

    stage: str
    port: str
    kind: str  # "probe" or "reply"
    t: float
    src_mac: str = ""
    dst_mac: str = ""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Capture:
        return cls(
            str(doc["stage"]),
            str(doc["port"]),
            str(doc["kind"]),
            float(doc["t"]),
            str(doc.get("src_mac", "")),
            str(doc.get("dst_mac", "")),
        )


@dataclass(frozen=True)
class Resolution:
    """How TO was resolved inside FROM (its resolver 127.0.0.11): the answer or why none."""

    name: str
    server: str
    network: str
    address: str | None
    rcode: str
    record: str = ""  # the answering record as dig prints it

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Resolution:
        return cls(
            str(doc["name"]),
            str(doc["server"]),
            str(doc.get("network", "")),
            None if doc.get("address") is None else str(doc["address"]),
            str(doc.get("rcode", "")),
            str(doc.get("record", "")),
        )


@dataclass(frozen=True)
class SourceReport:
    """What the source host's agent saw: the probe it sent and every capture and VTEP record.

    `networks` are FROM's networks as "name subnet"; `dst_port` names the bridge port that
    leads to the destination when it is local (its veth) or the TAP when it is remote;
    `same_host` says the destination is a container on the same bridge."""

    host: str
    container: str
    src_ip: str
    dst_ip: str
    proto: str
    ip_id: int
    size: int
    network: str | None
    networks: list[str]
    mtu: int
    sent_at: float | None
    send_error: str | None = None
    reply_at: float | None = None
    reply: str = ""
    same_host: bool = False
    dst_container: str = ""
    bridge: str = ""
    tap: str = ""
    bridge_fdb: dict[str, str] = field(default_factory=dict)  # MAC → bridge port
    captures: list[Capture] = field(default_factory=list)
    vtep: list[dict[str, Any]] = field(default_factory=list)
    local_ip: str = ""
    lb: dict[str, Any] | None = None  # the destination is a VIP: `LbRule.to_json`
    # FROM's interface on the probe's network: eth0 for its first network, eth1 for the next…
    ifname: str = "eth0"

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> SourceReport:
        values = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        values["captures"] = [Capture.from_json(c) for c in doc.get("captures", [])]
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PeerReport:
    """Another host's part: its underlay address, and its VTEP records, or why it had none
    (`down`: its agent did not answer; `partitioned`: the lab's partition rule that cuts it
    off from the source host; `gossip`: its state in the source host's gossip, "" outside a
    swarm)."""

    host: str
    ip: str
    down: str | None = None
    vtep: list[dict[str, Any]] = field(default_factory=list)
    partitioned: str | None = None
    gossip: str = ""

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PeerReport:
        return cls(
            str(doc["host"]),
            str(doc.get("ip", "")),
            None if doc.get("down") is None else str(doc["down"]),
            list(doc.get("vtep", [])),
            None if doc.get("partitioned") is None else str(doc["partitioned"]),
            str(doc.get("gossip", "")),
        )


@dataclass(frozen=True)
class Hop:
    """One line of the trace: where (host and stage), what it decided, when (epoch seconds)."""

    host: str
    stage: str
    where: str
    decision: str
    t: float | None = None


@dataclass(frozen=True)
class Stop:
    """Where the probe stopped and why: `where` is one of STAGES."""

    host: str
    where: str
    why: str


@dataclass(frozen=True)
class Trace:
    """The answer: hops in path order, whether the destination answered, the stop, and
    what the answer was (`outcome`: answered, reset by the destination, rejected by a rule)."""

    hops: list[Hop]
    reached: bool
    stop: Stop | None
    resolution: Resolution | None = None
    outcome: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "hops": [asdict(h) for h in self.hops],
            "reached": self.reached,
            "outcome": self.outcome,
            "stop": None if self.stop is None else asdict(self.stop),
            "resolution": None if self.resolution is None else asdict(self.resolution),
        }
