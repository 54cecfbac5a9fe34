"""Soak and fuzz harness: a 3-host swarm lab under hostile input, crashes and partitions.

    .venv/bin/python benchmarks/soak.py [--seed 7] [--scale 1.0]

Every phase is bounded in count (scaled by --scale) and seeded, and every packet goes to the
lab's own namespaces (the hosts' underlay addresses, 127.0.0.11 inside the lab's containers, the
agents' Unix sockets). After each phase the harness checks that every agent still answers with
the pid it had (none lost), that the containers still ping each other by name across the
overlay, and the invariant of issue 18: no IP address or MAC address twice in a network across
all hosts. It prints one table (phase, inputs tried, faults survived, agents lost, addresses
duplicated) and writes benchmarks/results/soak.json.
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import signal
import socket
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bench_args

from overlaynet import api
from overlaynet import lab as labmod
from overlaynet.host.nssocket import run_in_netns, socket_in_netns
from overlaynet.paths import HostPaths

RESULTS = Path(__file__).parent / "results"
HOSTS = ("node1", "node2", "node3")
NETWORK = "soaknet"
CONTAINERS = {"node1": "s1", "node2": "s2", "node3": "s3"}
# The underlay addresses of the lab hosts (lab.UNDERLAY_PREFIX + 11, 12, 13).
ADDRESSES = {h: f"{labmod.UNDERLAY_PREFIX}{11 + i}" for i, h in enumerate(HOSTS)}
VXLAN_PORT, GOSSIP_PORT, MANAGER_PORT = 4789, 7946, 2377
# Operations the API fuzz may call with random arguments: none that could leave the swarm or
# remove the harness's own objects when a random argument happens to be valid.
FUZZ_OPS = (
    "ping",
    "info",
    "network.ls",
    "network.inspect",
    "network.create",
    "network.connect",
    "network.disconnect",
    "container.ls",
    "container.inspect",
    "container.create",
    "container.top",
    "container.logs",
    "gossip.members",
    "gossip.endpoints",
    "node.ls",
    "node.inspect",
    "no.such.op",
)


@dataclass
class Phase:
    name: str
    inputs: int = 0
    faults_survived: int = 0
    agents_lost: int = 0
    duplicated: int = 0
    ping_ok: bool = True


def cli(lab: str, host: str, *args: str, check: bool = True) -> str:
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab, "-H", host, *args]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if check and out.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip()}")
    return out.stdout


def agent_pids(lab: str) -> dict[str, int | None]:
    return {s.host: (s.pid if s.healthy else None) for s in labmod.status(lab)}


def duplicated_addresses(lab: str) -> int:
    """How many IP or MAC addresses appear on more than one endpoint of one network."""
    seen: Counter[tuple[str, str]] = Counter()
    for host in HOSTS:
        ids = cli(lab, host, "ps", "--all", "--quiet").split()
        if not ids:
            continue
        for doc in json.loads(cli(lab, host, "inspect", *ids)):
            for net, ep in doc["NetworkSettings"]["Networks"].items():
                if net in ("host", "none"):
                    continue
                # Bridge networks are per host: their addresses repeat across hosts legitimately.
                scope = net if net == NETWORK else f"{host}/{net}"
                seen[(scope, "ip:" + ep["IPAddress"])] += 1
                seen[(scope, "mac:" + ep["MacAddress"])] += 1
    return sum(1 for n in seen.values() if n > 1)


def pings_by_name(lab: str) -> bool:
    argv = [sys.executable, "-m", "overlaynet", "--lab", lab, "-H", "node1", "exec", "s1"]
    out = subprocess.run(
        [*argv, "ping", "-c", "1", "-W", "2", "s2"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return out.returncode == 0


def sandbox_of(lab: str, host: str, container: str) -> str:
    doc = json.loads(cli(lab, host, "inspect", container))[0]
    return str(doc["NetworkSettings"]["SandboxKey"])


# ---- hostile inputs ---------------------------------------------------------------------


def junk(rng: random.Random, size_max: int = 1500) -> bytes:
    return rng.randbytes(rng.randrange(0, size_max))


def vxlan_like(rng: random.Random) -> bytes:
    """A VXLAN header with the I flag and a random VNI, then random 'frame' bytes."""
    return struct.pack("!BxxxI", 0x08, rng.randrange(1 << 24) << 8) + junk(rng, 1400)


def datagrams(lab: str, rng: random.Random, count: int) -> int:
    """From node3's namespace: junk and VXLAN-shaped datagrams at node1/node2's 4789 and 7946."""
    sent = 0

    def blast() -> None:
        nonlocal sent
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for i in range(count):
                target = ADDRESSES["node1" if i % 2 else "node2"]
                port = VXLAN_PORT if i % 3 else GOSSIP_PORT
                data = vxlan_like(rng) if port == VXLAN_PORT and i % 5 else junk(rng)
                try:
                    sock.sendto(data, (target, port))
                    sent += 1
                except OSError:
                    pass
                if i % 200 == 0:
                    time.sleep(0.01)  # paced: a soak, not a flood of the 2 cores

    run_in_netns(labmod_netns(lab, "node3"), blast)
    return sent


def dns_junk(lab: str, rng: random.Random, count: int) -> int:
    """Inside s1: junk datagrams at 127.0.0.11:53, then resets and garbage over TCP."""
    ns = sandbox_of(lab, "node1", "s1")
    sent = 0
    udp = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM)
    with udp:
        for _ in range(count):
            udp.sendto(junk(rng, 600), ("127.0.0.11", 53))
            sent += 1
    for i in range(max(count // 20, 1)):
        sent += tcp_abuse(ns, ("127.0.0.11", 53), rng, i)
    return sent


def tcp_abuse(ns: str, addr: tuple[str, int], rng: random.Random, i: int) -> int:
    """One hostile TCP connection: a reset mid-message, garbage, or a slow dribble."""
    try:
        sock = socket_in_netns(ns, socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return 0
    with sock:
        sock.settimeout(2)
        try:
            sock.connect(addr)
            kind = i % 3
            if kind == 0:
                sock.send(b"\x00")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif kind == 1:
                sock.sendall(junk(rng, 4000))
            else:
                for _ in range(3):
                    sock.send(rng.randbytes(1))
                    time.sleep(0.05)
        except OSError:
            pass
    return 1


def tcp_ports(lab: str, rng: random.Random, count: int) -> int:
    """From node3: resets, garbage and slow senders at node1's 7946 and 2377."""
    ns = labmod_netns(lab, "node3")
    done = 0
    for i in range(count):
        port = GOSSIP_PORT if i % 2 else MANAGER_PORT
        done += tcp_abuse(ns, (ADDRESSES["node1"], port), rng, i)
    return done


