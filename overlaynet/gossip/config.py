"""Gossip timings and sizes: memberlist's LAN profile as the anchor, and the lab's faster one."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

log = logging.getLogger(__name__)

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


# A lab on one machine pays every host's probes from the same two cores: each probe is three
# wake-ups of a trio process (send the ping, take the ack; the target takes the ping), about
# 1 ms of CPU together on this machine, and a lab of N hosts at interval T makes N / T of them
# a second (issue 15: 100 idle hosts at the lab's 0.4 s were 250 probes/s). Past these sizes
# the lab probes less often; detection slows with it (`detection_estimate`, printed by
# `lab up`). Rows: (labs of fewer hosts than this, probe interval, probe timeout, push-pull,
# reconnect and reap intervals); the last row takes every larger lab.
LAB_TIERS: tuple[tuple[int, float, float, float, float, float], ...] = (
    # Small labs: the lab profile as it is (tests that need fast detection use these).
    (20, 0.4, 0.2, 15.0, 10.0, 5.0),
    # memberlist's LAN probe timings (ProbeInterval 1 s, ProbeTimeout 500 ms).
    (64, 1.0, 0.5, 30.0, 30.0, 30.0),
    # 2 s keeps the replay window (8 probe periods, replay.py) at 16 s, under the 20 s of the
    # shortest replay issue 18 captured.
    (1 << 30, 2.0, 0.5, 30.0, 30.0, 30.0),
)

# Set by `lab up` in its agents' environment: how many hosts the lab has (lab/lifecycle.py).
LAB_HOSTS_ENV = "OVERLAYNET_LAB_HOSTS"


def lab_config(hosts: int) -> SwimConfig:
    """The lab profile for a lab of `hosts` hosts: LAB_CONFIG below the first tier's size,
    slower probes and syncs past it (LAB_TIERS)."""
    for below, probe, timeout, push_pull, reconnect, reap in LAB_TIERS:
        if hosts < below:
            return LAB_CONFIG.with_changes(
                probe_interval=probe,
                probe_timeout=timeout,
                push_pull_interval=push_pull,
                reconnect_interval=reconnect,
                reap_interval=reap,
            )
    raise AssertionError("the last tier takes every size")


def config_from_env(environ: Mapping[str, str] = os.environ) -> SwimConfig:
    """The profile for this process: `lab_config` of the lab's size when `lab up` said it
    (LAB_HOSTS_ENV), LAB_CONFIG otherwise. A value that is no positive count is logged and
    ignored (the lab profile is the safe side: faster detection, more CPU)."""
    raw = environ.get(LAB_HOSTS_ENV)
    if raw is None:
        return LAB_CONFIG
    try:
        hosts = int(raw)
    except ValueError:
        hosts = 0
    if hosts < 1:
        log.warning(
            "%s=%r is not a host count: gossip uses the small-lab profile", LAB_HOSTS_ENV, raw
        )
        return LAB_CONFIG
    return lab_config(hosts)


def detection_estimate(config: SwimConfig, n: int) -> float:
    """Seconds from a host's crash to its Dead verdict, typically: the next probe of it (at
    most one interval), its timeout, and the suspicion timeout once the other members'
    confirmations have shrunk it to its low end."""
    low, _ = suspicion_timeouts(config, n)
    return config.probe_interval + config.probe_timeout + low


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
