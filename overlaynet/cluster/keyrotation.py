"""When the swarm's gossip key rotation may take its next step: a pure decision for the leader.

memberlist rotates a keyring in three cluster-wide steps, each finished on every member before
the next begins (InstallKey, UseKey, RemoveKey); Docker rotates its gossip key the same way. A
step taken early makes a member drop the others' datagrams, miss acks, and be suspected. Here
the managers hold the stage in the cluster state (state.py: `stage_gossip_key`,
`use_staged_gossip_key`, `finish_gossip_rotation`) and every node reports the fingerprints of the
keys its gossip holds (`gossip.report`). The leader asks `decide` after each report and each
orchestration tick:

    INSTALL  every live node holds the staged key        -> USE     (it becomes the primary)
    USE      every live node seals with the new primary  -> RETIRE  (the old keys go)
    IDLE     another rotation was queued meanwhile       -> START

A node gossip has declared Down is not waited for (it is not gossiping; when it comes back it
reads the keyring from the managers like any node). Time is an argument: a condition must have
held for SETTLE seconds before the step, so datagrams sealed just before a node switched are
received before the key that opens them goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from overlaynet.gossip.keyring import fingerprint

# How long every live node must have reported the stage before the next step: a few of the
# lab profile's probe rounds (0.4 s each) and well over a LAN's delivery time, so nothing
# sealed under the previous ring is still in flight when the next ring refuses it.
SETTLE = 2.0


class KeyStage(StrEnum):
    IDLE = "idle"
    INSTALL = "install"
    USE = "use"


class KeyStep(StrEnum):
    WAIT = "wait"
    USE = "use"  # use_staged_gossip_key
    RETIRE = "retire"  # finish_gossip_rotation
    START = "start"  # stage_gossip_key (a queued rotation)


@dataclass(frozen=True)
class Watch:
    """What the leader remembers between decisions (in memory only: a restarted leader waits
    SETTLE again). `target` is the fingerprint awaited; `since` when every node first had it."""

    target: str = ""
    since: float | None = None


@dataclass(frozen=True)
class Rotation:
    """The rotation as the cluster state has it (hex keys)."""

    stage: KeyStage
    primary: str
    pending: str = ""
    again: bool = False


def ready(rotation: Rotation, live: Iterable[str], reports: Mapping[str, Sequence[str]]) -> bool:
    """Whether every live node reports what the current stage waits for."""
    if rotation.stage is KeyStage.INSTALL:
        target = fingerprint(bytes.fromhex(rotation.pending))
        return all(target in reports.get(node, ()) for node in live)
    if rotation.stage is KeyStage.USE:
        target = fingerprint(bytes.fromhex(rotation.primary))
        return all(tuple(reports.get(node, ()))[:1] == (target,) for node in live)
    return True


def decide(
    rotation: Rotation,
    live: Iterable[str],
    reports: Mapping[str, Sequence[str]],
    watch: Watch,
    now: float,
) -> tuple[KeyStep, Watch]:
    """The step to take now (or WAIT) and what to remember until the next call."""
    if rotation.stage is KeyStage.IDLE:
        return (KeyStep.START if rotation.again else KeyStep.WAIT), Watch()
    key = rotation.pending if rotation.stage is KeyStage.INSTALL else rotation.primary
    target = f"{rotation.stage}:{fingerprint(bytes.fromhex(key))}"
    if not ready(rotation, live, reports):
        return KeyStep.WAIT, Watch(target)
    since = watch.since if watch.target == target and watch.since is not None else now
    if now - since < SETTLE:
        return KeyStep.WAIT, Watch(target, since)
    step = KeyStep.USE if rotation.stage is KeyStage.INSTALL else KeyStep.RETIRE
    return step, Watch()