def api_fuzz(lab: str, rng: random.Random, count: int) -> int:
    """Random requests (random ops from FUZZ_OPS, random JSON arguments, raw garbage lines)
    at node1's API socket; every one must get an answer line."""
    path = str(HostPaths("node1", lab).socket)

    def value(depth: int = 0) -> Any:
        kind = rng.randrange(8 if depth < 3 else 5)
        if kind == 0:
            return rng.choice([True, False, None])
        if kind == 1:
            return rng.randrange(-(10**12), 10**12)
        if kind == 2:
            return rng.random() * 1e6
        if kind in (3, 4):
            return "".join(rng.choice("abc.-_/:019 é\x00") for _ in range(rng.randrange(12)))
        if kind == 5:
            return [value(depth + 1) for _ in range(rng.randrange(4))]
        keys = ["name", "network", "container", "image", "cmd", "force", "timeout", "ip", "all"]
        return {rng.choice(keys): value(depth + 1) for _ in range(rng.randrange(4))}

    answered = 0
    for i in range(count):
        if i % 10 == 9:
            line = junk(rng, 300).replace(b"\n", b" ") + b"\n"
        else:
            args = {
                k: value()
                for k in rng.sample(
                    [
                        "name",
                        "network",
                        "container",
                        "image",
                        "cmd",
                        "force",
                        "timeout",
                        "ip",
                        "all",
                    ],
                    rng.randrange(4),
                )
            }
            line = api.encode_request(rng.choice(FUZZ_OPS), args)
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(30)
            s.connect(path)
            s.sendall(line)
            if s.makefile("rb").readline().startswith(b"{"):
                answered += 1
    # Containers the fuzz created (random names) are removed; the harness's own stay.
    for cid in cli(lab, "node1", "ps", "--all", "--quiet").split():
        name = json.loads(cli(lab, "node1", "inspect", cid))[0]["Name"].lstrip("/")
        if name not in CONTAINERS.values():
            cli(lab, "node1", "rm", "-f", cid, check=False)
    return answered


