"""Gossip timings and sizes: memberlist's LAN profile as the anchor, and the lab's faster one."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

# memberlist's and Docker's gossip port (UDP and TCP 7946): the one home of this number.
GOSSIP_PORT = 7946

# Every datagram, after encryption, fits a 1500-byte underlay with room for headers
# (memberlist's UDPBufferSize is 1400 for the same reason).
MAX_DATAGRAM = 1400

# AES-GCM envelope: version byte, key-less nonce (12), send time (8) and tag (16); see keyring.py.
ENVELOPE_OVERHEAD = 1 + 12 + 8 + 16


@dataclass(frozen=True)
class SwimConfig:
    """All knobs of membership, dissemination and tables. Seconds throughout."""

    # memberlist DefaultLANConfig: ProbeInterval 1 s, ProbeTimeout 500 ms.
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    # memberlist IndirectChecks: members asked to ping-req a target that missed its ack.
    indirect_checks: int = 3
    # memberlist SuspicionMult 4 and SuspicionMaxTimeoutMult 6 (Lifeguard's alpha and beta).
    suspicion_mult: float = 4.0
    suspicion_max_timeout_mult: float = 6.0
    # memberlist AwarenessMaxMultiplier 8: a slow node stretches its probes up to 8x.
    awareness_max_multiplier: int = 8
    # memberlist GossipInterval 200 ms, GossipNodes 3, RetransmitMult 4.
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    retransmit_mult: int = 4
    # memberlist GossipToTheDeadTime 30 s: keep telling a dead node, so it can refute.
    gossip_to_the_dead: float = 30.0
    # memberlist PushPullInterval 30 s (scaled up past 32 nodes as memberlist does).
    push_pull_interval: float = 30.0
    # Docker networkdb retries failed nodes every 60 s (reconnectInterval) to heal partitions.
    reconnect_interval: float = 60.0
    # Forget a dead member after this long; its entries then become tombstones.
    dead_reap_time: float = 3600.0
    # Docker networkdb reapEntryInterval: tombstones live 30 min, far beyond any sync period.
    tombstone_ttl: float = 1800.0
    # How often tombstones and forgotten members are swept.
    reap_interval: float = 5.0
    # Plaintext bytes per datagram: the underlay budget minus the encryption envelope.
    packet_budget: int = MAX_DATAGRAM - ENVELOPE_OVERHEAD

    def with_changes(self, **changes: float | int) -> SwimConfig:
        return replace(self, **changes)  # type: ignore[arg-type]


# memberlist's LAN defaults: the anchor the benchmark compares against.
LAN_CONFIG = SwimConfig()

# The lab: hosts share one machine and a veth bridge (RTT well under 1 ms), so probes can be
# 2.5x as frequent and timeouts shorter; the suspicion rule stays memberlist's (SuspicionMult 4,
# so k = 2 independent confirmations): crash-to-dead lands near 4 s at N = 100.
LAB_CONFIG = SwimConfig(
    probe_interval=0.4,
    probe_timeout=0.2,
    suspicion_mult=4.0,
    gossip_interval=0.1,
    push_pull_interval=15.0,
    reconnect_interval=10.0,
)


def retransmit_limit(mult: int, n: int) -> int:
    """memberlist retransmitLimit: mult * ceil(log10(n + 1)) sends per update."""
    return mult * max(1, math.ceil(math.log10(n + 1)))


def suspicion_timeouts(config: SwimConfig, n: int) -> tuple[float, float]:
    """Lifeguard min/max suspicion timeouts for a cluster of n (memberlist suspicionTimeout)."""
    node_scale = max(1.0, math.log10(max(1, n)))
    low = config.suspicion_mult * node_scale * config.probe_interval
    return low, low * config.suspicion_max_timeout_mult


def push_pull_scale(interval: float, n: int) -> float:
    """memberlist pushPullScale: past 32 nodes, sync less often as the cluster doubles."""
    threshold = 32
    if n <= threshold:
        return interval
    return interval * (math.ceil(math.log2(n) - math.log2(threshold)) + 1)
