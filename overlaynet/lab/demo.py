"""`overlaynet lab demo`: Docker's networking tutorial typed into overlaynet, on a fresh lab.

Each step prints the command as a user would type it, then its output, and says what the
tutorial expects; after each part it shows what was built under the hood. A step whose outcome
differs from the tutorial's is reported, and the demo exits non-zero.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass

from overlaynet import lab as labmod

RULE = "─" * 78


@dataclass
class Walkthrough:
    lab: str
    failures: int = 0

    def say(self, text: str) -> None:
        print(f"\n{RULE}\n{text}\n{RULE}", flush=True)

    def note(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def run(self, host: str, *args: str, expect_ok: bool = True, quiet: bool = False) -> str:
        """Type `overlaynet -H host ARGS` and show what it prints."""
        shown = " ".join(_quote(a) for a in args)
        print(f"\n$ overlaynet -H {host} {shown}", flush=True)
        argv = [sys.executable, "-m", "overlaynet", "--lab", self.lab, "-H", host, *args]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        if not quiet:
            sys.stdout.write(out.stdout)
            sys.stdout.write(out.stderr)
        ok = out.returncode == 0
        if ok != expect_ok:
            self.failures += 1
            want = "succeed" if expect_ok else "fail"
            print(f"!! the tutorial expects this to {want}; exit status {out.returncode}")
        elif not expect_ok:
            print(f"(fails, as the tutorial says: exit status {out.returncode})")
        return out.stdout

    def fail(self, why: str) -> None:
        self.failures += 1
        print(f"!! {why}")

    def start_capture(self) -> subprocess.Popen[str]:
        """Capture the next few VXLAN datagrams on the underlay while a step runs."""
        argv = [sys.executable, "-m", "overlaynet", "--lab", self.lab, "lab", "capture"]
        argv += ["-c", "4", "--seconds", "15"]
        print("\n$ overlaynet lab capture -c 4 &", flush=True)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)  # tcpdump needs a moment before it sees packets
        return proc

    def show_capture(self, proc: subprocess.Popen[str]) -> None:
        out, _ = proc.communicate(timeout=60)
        self.note("the underlay capture, decoded layer by layer:")
        sys.stdout.write(out)
        if "VXLAN" not in out:
            self.fail("no VXLAN datagram was seen on the underlay")

    def under_the_hood(self, host: str) -> None:
        self.note(f"under the hood on {host}: links and their bridge, addresses, routes")
        self.run(host, "host", "show")


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}$*") else arg


def _default_bridge(w: Walkthrough) -> None:
    w.say("Part 1: the default bridge network (no name resolution)")
    w.note("IMAGE is only a label: commands run from the host's filesystem (sh, not alpine's ash)")
    w.run("node1", "network", "ls")
    w.run("node1", "run", "-dit", "--name", "alpine1", "alpine", "sh")
    w.run("node1", "run", "-dit", "--name", "alpine2", "alpine", "sh")
    w.run("node1", "container", "ls")
    w.run("node1", "network", "inspect", "bridge")
    w.run("node1", "exec", "alpine1", "ip", "addr", "show", "eth0")
    ip2 = w.run(
        "node1", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "alpine2", quiet=True
    ).strip()
    w.note(f"alpine2 has {ip2}: alpine1 reaches it by address…")
    w.run("node1", "exec", "alpine1", "ping", "-c", "2", "-W", "2", ip2)
    w.note("…but not by name: the default bridge has no name resolution")
    w.run("node1", "exec", "alpine1", "ping", "-c", "2", "-W", "2", "alpine2", expect_ok=False)
    w.under_the_hood("node1")
    w.run("node1", "container", "stop", "alpine1", "alpine2")
    w.run("node1", "container", "rm", "alpine1", "alpine2")


def _user_bridge(w: Walkthrough) -> None:
    w.say("Part 2: a user-defined bridge network")
    w.run("node1", "network", "create", "--driver", "bridge", "alpine-net")
    w.run("node1", "network", "ls")
    for name, net in (("alpine1", "alpine-net"), ("alpine2", "alpine-net"), ("alpine3", None)):
        extra = ["--network", net] if net else []
        w.run("node1", "run", "-dit", "--name", name, *extra, "alpine", "sh")
    w.run("node1", "run", "-dit", "--name", "alpine4", "--network", "alpine-net", "alpine", "sh")
    w.run("node1", "network", "connect", "bridge", "alpine4")
    w.run("node1", "container", "ls")
    w.run("node1", "network", "inspect", "alpine-net", "-f", "{{json .Containers}}")
    addr = {
        name: w.run(
            "node1",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            name,
            quiet=True,
        ).split()
        for name in ("alpine1", "alpine2", "alpine3", "alpine4")
    }
    w.note("on alpine-net, alpine1 reaches alpine2 and alpine4 by name (the embedded DNS):")
    for peer in ("alpine2", "alpine4"):
        w.run("node1", "exec", "alpine1", "ping", "-c", "2", "-W", "2", peer)
    w.note("alpine3 is only on the default bridge: alpine1 can resolve it by neither name…")
    w.run("node1", "exec", "alpine1", "ping", "-c", "2", "-W", "1", "alpine3", expect_ok=False)
    w.note("…nor reach it by address")
    w.run(
        "node1",
        "exec",
        "alpine1",
        "ping",
        "-c",
        "2",
        "-W",
        "1",
        addr["alpine3"][0],
        expect_ok=False,
    )
    w.note("alpine4 is on both networks: alpine1 by name, alpine3 by address (default bridge)")
    w.run("node1", "exec", "alpine4", "ping", "-c", "2", "-W", "2", "alpine1")
    w.run("node1", "exec", "alpine4", "ping", "-c", "2", "-W", "2", addr["alpine3"][0])
    w.note("what the embedded DNS at 127.0.0.11 answers inside alpine1")
    w.run("node1", "exec", "alpine1", "cat", "/etc/resolv.conf")
    w.run("node1", "exec", "alpine1", "dig", "+short", "alpine2")
    w.run("node1", "exec", "alpine1", "dig", "+short", "-x", addr["alpine2"][0])
    w.under_the_hood("node1")
    w.note("alpine-net lives on node1 only: node2 has its own networks")
    w.run("node2", "network", "ls")
    w.run("node1", "container", "rm", "--force", "alpine1", "alpine2", "alpine3", "alpine4")
    w.run("node1", "network", "rm", "alpine-net")


def _overlay(w: Walkthrough) -> None:
    w.say("Part 3: an overlay network across hosts (swarm), for standalone containers")
    init = w.run("node1", "swarm", "init", "--advertise-addr", "eth0")
    match = re.search(r"--token (\S+) (\S+)", init)
    token, manager = match.groups() if match else ("", "")
    w.run("node2", "swarm", "join", "--token", token, manager)
    w.run("node3", "swarm", "join", "--token", token, manager)
    w.run("node1", "node", "ls")
    w.run("node1", "network", "create", "--driver=overlay", "--attachable", "test-net")
    w.run("node1", "run", "-dit", "--name", "alpine1", "--network", "test-net", "alpine", "sh")
    w.note("node2 has no container on test-net yet, so test-net has not reached it:")
    before = w.run("node2", "network", "ls")
    if " test-net " in before:
        w.fail("test-net is on node2 before any container there uses it")
    w.run("node2", "run", "-dit", "--name", "alpine2", "--network", "test-net", "alpine", "sh")
    after = w.run("node2", "network", "ls")
    if " test-net " not in after:
        w.fail("test-net did not reach node2 with its first container")
    w.note("alpine1 on node1 reaches alpine2 on node2 by name, through VXLAN on the underlay")
    capture = w.start_capture()
    w.run("node1", "exec", "alpine1", "ping", "-c", "2", "-W", "2", "alpine2")
    w.show_capture(capture)
    w.note("under the hood on node1: gossip members, the endpoint table, the VTEP's FDB and ARP")
    w.run("node1", "gossip", "members")
    w.run("node1", "gossip", "endpoints", "test-net")
    w.run("node1", "network", "vtep", "test-net")
    w.run("node1", "exec", "alpine1", "dig", "+short", "alpine2")
    w.run("node2", "container", "rm", "--force", "alpine2")
    w.run("node1", "container", "rm", "--force", "alpine1")
    w.run("node1", "network", "rm", "test-net")
    for host in ("node3", "node2"):
        w.run(host, "swarm", "leave")
    w.run("node1", "swarm", "leave", "--force")


def run(lab: str, keep: bool = False, hosts: int = 3) -> int:
    print(f"Building lab {lab!r} with {hosts} hosts…", flush=True)
    try:
        labmod.up(lab, hosts, progress=True)
    except (labmod.LabError, ValueError) as e:
        print(f"cannot build the lab: {e}", file=sys.stderr)
        labmod.down(lab)
        return 1
    w = Walkthrough(lab)
    try:
        _default_bridge(w)
        _user_bridge(w)
        _overlay(w)
    finally:
        if keep:
            print(f"\nThe lab is still up: `overlaynet lab ls`; then `lab down --name {lab}`.")
        else:
            labmod.down(lab)
            print(f"\nLab {lab!r} removed.")
    if w.failures:
        print(f"{w.failures} step(s) did not behave as the tutorial says.", file=sys.stderr)
        return 1
    print("Every step behaved as the tutorial says.")
    return 0
