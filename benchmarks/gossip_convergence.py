"""Gossip convergence at scale on the deterministic simulator: time for a table update to reach
every node, crash-to-dead time on every node, false positives and bytes per second per node,
for N = 10, 100, 1000 at 0 % and 10 % loss, with the lab's timings (memberlist LAN as anchor).

Bounded: each scenario runs a fixed amount of virtual time (N = 1000 a shorter false-positive
window); scenarios run in `--jobs` processes. Writes a table (Markdown + JSON) and a PNG chart
to benchmarks/results/gossip-convergence-<time>.*.

    .venv/bin/python benchmarks/gossip_convergence.py [--quick] [--jobs 2] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from overlaynet.gossip.config import LAB_CONFIG, LAN_CONFIG, SwimConfig
from overlaynet.gossip.node import GossipEvent, GossipNode
from overlaynet.gossip.sim import LinkModel, Simulator
from overlaynet.gossip.swim import MemberChange
from overlaynet.gossip.tables import EntryChange, EntryEvent
from overlaynet.wire.gossip import MemberState

# The bars at N = 100 (memberlist LAN anchors: ~1.3 s to reach 100 nodes, crash-to-dead
# ~10-11 s median; Lifeguard cut false positives more than 50x).
BAR_UPDATE_0 = 1.5
BAR_UPDATE_10 = 2.0
BAR_CRASH_TO_DEAD = 5.0
NETWORK = "bench"
TABLE = "endpoint_table"
UPDATES = 5
UPDATE_SPACING = 4.0
CRASHES = 3
CRASH_WAIT = 15.0
WARMUP = 5.0
RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Scenario:
    n: int
    loss: float
    fp_minutes: float
    profile: str = "lab"
    updates: int = UPDATES
    crashes: int = CRASHES


@dataclass(frozen=True)
class Result:
    profile: str
    n: int
    loss: float
    update_median: float
    update_max: float
    crash_to_dead_median: float
    crash_to_dead_max: float
    false_positives: int
    fp_minutes: float
    bytes_per_second_per_node: float
    wall_seconds: float


class Recorder:
    """Collects the times of the events the benchmark measures."""

    def __init__(self) -> None:
        self.entry_seen: dict[str, dict[str, float]] = {}
        self.dead_seen: dict[str, dict[str, float]] = {}

    def __call__(self, observer: str, event: GossipEvent, now: float) -> None:
        if isinstance(event, EntryEvent) and event.change == EntryChange.CREATED:
            self.entry_seen.setdefault(event.key, {}).setdefault(observer, now)
        elif isinstance(event, MemberChange) and event.new == MemberState.DEAD:
            self.dead_seen.setdefault(event.name, {}).setdefault(observer, now)


def write_probe(node: GossipNode, now: float, key: str) -> None:
    # An endpoint record is ~120 bytes of JSON (name, ip, mac, host).
    node.set_entry(TABLE, NETWORK, key, b"x" * 120, now)


def run(scenario: Scenario, seed: int) -> Result:
    started = time.monotonic()
    config: SwimConfig = LAB_CONFIG if scenario.profile == "lab" else LAN_CONFIG
    sim = Simulator(config, seed=seed, link=LinkModel(loss=scenario.loss))
    names = [f"n{i}" for i in range(scenario.n)]
    for name in names:
        sim.add_node(name)
    sim.bootstrap_converged(networks=(NETWORK,))
    sim.run_for(WARMUP)
    recorder = Recorder()
    sim.observers.append(recorder)
    rng = sim.rng

    # 1. Updates: one table write at a time, each from a random node.
    latencies = []
    for i in range(scenario.updates):
        writer = rng.choice(names)
        key = f"probe-{i}"
        written_at = sim.now
        sim.act(writer, partial(write_probe, key=key))
        sim.run_for(UPDATE_SPACING)
        seen = recorder.entry_seen.get(key, {})
        reached = len(seen) == scenario.n
        latencies.append(max(seen.values()) - written_at if reached else float("inf"))

    # 2. Quiet cluster: false positives and bytes per second per node.
    sent_before = sum(s.bytes_sent for s in sim.nodes.values())
    window_start = sim.now
    sim.run_for(scenario.fp_minutes * 60.0)
    sent = sum(s.bytes_sent for s in sim.nodes.values()) - sent_before
    rate = sent / scenario.n / (sim.now - window_start)

    # 3. Crashes, one at a time: crash-to-dead as seen by every live node.
    crashed: set[str] = set()
    samples: list[float] = []
    for _ in range(scenario.crashes):
        victim = rng.choice([n for n in names if n not in crashed])
        crashed.add(victim)
        crashed_at = sim.now
        sim.crash(victim)
        sim.run_for(CRASH_WAIT)
        seen = recorder.dead_seen.get(victim, {})
        for observer in names:
            if observer not in crashed:
                samples.append(seen.get(observer, float("inf")) - crashed_at)
    false_positives = sum(
        len(seen) for name, seen in recorder.dead_seen.items() if name not in crashed
    )
    return Result(
        profile=scenario.profile,
        n=scenario.n,
        loss=scenario.loss,
        update_median=statistics.median(latencies),
        update_max=max(latencies),
        crash_to_dead_median=statistics.median(samples),
        crash_to_dead_max=max(samples),
        false_positives=false_positives,
        fp_minutes=scenario.fp_minutes,
        bytes_per_second_per_node=rate,
        wall_seconds=time.monotonic() - started,
    )


def scenarios(quick: bool) -> list[Scenario]:
    mid = 1.0 if quick else 10.0
    # N = 1000 at 10 % loss is ~35,000 datagrams per simulated second (every false suspicion
    # and its refutation reach all 1000 nodes): a short window keeps it to a few minutes.
    out = [
        Scenario(1000, 0.1, 0.25, updates=3, crashes=1),
        Scenario(1000, 0.0, 0.5, updates=3, crashes=1),
        Scenario(100, 0.1, mid),
        Scenario(100, 0.0, mid),
        Scenario(10, 0.1, mid),
        Scenario(10, 0.0, mid),
        # The anchor: memberlist's LAN timings on the same simulator.
        Scenario(100, 0.0, 1.0, profile="lan"),
    ]
    return out


def table(results: list[Result]) -> str:
    lines = [
        "| profile | N | loss | update→all median / max (s) | crash→dead median / max (s) "
        "| false positives (window) | bytes/s/node | wall (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(results, key=lambda r: (r.profile, r.n, r.loss)):
        lines.append(
            f"| {r.profile} | {r.n} | {r.loss:.0%} | {r.update_median:.2f} / {r.update_max:.2f} "
            f"| {r.crash_to_dead_median:.2f} / {r.crash_to_dead_max:.2f} "
            f"| {r.false_positives} ({r.fp_minutes:g} min) | {r.bytes_per_second_per_node:.0f} "
            f"| {r.wall_seconds:.0f} |"
        )
    return "\n".join(lines)


def verdict(results: list[Result]) -> list[str]:
    out = []
    for r in results:
        if r.profile != "lab" or r.n != 100:
            continue
        bar = BAR_UPDATE_0 if r.loss == 0 else BAR_UPDATE_10
        out.append(
            f"N=100 loss {r.loss:.0%}: update {r.update_max:.2f} s <= {bar} s "
            f"{'PASS' if r.update_max <= bar else 'FAIL'}; crash-to-dead median "
            f"{r.crash_to_dead_median:.2f} s <= {BAR_CRASH_TO_DEAD} s "
            f"{'PASS' if r.crash_to_dead_median <= BAR_CRASH_TO_DEAD else 'FAIL'}; "
            f"false positives {r.false_positives} over {r.fp_minutes:g} min "
            f"{'PASS' if r.false_positives == 0 else 'FAIL'}"
        )
    return out


def chart(results: list[Result], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab = sorted((r for r in results if r.profile == "lab"), key=lambda r: (r.n, r.loss))
    ns = sorted({r.n for r in lab})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    panels = [
        ("update reaches every node (max of 5, s)", "update_max", BAR_UPDATE_10),
        ("crash-to-dead, median over nodes (s)", "crash_to_dead_median", BAR_CRASH_TO_DEAD),
        ("bytes per second per node", "bytes_per_second_per_node", None),
    ]
    width = 0.38
    for ax, (title, field, bar) in zip(axes, panels, strict=True):
        for offset, loss in ((-width / 2, 0.0), (width / 2, 0.1)):
            values = [
                next(getattr(r, field) for r in lab if r.n == n and r.loss == loss) for n in ns
            ]
            ax.bar([i + offset for i in range(len(ns))], values, width, label=f"loss {loss:.0%}")
        if bar is not None:
            ax.axhline(
                bar, color="red", linestyle="--", linewidth=1, label=f"bar at N=100 ({bar} s)"
            )
        lan = [r for r in results if r.profile == "lan"]
        if lan and field != "bytes_per_second_per_node":
            ax.axhline(
                getattr(lan[0], field),
                color="grey",
                linestyle=":",
                label="memberlist LAN timings, N=100",
            )
        ax.set_xticks(range(len(ns)), [f"N={n}" for n in ns])
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle("overlaynet gossip convergence (simulator, lab timings)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter false-positive windows")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only-n", type=int, help="run only scenarios with this N")
    args = parser.parse_args()
    todo = [s for s in scenarios(args.quick) if args.only_n in (None, s.n)]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run, todo, [args.seed] * len(todo)))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    base = RESULTS / f"gossip-convergence-{stamp}"
    text = table(results)
    lines = verdict(results)
    print(text)
    print("\n".join(lines))
    base.with_suffix(".md").write_text(text + "\n\n" + "\n".join(lines) + "\n")
    base.with_suffix(".json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    if {r.n for r in results if r.profile == "lab"} and len({r.loss for r in results}) == 2:
        chart(results, base.with_suffix(".png"))
    print(f"wrote {base}.md/.json/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
