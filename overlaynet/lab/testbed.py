"""A throwaway multi-host topology in network namespaces, for the data plane's own integration
tests and benchmarks (the project's lab lives in `overlaynet.lab`; this one needs nothing else).

    underlay ns <prefix>-ul: bridge ul0 ── veth ── eth0 of each host ns <prefix>-<host>
    host ns: bridge br0 ── TAP (overlaynet VTEP) or vx0 (kernel vxlan) ── veth ── container ns

Every namespace is named `<prefix>-…`, with a prefix starting `onet-`; `close()` stops the
processes started here and deletes the namespaces, also after a failure. Needs root.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

#: Test VNI: Docker numbers overlay VNIs from 4096 up (libnetwork overlay "vxlanIDStart").
DEFAULT_VNI = 4097
UNDERLAY_PREFIX = "192.168.0."
#: How long to wait for a VTEP process to say it is serving.
READY_TIMEOUT = 10.0
#: The underlay's MTU by default: an Ethernet segment's (the overlay's is then
#: overlaynet.dataplane.switching.DEFAULT_MTU, 1450).
DEFAULT_UNDERLAY_MTU = 1500
#: Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): the overlay MTU is the
#: underlay's minus this (1500 -> 1450, a jumbo 9000 -> 8950).
VXLAN_OVERHEAD = 50


@dataclass(frozen=True)
class Container:
    """A container namespace with eth0 on its host's bridge."""

    ns: str
    ip: str
    mac: str


@dataclass
class Host:
    """A lab host: underlay eth0 address and a bridge br0 for its containers."""

    name: str
    ns: str
    ip: str
    containers: list[Container] = field(default_factory=list)


def run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing text output; raise with its stderr when it fails."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr}")
    return result