def kill_loop(lab: str, rng: random.Random, count: int) -> int:
    """kill -9 node3's agent and bring it back, `count` times; its container must survive."""
    survived = 0
    for _ in range(count):
        labmod.stop_agent(lab, "node3", signal.SIGKILL)
        time.sleep(rng.uniform(0.0, 0.5))
        labmod.up(lab, len(HOSTS))
        if "s3" in cli(lab, "node3", "ps"):
            survived += 1
    return survived


def partition(lab: str, rng: random.Random, count: int) -> int:
    """Cut node2 off from node1 with nftables in node2's namespace, then heal; `count` times."""
    ns = labmod_netns(lab, "node2")
    healed = 0
    for _ in range(count):
        nft(
            ns,
            f"add table inet onetsoak; add chain inet onetsoak in {{ type filter hook input "
            f"priority 0; }}; add rule inet onetsoak in ip saddr {ADDRESSES['node1']} drop",
        )
        time.sleep(rng.uniform(2.0, 6.0))
        nft(ns, "delete table inet onetsoak")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if pings_by_name(lab):
                healed += 1
                break
            time.sleep(0.5)
    return healed


def nft(ns: str, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, "nft", script], check=True, capture_output=True)


def labmod_netns(lab: str, host: str) -> str:
    ns = HostPaths(host, lab).netns
    assert ns is not None
    return ns


# ---- the run ----------------------------------------------------------------------------


def run_phase(lab: str, name: str, fn: Callable[[], int], inputs: int) -> Phase:
    before = agent_pids(lab)
    print(f"  {name} …", flush=True)
    survived = fn()
    time.sleep(1.0)
    after = agent_pids(lab)
    killed_on_purpose = name == "kill -9 loop"
    lost = sum(
        1 for h in HOSTS if after[h] is None or (not killed_on_purpose and after[h] != before[h])
    )
    return Phase(name, inputs, survived, lost, duplicated_addresses(lab), pings_by_name(lab))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--scale", type=bench_args.positive_float, default=1.0, help="multiply every phase's count"
    )
    ns = p.parse_args()
    rng = random.Random(ns.seed)

    def n(base: int) -> int:
        return max(1, int(base * ns.scale))

    lab = "soak" + secrets.token_hex(3)
    phases: list[Phase] = []
    try:
        print(f"lab {lab}: 3 hosts in a swarm", flush=True)
        labmod.up(lab, len(HOSTS), swarm=True)
        cli(lab, "node1", "network", "create", "-d", "overlay", "--attachable", NETWORK)
        for host, cname in CONTAINERS.items():
            cli(lab, host, "run", "-d", "--name", cname, "--network", NETWORK, "alpine", "top")
        time.sleep(2)
        plan: list[tuple[str, Callable[[], int], int]] = [
            ("udp datagrams 4789/7946", lambda: datagrams(lab, rng, n(20000)), n(20000)),
            ("dns junk + tcp resets", lambda: dns_junk(lab, rng, n(2000)), n(2000) + n(100)),
            ("tcp abuse 7946/2377", lambda: tcp_ports(lab, rng, n(200)), n(200)),
            ("api fuzz", lambda: api_fuzz(lab, rng, n(500)), n(500)),
            ("kill -9 loop", lambda: kill_loop(lab, rng, n(5)), n(5)),
            ("partitions", lambda: partition(lab, rng, n(3)), n(3)),
        ]
        for name, fn, inputs in plan:
            phases.append(run_phase(lab, name, fn, inputs))
    finally:
        labmod.down(lab)
    print()
    print(f"{'phase':28} {'inputs':>8} {'survived':>9} {'agents lost':>12} {'duplicated':>11} ping")
    for ph in phases:
        print(
            f"{ph.name:28} {ph.inputs:>8} {ph.faults_survived:>9} {ph.agents_lost:>12} "
            f"{ph.duplicated:>11} {'ok' if ph.ping_ok else 'FAIL'}"
        )
    RESULTS.mkdir(exist_ok=True)
    doc = {"seed": ns.seed, "scale": ns.scale, "phases": [asdict(ph) for ph in phases]}
    (RESULTS / "soak.json").write_text(json.dumps(doc, indent=2))
    bad = any(ph.agents_lost or ph.duplicated or not ph.ping_ok for ph in phases)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
