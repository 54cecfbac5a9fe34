"""The one-machine lab: emulated hosts as namespaces on an underlay bridge of the lab's own.

    onet-<lab>-ul      the underlay: bridge `br0`, one port per host (named after the host)
    onet-<lab>-nodeN   a host: `lo`, `eth0` 192.168.0.(10+N)/24 on the underlay (a /23 past
                       244 hosts), one agent under its supervisor, both forks of one zygote
    onet-<lab>-nodeN-… that host's containers (made by its agent)

Nothing touches the root namespace's links, addresses or routes, and the lab hosts have no
route out: no lab traffic can leave the machine. Cleanup is by the lab's namespace prefix, so it
also works after a crash or a half-finished `up`.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from overlaynet import api
from overlaynet.gossip.config import LAB_CONFIG, LAB_HOSTS_ENV, detection_estimate, lab_config
from overlaynet.host import links, netns
from overlaynet.lab import hosttune, zygote
from overlaynet.lab.progress import Progress
from overlaynet.names import NAMESPACE_PREFIX, check_lab_name, lab_namespace, lab_of_namespace
from overlaynet.paths import HostPaths, lab_dir, make_private_dir, run_root, write_private

UNDERLAY = "ul"
UNDERLAY_BRIDGE = "br0"
# The tutorial's hosts sit on 192.168.0.0/24; host N gets .10+N.
UNDERLAY_PREFIX = "192.168.0."
UNDERLAY_PREFIXLEN = 24
FIRST_HOST_OCTET = 11
# A lab larger than that /24 holds from .11 (244 hosts) is on a /23 instead: host N is still
# 192.168.0.0 + 10 + N, up to 192.168.1.254 (500 hosts).
UNDERLAY_BASE = IPv4Address(f"{UNDERLAY_PREFIX}0")
WIDE_PREFIXLEN = 23
HOSTS_IN_NARROW = 254 - FIRST_HOST_OCTET + 1
# The largest lab measured (benchmarks/lab_scale.py, issue 15's 250 hosts).
MAX_HOSTS = 250
# An agent restores its state before it answers; a busy 2-core machine can take a while.
AGENT_READY_TIMEOUT = 30.0
# A supervisor notices its agent's end at once (it waits on it); this is a generous bound.
SUPERVISOR_EXIT_WAIT = 1.0
# The fork server's imports (~0.45 s of CPU) and one fork per host, on a busy machine.
ZYGOTE_TIMEOUT = 120.0
# `OVERLAYNET_LAB_SPAWN=exec` starts each supervisor and agent as an interpreter of its own, as
# before the fork server: for comparison (benchmarks/lab_scale.py --spawn exec), and a way out.
SPAWN_ENV = "OVERLAYNET_LAB_SPAWN"
# How long a stopped agent may take to shut down before SIGKILL (it removes nothing itself).
STOP_WAIT = 5.0


class LabError(RuntimeError):
    """A lab request that cannot be done; the message says what to do."""


@dataclass(frozen=True)
class LabHost:
    name: str
    ip: str

    @staticmethod
    def numbered(n: int) -> LabHost:
        return LabHost(f"node{n}", str(UNDERLAY_BASE + FIRST_HOST_OCTET + n - 1))


def underlay_prefixlen(hosts: int) -> int:
    """The underlay's prefix length for a lab of `hosts` hosts."""
    return UNDERLAY_PREFIXLEN if hosts <= HOSTS_IN_NARROW else WIDE_PREFIXLEN


def lab_file(lab: str) -> Path:
    return lab_dir(lab) / "lab.json"