class Testbed:
    """Namespaces and processes of one test or benchmark run."""

    __test__ = False  # a helper, not a pytest test class despite its name

    def __init__(
        self,
        prefix: str,
        *,
        vni: int = DEFAULT_VNI,
        mtu: int | None = None,
        underlay_mtu: int = DEFAULT_UNDERLAY_MTU,
    ) -> None:
        """`underlay_mtu`: of every underlay veth (9000: a jumbo underlay); `mtu`: of the overlay
        (TAPs, kernel vxlan devices, containers' eth0), by default the underlay's minus the
        VXLAN overhead (1450 at 1500, 8950 at 9000)."""
        if not prefix.startswith("onet-"):
            raise ValueError("namespaces the project creates are named onet-…")
        if mtu is None:
            mtu = underlay_mtu - VXLAN_OVERHEAD
        if mtu + VXLAN_OVERHEAD > underlay_mtu:
            raise ValueError(f"overlay MTU {mtu} does not fit an underlay MTU of {underlay_mtu}")
        self.prefix = f"{prefix}{secrets.token_hex(2)}"
        self.vni = vni
        self.mtu = mtu
        self.underlay_mtu = underlay_mtu
        self.hosts: dict[str, Host] = {}
        self.namespaces: list[str] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.workdir = Path(f"/tmp/{self.prefix}")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.underlay = self._netns("ul")
        self.ip(self.underlay, "link", "add", "ul0", "type", "bridge")
        self.ip(self.underlay, "link", "set", "ul0", "up")

    # -- building -----------------------------------------------------------------------------

    def _netns(self, suffix: str) -> str:
        name = f"{self.prefix}-{suffix}"
        run("ip", "netns", "add", name)
        self.namespaces.append(name)
        self.ip(name, "link", "set", "lo", "up")
        # With br_netfilter loaded (Docker-style hosts load it) every bridged frame goes through
        # iptables; nothing here filters, so skip it, for every data path alike.
        for family in ("iptables", "ip6tables", "arptables"):
            run("ip", "netns", "exec", name, "sysctl", "-qw",
                f"net.bridge.bridge-nf-call-{family}=0", check=False)  # fmt: skip
        return name

    def ip(self, ns: str, *args: str) -> None:
        """`ip -n ns …`."""
        run("ip", "-n", ns, *args)

    def add_host(self, name: str, number: int) -> Host:
        """A host ns with eth0 = 192.168.0.<number>/24 on the underlay (MTU `underlay_mtu`,
        both ends of the veth) and an empty bridge."""
        ns = self._netns(name)
        port = f"p{number}"
        self.ip(self.underlay, "link", "add", port, "mtu", str(self.underlay_mtu), "type", "veth",
                "peer", "eth0", "mtu", str(self.underlay_mtu), "netns", ns)  # fmt: skip
        self.ip(self.underlay, "link", "set", port, "master", "ul0", "up")
        host = Host(name, ns, f"{UNDERLAY_PREFIX}{number}")
        self.ip(ns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        self.ip(ns, "link", "set", "eth0", "up")
        self.ip(ns, "link", "add", "br0", "type", "bridge")
        self.ip(ns, "link", "set", "br0", "up")
        self.hosts[name] = host
        return host

    def add_container(self, host: Host, name: str, number: int) -> Container:
        """A container ns with eth0 10.0.0.<number>/24, MAC 02:42:0a:00:00:<number>, MTU as
        the overlay's, its veth peer on the host's br0."""
        ns = self._netns(name)
        mac = f"02:42:0a:00:00:{number:02x}"
        outside = f"v{name}"[:15]
        self.ip(host.ns, "link", "add", outside, "mtu", str(self.mtu), "type", "veth", "peer",
                "eth0", "netns", ns)  # fmt: skip
        self.ip(host.ns, "link", "set", outside, "master", "br0", "up")
        self.ip(ns, "link", "set", "eth0", "address", mac, "mtu", str(self.mtu), "up")
        container = Container(ns, f"10.0.0.{number}", mac)
        self.ip(ns, "addr", "add", f"{container.ip}/24", "dev", "eth0")
        host.containers.append(container)
        return container

    def kernel_vxlan(self, host: Host, peers: list[Host], *, interop: bool = True) -> None:
        """A Linux vxlan device vx0 on br0 with static FDB: all-zeros entries (flooding and
        unknown unicast) to every peer, no learning. With `interop` (talking to a userspace
        VTEP) tx checksum offload is turned off on eth0: over veth the kernel may otherwise
        send inner packets with unfinished checksums, which a userspace VTEP would hand on as
        corrupt (FASTPATH.md, "Traps"). Kernel-to-kernel references keep veth defaults."""
        vxlan = ["type", "vxlan", "id", str(self.vni), "local", host.ip, "dstport", "4789"]
        self.ip(host.ns, "link", "add", "vx0", "mtu", str(self.mtu), *vxlan, "nolearning",
                "dev", "eth0")  # fmt: skip
        self.ip(host.ns, "link", "set", "vx0", "master", "br0", "up")
        for peer in peers:
            run("ip", "netns", "exec", host.ns, "bridge", "fdb", "append",
                "00:00:00:00:00:00", "dev", "vx0", "dst", peer.ip)  # fmt: skip
        if interop:
            run("ip", "netns", "exec", host.ns, "ethtool", "-K", "eth0", "tx", "off")

    def steer_receive(self, host: Host, cpus: int) -> None:
        """RPS on `host`'s underlay port: its received datagrams are processed on the CPUs in
        the mask `cpus` (0: where they arrive). Over veth a host's receive path otherwise runs
        in the softirq of whoever sent, i.e. on the peer's CPU; a kernel VTEP host then sends
        its own TCP segments from two CPUs at once and reorders them (spurious retransmits,
        benchmarks/profiles/k2o-retransmits.md). A real host's NIC interrupts land on its own
        CPUs."""
        self.exec(host.ns, "sh", "-c", f"echo {cpus:x} > /sys/class/net/eth0/queues/rx-0/rps_cpus")

    def start_vtep(
        self,
        host: Host,
        peers: list[Host],
        *,
        extra: tuple[str, ...] = (),
        endpoints: bool = True,
        code: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Run `vtep_main` in `host` with TAP on-tap-tdp on br0, peers for flooding and, with
        `endpoints`, FDB and ARP entries for every container on the peers (without: a static-
        peer overlay, whose VTEP knows the hosts but not what lives behind them); waits until
        it is serving. `code`: a checkout of the project to run `vtep_main` from instead (a
        `git worktree` of an older commit, for before/after figures in one run)."""
        ready = self.workdir / f"{host.name}.ready"
        ready.unlink(missing_ok=True)
        cmd = [
            "ip", "netns", "exec", host.ns, sys.executable, "-m",
            "overlaynet.dataplane.vtep_main", "--local-ip", host.ip, "--vni", str(self.vni),
            "--tap", "on-tap-tdp", "--bridge", "br0", "--mtu", str(self.mtu),
            "--stats", str(self.stats_path(host)), "--ready", str(ready),
        ]  # fmt: skip
        if code is not None:
            # -P: not the working directory first on sys.path, so `code` is what runs.
            cmd[4:6] = ["env", f"PYTHONPATH={code}", sys.executable, "-P", "-m"]
        for peer in peers:
            cmd += ["--peer", peer.ip]
            for c in peer.containers if endpoints else ():
                cmd += ["--fdb", f"{c.mac}={peer.ip}", "--arp", f"{c.ip}={c.mac}"]
        # Lets a UDP_GRO socket receive coalesced buffers also when the sender's GSO batches
        # were cut up on the way, as a NIC would (FASTPATH.md, "Traps"); harmless otherwise.
        run("ip", "netns", "exec", host.ns, "ethtool", "-K", "eth0", "rx-udp-gro-forwarding",
            "on", check=False)  # fmt: skip
        process = self.popen(*cmd, *extra)
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"VTEP in {host.ns} did not start (exit {process.poll()})")
            time.sleep(0.05)
        return process

    def stats_path(self, host: Host) -> Path:
        """Where `start_vtep`'s process writes its counters (on SIGUSR1 and on exit)."""
        return self.workdir / f"{host.name}.stats.json"

    def vtep_stats(
        self, host: Host, process: subprocess.Popen[bytes], timeout: float = 30.0
    ) -> dict[str, Any]:
        """The counters of `start_vtep`'s running `process` on `host`: asked for with SIGUSR1,
        read from `stats_path` once written (`timeout` bounds a VTEP that never writes)."""
        path = self.stats_path(host)
        path.unlink(missing_ok=True)
        process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while not path.exists():
            if time.monotonic() >= deadline:
                raise TimeoutError(f"the VTEP on {host.name} did not write its counters")
            time.sleep(0.05)
        stats: dict[str, Any] = json.loads(path.read_text())
        return stats

    # -- running ------------------------------------------------------------------------------

    def exec(self, ns: str, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        """Run `cmd` inside `ns`, return its stdout."""
        return run("ip", "netns", "exec", ns, *cmd, check=check, timeout=timeout).stdout

    def popen(self, *cmd: str) -> subprocess.Popen[bytes]:
        """Start a process that `close()` will stop."""
        process = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.processes.append(process)
        return process

    @staticmethod
    def stop(process: subprocess.Popen[bytes], timeout: float = 5) -> None:
        """SIGTERM, then SIGKILL if it lingers; by pid, only processes started here."""
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)

    def close(self) -> None:
        """Stop our processes, delete our namespaces and work files; never raises."""
        for process in reversed(self.processes):
            with contextlib.suppress(Exception):
                self.stop(process)
        for ns in reversed(self.namespaces):
            run("ip", "netns", "del", ns, check=False)
        for path in self.workdir.glob("*"):
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(self.workdir)

    def __enter__(self) -> Testbed:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