def owner_pid(lab: str) -> int | None:
    try:
        return int(json.loads(lab_file(lab).read_text())["owner_pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_hosts(lab: str) -> list[LabHost]:
    try:
        doc = json.loads(lab_file(lab).read_text())
    except (OSError, ValueError):
        return []
    return [LabHost(h["name"], h["ip"]) for h in doc.get("hosts", [])]


def _write_lab_file(lab: str, hosts: list[LabHost]) -> None:
    make_private_dir(lab_dir(lab))
    # The process that built the lab: tests use it to tell a lab in use from one left behind.
    doc = {
        "name": lab,
        "hosts": [{"name": h.name, "ip": h.ip} for h in hosts],
        "owner_pid": os.getpid(),
    }
    write_private(lab_file(lab), json.dumps(doc, indent=2))


def up(
    lab: str,
    hosts: int = 3,
    progress: bool = False,
    swarm: bool = False,
    swarm_later: bool = False,
) -> list[LabHost]:
    """Build the lab (or the parts of it that are missing) and start every agent.

    `swarm=True` also makes node1 a swarm manager and joins every other host as a worker.
    `swarm_later=True`: the caller forms a swarm itself later (the demo, `lab_scale.py
    --swarm`); the agents' fork server preloads what swarm members use all the same, so that
    they share one copy of it instead of each loading its own when it joins.
    """
    check_lab_name(lab)
    if not 1 <= hosts <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}")
    existing = read_hosts(lab)
    wanted = [LabHost.numbered(n) for n in range(1, hosts + 1)]
    if existing and len(existing) != hosts:
        raise LabError(
            f"lab {lab} already has {len(existing)} hosts: run `overlaynet lab down --name {lab}` "
            "first to rebuild it with another size"
        )
    _write_lab_file(lab, wanted)
    ul = lab_namespace(lab, UNDERLAY)
    netns.create(ul)
    _ensure_underlay_bridge(ul)
    shown = Progress(progress)
    _ensure_hosts(lab, ul, wanted, shown)
    for line in hosttune.ensure_neighbour_room(hosts):
        # A change outside the lab's namespaces: always said (stderr keeps stdout's table clean).
        print(f"neighbour table sized for {hosts} hosts: {line}", file=sys.stderr, flush=True)
    untuned = hosttune.tune_hosts([lab_namespace(lab, h.name) for h in wanted])
    if untuned:
        shown.note(f"{len(untuned)} hosts' underlay ports left untuned (slower)")
    # A size set by the caller picks the agents' profile instead (`_agent_env`).
    note = gossip_note(hosts) if LAB_HOSTS_ENV not in os.environ else None
    if note is not None:
        # Detection is slower than a small lab's: always said, as the neighbour table is.
        print(note, file=sys.stderr, flush=True)
    start_agents(lab, [host.name for host in wanted], swarm=swarm or swarm_later)
    for n, host in enumerate(wanted, 1):
        wait_for_agent(lab, host.name)
        shown.step("agents ready", n, len(wanted), f"{host.name}  {host.ip}  agent ready")
    if swarm:
        form_swarm(lab, wanted)
    return wanted


def gossip_note(hosts: int) -> str | None:
    """What a lab of `hosts` hosts trades for idle CPU: its gossip probes less often than a
    small lab's, so a crashed host is declared dead later (gossip/config.py LAB_TIERS). None
    when the lab keeps the small-lab profile."""
    config = lab_config(hosts)
    if config.probe_interval == LAB_CONFIG.probe_interval:
        return None
    small = detection_estimate(LAB_CONFIG, hosts)
    return (
        f"gossip of {hosts} hosts probes every {config.probe_interval:g} s (a small lab's: "
        f"{LAB_CONFIG.probe_interval:g} s) to keep idle hosts idle: a crashed host is declared "
        f"dead after about {detection_estimate(config, hosts):.0f} s (about {small:.0f} s at "
        "the small lab's rate)"
    )


def _agent_env(lab: str) -> dict[str, str]:
    """The environment of a lab's supervisors and agents: this one plus the lab's size, from
    which their gossip takes its profile (gossip/config.py `config_from_env`). A size already
    in this environment wins: benchmarks compare the profiles on one lab that way."""
    env = dict(os.environ)
    hosts = read_hosts(lab)
    if hosts:
        env.setdefault(LAB_HOSTS_ENV, str(len(hosts)))
    return env


def form_swarm(lab: str, hosts: list[LabHost]) -> None:
    """node1 inits the swarm, every other host joins it as a worker (idempotent)."""
    first = api.Client(HostPaths(hosts[0].name, lab).socket)
    if not first.call("info").get("Swarm"):
        first.call("swarm.init", advertise_addr="eth0")
    token = first.call("swarm.join_token", role="worker")["token"]
    for host in hosts[1:]:
        client = api.Client(HostPaths(host.name, lab).socket)
        if not client.call("info").get("Swarm"):
            client.call("swarm.join", token=token, remote=f"{hosts[0].ip}:2377")


def _ensure_underlay_bridge(ul: str) -> None:
    with links.ipr(ul) as sock:
        if links.index_of(sock, UNDERLAY_BRIDGE) is None:
            sock.link("add", ifname=UNDERLAY_BRIDGE, kind="bridge")
        sock.link("set", index=links.index_of(sock, UNDERLAY_BRIDGE), state="up")


def _ensure_hosts(lab: str, ul: str, hosts: list[LabHost], shown: Progress) -> None:
    """Each host's namespace, underlay port and address, where missing. One netlink socket in
    the underlay serves every host, and each veth is made by one request: enslaved to the
    bridge, up, its peer already `eth0` inside the host."""
    prefixlen = underlay_prefixlen(len(hosts))
    with links.ipr(ul) as underlay:
        bridge = links.index_of(underlay, UNDERLAY_BRIDGE)
        ports = {str(link.get("ifname")): int(link["index"]) for link in underlay.get_links()}
        for n, host in enumerate(hosts, 1):
            shown.step("hosts set up", n - 1, len(hosts))
            _plug(underlay, bridge, ports, lab_namespace(lab, host.name), host.name, host.ip,
                  prefixlen)  # fmt: skip
    shown.step("hosts set up", len(hosts), len(hosts))


def _plug(
    underlay: Any, bridge: int | None, ports: dict[str, int], ns: str, port: str, ip: str,
    prefixlen: int,
) -> None:  # fmt: skip
    """Namespace `ns` (made if missing) on the underlay bridge: port `port` there, `eth0` with
    `ip` inside; nothing is done when it already has its `eth0`."""
    netns.create(ns)
    with links.ipr(ns) as inside:
        if links.index_of(inside, "eth0") is not None:
            return
        # A port left by a half-finished `up` (its peer goes with it).
        if port in ports:
            underlay.link("del", index=ports[port])
        ns_fd = os.open(netns.path(ns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            underlay.link(
                "add",
                ifname=port,
                kind="veth",
                master=bridge,
                state="up",
                peer={"ifname": "eth0", "net_ns_fd": ns_fd},
            )
        finally:
            os.close(ns_fd)
        eth0 = links.index_of(inside, "eth0")
        inside.addr("add", index=eth0, address=ip, prefixlen=prefixlen)
        inside.link("set", index=eth0, state="up")


#: The client's place on the underlay: just below the hosts (.11 up), so no lab size reaches it.
CLIENT_IP = UNDERLAY_PREFIX + str(FIRST_HOST_OCTET - 1)
CLIENT = "client"


def add_client(lab: str) -> str:
    """A namespace on the lab's underlay that is not a host (`onet-<lab>-client`, 192.168.0.10,
    no agent): where requests to published ports come from, as from outside the swarm. Made
    once (idempotent); `lab down` removes it with the rest. Returns its namespace name."""
    hosts = read_hosts(lab)
    if not hosts:
        raise LabError(f"lab {lab} is not up: `overlaynet lab up --name {lab}` first")
    ul = lab_namespace(lab, UNDERLAY)
    ns = lab_namespace(lab, CLIENT)
    with links.ipr(ul) as underlay:
        bridge = links.index_of(underlay, UNDERLAY_BRIDGE)
        ports = {str(link.get("ifname")): int(link["index"]) for link in underlay.get_links()}
        _plug(underlay, bridge, ports, ns, CLIENT, CLIENT_IP, underlay_prefixlen(len(hosts)))
    return ns


def agent_pid(lab: str, host: str) -> int | None:
    return _live_pid(HostPaths(host, lab).pid_file)


def supervisor_pid(lab: str, host: str) -> int | None:
    return _live_pid(_supervisor_file(lab, host))


def _supervisor_file(lab: str, host: str) -> Path:
    return zygote.supervise_pid_file(lab, host)


def _live_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def agent_answers(lab: str, host: str) -> bool:
    try:
        api.Client(HostPaths(host, lab).socket, timeout=2).call("ping")
    except (OSError, api.AgentDown, ValueError):
        return False
    return True


def start_agent(lab: str, host: str) -> bool:
    """Start the host's agent inside its namespace, under its supervisor (which restarts it
    if it dies on its own), unless one already answers or its supervisor is restarting it.
    Whether it was started."""
    return bool(start_agents(lab, [host]))


def start_agents(lab: str, hosts: list[str], swarm: bool = False) -> list[str]:
    """`start_agent` for many hosts at once: one fork server (`overlaynet.lab.zygote`) imports
    the agent once and forks every host's supervisor, which forks its agent. Returns the hosts
    whose agents were started; `wait_for_agent` tells when each answers.

    `swarm`: the hosts are about to form a swarm. Then, or when one of them already is a swarm
    member, the zygote also preloads what swarm members use (`zygote.SWARM_MODULES`)."""
    todo = [h for h in hosts if not agent_answers(lab, h) and not _supervisor_restarting(lab, h)]
    for host in todo:
        make_private_dir(HostPaths(host, lab).state_dir)
    if not todo:
        return []
    if os.environ.get(SPAWN_ENV) == "exec":
        for host in todo:
            _exec_supervisor(lab, host)
        return todo
    argv = [sys.executable, "-m", "overlaynet.lab.zygote", lab]
    if swarm or any(in_swarm(lab, h) for h in todo):
        argv.insert(3, zygote.SWARM_OPTION)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd="/",
        env=_agent_env(lab),
    )
    assert proc.stdin is not None and proc.stdout is not None
    # A few bytes per host: far below a pipe's buffer, so this write never waits on the reader.
    # A zygote that died at once is told by what it said (read below), not by this write.
    with contextlib.suppress(BrokenPipeError), proc.stdin:
        proc.stdin.write("".join(f"{h}\n" for h in todo).encode())
    with proc.stdout:
        said = _read_to_eof(proc.stdout.fileno(), ZYGOTE_TIMEOUT).decode(errors="replace")
    lines = said.strip().splitlines()
    if not lines or lines[-1] != zygote.READY:
        raise LabError(f"the agents of lab {lab} could not be started:\n" + "\n".join(lines[-5:]))
    return todo


def in_swarm(lab: str, host: str) -> bool:
    """Whether the host's agent has joined a swarm: it keeps `swarm.json` in its state
    directory (agent/swarm.py) and rejoins from it when it starts."""
    return (HostPaths(host, lab).state_dir / "swarm.json").exists()


def _read_to_eof(fd: int, timeout: float) -> bytes:
    """What the zygote writes until it closes its stdout, at most `timeout` s."""
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
    chunks.append(f"(no answer within {timeout:.0f} s)".encode())
    return b"".join(chunks)


def _exec_supervisor(lab: str, host: str) -> subprocess.Popen[bytes]:
    """The supervisor and agent as interpreters of their own (`OVERLAYNET_LAB_SPAWN=exec`)."""
    paths = HostPaths(host, lab)
    ns = paths.netns
    assert ns is not None
    argv = ["nsenter", f"--net={netns.path(ns)}", "--"]
    argv += [sys.executable, "-m", "overlaynet.lab.supervise", str(_supervisor_file(lab, host))]
    argv += ["--", sys.executable, "-m", "overlaynet.agent", *zygote.agent_argv(lab, host)]
    with open(paths.state_dir / "agent.out", "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            start_new_session=True,
            cwd="/",
            env=_agent_env(lab),
        )


def wait_for_agent(
    lab: str,
    host: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = AGENT_READY_TIMEOUT,
) -> None:
    """Wait until the host's agent answers. `proc`: an agent started by the caller (not under a
    supervisor); its end is a failure. A supervised agent has failed when its supervisor is
    gone (it ends when its agent stops for good) and no agent runs."""
    deadline = time.monotonic() + timeout
    supervised = False
    while time.monotonic() < deadline:
        if agent_answers(lab, host):
            return
        if proc is not None and proc.poll() is not None:
            break
        if proc is None:
            alive = supervisor_pid(lab, host) is not None or agent_pid(lab, host) is not None
            if supervised and not alive:
                break
            supervised = supervised or alive
        time.sleep(0.1)
    out = HostPaths(host, lab).state_dir / "agent.out"
    tail = out.read_text(errors="replace").strip().splitlines()[-5:] if out.exists() else []
    raise LabError(
        f"the agent of {host} did not come up (see {out}); its last output:\n" + "\n".join(tail)
    )


def stop_agent(lab: str, host: str, sig: signal.Signals = signal.SIGTERM) -> None:
    """Signal the host's agent: SIGTERM stops it, SIGKILL crashes it on purpose; either way its
    supervisor does not restart it (see `overlaynet.lab.supervise`)."""
    pid = agent_pid(lab, host)
    if pid is None:
        _stop_supervisor(lab, host)
        return
    os.kill(pid, sig)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def _stop_all(hosts: list[str], lab: str) -> None:
    """Stop every host's agent and supervisor at once: each is signalled before any is waited
    for, so a lab of 100 hosts stops in one agent's shut-down time, not a hundred in a row."""
    files = [HostPaths(h, lab).pid_file for h in hosts] + [_supervisor_file(lab, h) for h in hosts]
    pids = [pid for f in files if (pid := _live_pid(f)) is not None]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_WAIT
    while pids and time.monotonic() < deadline:
        pids = [pid for pid in pids if _running(pid)]
        if pids:
            time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    """Alive and not a zombie: a supervisor started by a test is the test's child, and stays a
    zombie until the test reaps it, though it ended long ago."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _supervisor_restarting(lab: str, host: str) -> bool:
    """Whether the host's supervisor lives on: a supervisor whose agent was just stopped or
    killed exits within moments, one that outlives this wait is restarting a failed agent."""
    deadline = time.monotonic() + SUPERVISOR_EXIT_WAIT
    while supervisor_pid(lab, host) is not None:
        if time.monotonic() >= deadline:
            return True
        time.sleep(0.05)
    return False


def _stop_supervisor(lab: str, host: str) -> None:
    """A supervisor waiting out a back-off has no agent to signal: stop it directly."""
    pid = supervisor_pid(lab, host)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _live_pid(_supervisor_file(lab, host)) is not None:
        time.sleep(0.05)


def namespaces_of(lab: str) -> list[str]:
    return [ns for ns in netns.list_names(NAMESPACE_PREFIX) if lab_of_namespace(ns) == lab]


def down(lab: str) -> int:
    """Stop the lab's agents and remove every namespace and link it has; returns how many."""
    check_lab_name(lab)
    _stop_all([h.name for h in read_hosts(lab)], lab)
    spaces = namespaces_of(lab)
    # Containers first (their veths die with them), then hosts, the underlay last.
    order = sorted(spaces, key=lambda ns: (-ns.count("-"), ns))
    for ns in order:
        netns.remove(ns)
    shutil.rmtree(lab_dir(lab), ignore_errors=True)
    shutil.rmtree(run_root() / lab, ignore_errors=True)
    return len(spaces)


def all_labs() -> list[str]:
    names = {lab_of_namespace(ns) for ns in netns.list_names(NAMESPACE_PREFIX)}
    labs_root = lab_dir("x").parent
    if labs_root.is_dir():
        names |= {p.name for p in labs_root.iterdir() if p.is_dir()}
    return sorted(n for n in names if n)


@dataclass(frozen=True)
class HostStatus:
    lab: str
    host: str
    ip: str
    pid: int | None
    healthy: bool


def status(lab: str) -> list[HostStatus]:
    return [
        HostStatus(lab, h.name, h.ip, agent_pid(lab, h.name), agent_answers(lab, h.name))
        for h in read_hosts(lab)
    ]
