"""`overlaynet lab demo`: Docker's networking tutorial typed into overlaynet, on a fresh lab.

The commands are the tutorial's own, in its order (issue 12): `alpine top` detached on the
default bridge, where `ping alpine_host` says `bad address`; a user bridge where it answers; an
attachable overlay whose first container gets 10.0.0.2 and reaches node2 only with a container
there; then the services part (issue 13): the atsea database (dnsrr, a mode=host port) and
appserver (the routing mesh's 8080), whose page names the task that served it. Each step prints
the command as a user would type it, then its output, and says what the tutorial expects; after
each part it shows what was built under the hood (for services: tasks, VIPs and their backends,
DNS records, the published ports and the nft rules) and draws the lab as it stands, with
`lab graph`, into a picture per part (`demo-1-bridge.svg`, `demo-2-overlay.svg`,
`demo-3-services.svg`) in a folder it names. A step whose outcome differs from the tutorial's is
reported, and the demo exits non-zero.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from overlaynet import lab as labmod

RULE = "─" * 78
# How long the demo waits for a service to converge (the managers' restart delay is 5 s) before
# it says the step did not behave.
CONVERGE = 60.0
# Where the pictures go unless --out says otherwise: beside the user, not in the lab's state
# (which `lab down` removes with the lab).
DEFAULT_OUT = "overlaynet-demo"


@dataclass
class Walkthrough:
    lab: str
    out: Path = Path(DEFAULT_OUT)
    failures: int = 0
    drawn: list[str] = field(default_factory=list)  # the pictures this run wrote
    last: str = ""  # everything the last command printed, stderr included

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
        self.last = out.stdout + out.stderr
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
        print("[1] capturing the underlay in the background; its output follows the ping")
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1.0)  # tcpdump needs a moment before it sees packets
        return proc

    def show_capture(self, proc: subprocess.Popen[str]) -> None:
        out, _ = proc.communicate(timeout=60)
        self.note("the underlay capture, decoded layer by layer:")
        sys.stdout.write(out)
        if "VXLAN" not in out:
            self.fail("no VXLAN datagram was seen on the underlay")

    def clean(self, host: str) -> None:
        """The tutorial's clean-up, `container rm --force $(ps --all --quiet)`, shown as
        typed: the inner command's output becomes the outer one's arguments."""
        argv = [sys.executable, "-m", "overlaynet", "--lab", self.lab, "-H", host]
        ids = subprocess.run(
            [*argv, "ps", "--all", "--quiet"], capture_output=True, text=True, timeout=60
        ).stdout.split()
        inner = f"overlaynet -H {host} ps --all --quiet"
        print(f"\n$ overlaynet -H {host} container rm --force $({inner})")
        out = subprocess.run(
            [*argv, "container", "rm", "--force", *ids], capture_output=True, text=True, timeout=120
        )
        sys.stdout.write(out.stdout + out.stderr)
        if out.returncode != 0 or not ids:
            self.fail("the clean-up removed nothing or failed")

    def query(self, host: str, *args: str) -> str:
        """What `overlaynet -H host ARGS` prints, asked behind the scenes (not shown)."""
        argv = [sys.executable, "-m", "overlaynet", "--lab", self.lab, "-H", host, *args]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        return out.stdout if out.returncode == 0 else ""

    def settle(self, host: str, args: tuple[str, ...], check: Callable[[str], bool]) -> bool:
        """Ask behind the scenes until the output passes `check`, at most CONVERGE seconds."""
        deadline = time.monotonic() + CONVERGE
        while time.monotonic() < deadline:
            if check(self.query(host, *args)):
                return True
            time.sleep(0.5)
        return False

    def wait_for(self, host: str, args: tuple[str, ...], check: Callable[[str], bool]) -> None:
        """Once `overlaynet -H host ARGS` passes `check` (asked behind the scenes, at most
        CONVERGE seconds), show it as typed."""
        settled = self.settle(host, args, check)
        self.run(host, *args)
        if not settled:
            self.fail(f"not as expected within {CONVERGE:.0f} s")

    def picture(self, part: int, slug: str) -> None:
        """Draw the lab as it stands (`lab graph`) into OUT/demo-<part>-<slug>.svg."""
        path = self.out / f"demo-{part}-{slug}.svg"
        self.note("a picture of the lab as it stands: hosts, networks, containers, tunnels")
        print(f"\n$ overlaynet lab graph -o {path}", flush=True)
        argv = [sys.executable, "-m", "overlaynet", "--lab", self.lab, "lab", "graph"]
        out = subprocess.run(
            [*argv, "-o", str(path)], capture_output=True, text=True, timeout=120, check=False
        )
        sys.stdout.write(out.stdout + out.stderr)
        if out.returncode != 0 or not path.is_file():
            self.fail(f"lab graph did not draw {path}")
        else:
            self.drawn.append(path.name)

    def under_the_hood(self, host: str) -> None:
        self.note(f"under the hood on {host}: links and their bridge, addresses, routes")
        self.run(host, "host", "show")


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " {}$*") else arg


def _bridge(w: Walkthrough) -> None:
    w.say("Part 1: bridge networks (the tutorial's alpine_host and alpine_client)")
    w.note("images come from the catalog: alpine is a busybox userland with its own root")
    w.run("node1", "image", "ls")
    w.run("node1", "network", "ls")
    w.note("on the default bridge: `top` keeps each container running, detached")
    for name in ("alpine_host", "alpine_client"):
        w.run("node1", "run", "--detach", "--network", "bridge", "--name", name, "alpine", "top")
    w.run("node1", "ps")
    w.note("the default bridge has no name resolution: busybox's ping says `bad address`")
    w.run("node1", "exec", "alpine_client", "ping", "-c", "2", "alpine_host", expect_ok=False)
    if "ping: bad address 'alpine_host'" not in w.last:
        w.fail("ping did not say: ping: bad address 'alpine_host'")
    w.run("node1", "inspect", "-f", "{{.NetworkSettings.Networks}}", "alpine_host")
    w.run("node1", "exec", "alpine_client", "ls", "/")
    w.clean("node1")
    w.note("a user-defined bridge: containers find each other by name (the embedded DNS)")
    w.run("node1", "network", "create", "--driver", "bridge", "mybridge")
    for name in ("alpine_host", "alpine_client"):
        w.run("node1", "run", "--detach", "--network", "mybridge", "--name", name, "alpine", "top")
    w.run("node1", "exec", "alpine_client", "ping", "-c", "2", "alpine_host")
    w.run("node1", "inspect", "-f", "{{.NetworkSettings.Networks}}", "alpine_host")
    w.under_the_hood("node1")
    w.picture(1, "bridge")
    w.clean("node1")
    w.run("node1", "network", "rm", "mybridge")


def _overlay(w: Walkthrough) -> None:
    w.say("Part 2: an overlay network across hosts, for standalone containers")
    init = w.run("node1", "swarm", "init", "--advertise-addr", "eth0")
    match = re.search(r"--token (\S+) (\S+)", init)
    token, manager = match.groups() if match else ("", "")
    w.run("node2", "swarm", "join", "--token", token, manager)
    w.run("node3", "swarm", "join", "--token", token, manager)
    w.run("node1", "node", "ls")
    w.run("node1", "network", "create", "--attachable", "-d", "overlay", "myoverlay")
    w.run(
        "node1",
        "run",
        "--detach",
        "--network",
        "myoverlay",
        "--name",
        "alpine_host",
        "alpine",
        "top",
    )
    ip = w.run(
        "node1",
        "inspect",
        "-f",
        "{{.NetworkSettings.Networks.myoverlay.IPAddress}}",
        "alpine_host",
    ).strip()
    if ip != "10.0.0.2":
        w.fail(f"alpine_host got {ip}, the tutorial shows 10.0.0.2")
    w.note("node2 has no container on myoverlay yet, so myoverlay has not reached it:")
    if " myoverlay " in w.run("node2", "network", "ls"):
        w.fail("myoverlay is on node2 before any container there uses it")
    w.run(
        "node2",
        "run",
        "--detach",
        "--network",
        "myoverlay",
        "--name",
        "alpine_client",
        "alpine",
        "top",
    )
    if " myoverlay " not in w.run("node2", "network", "ls"):
        w.fail("myoverlay did not reach node2 with its first container")
    w.note("alpine_client on node2 reaches alpine_host on node1 by name, through VXLAN")
    capture = w.start_capture()
    out = w.run("node2", "exec", "alpine_client", "ping", "-c", "5", "alpine_host")
    if "PING alpine_host (10.0.0.2)" not in out:
        w.fail("ping did not resolve alpine_host to 10.0.0.2")
    w.show_capture(capture)
    w.note("under the hood on node1: gossip members, the endpoint table, the VTEP's FDB and ARP")
    w.run("node1", "gossip", "members")
    w.run("node1", "gossip", "endpoints", "myoverlay")
    w.run("node1", "network", "vtep", "myoverlay")
    w.picture(2, "overlay")
    w.clean("node2")
    w.clean("node1")
    w.run("node1", "network", "rm", "myoverlay")
    for host in ("node3", "node2"):
        w.run(host, "swarm", "leave")
    w.run("node1", "swarm", "leave", "--force")


def _swarm(w: Walkthrough) -> None:
    init = w.run("node1", "swarm", "init", "--advertise-addr", "eth0")
    match = re.search(r"--token (\S+) (\S+)", init)
    token, manager = match.groups() if match else ("", "")
    for host in ("node2", "node3"):
        w.run(host, "swarm", "join", "--token", token, manager)


def _running(service: str) -> Callable[[str], bool]:
    """`service ps` shows every current task of `service` running."""

    def check(out: str) -> bool:
        rows = [line.split() for line in out.splitlines()[1:] if not line.startswith(" ")]
        rows = [r for r in rows if len(r) > 5 and r[1].startswith(service + ".")]
        return bool(rows) and all(r[5] == "Running" for r in rows)

    return check


def _services(w: Walkthrough) -> None:
    w.say("Part 3: services (the atsea shop: a database and an app server behind the mesh)")
    _swarm(w)
    w.run("node1", "network", "create", "-d", "overlay", "atsea")
    w.run(
        "node1", "service", "create", "--name", "database", "--endpoint-mode", "dnsrr",
        "--network", "atsea", "--publish", "mode=host,target=1433", "--detach=true",
        "dockersamples/atsea-db:mssql",
    )  # fmt: skip
    w.note("the managers schedule the task on a node, whose agent runs it as a container")
    w.wait_for("node1", ("service", "ps", "database"), _running("database"))
    w.run("node1", "service", "logs", "database")
    if not w.last.startswith("database.1."):
        w.fail("service logs did not prefix its lines with database.1.<task id>@<node>")
    w.run(
        "node1", "service", "create", "--publish", "8080:8080", "--network", "atsea",
        "--name", "appserver", "--detach=true", "dockersamples/atsea-appserver:1.0",
    )  # fmt: skip
    w.wait_for("node1", ("service", "ps", "appserver"), _running("appserver"))
    w.run("node1", "service", "ls")
    rows = w.query("node1", "service", "ps", "appserver").splitlines()[1:]
    node = rows[0].split()[3] if rows else "node1"  # NODE, the fourth column
    w.note(f"the task is a container on {node}, with Docker's swarm labels")
    args = ("ps", "--filter", "label=com.docker.swarm.service.name=appserver")
    task = w.run(node, *args, "--format", "{{.Names}}").strip()
    w.note("the app server's page, through its service's VIP: it names the task that served it")
    w.run(node, "exec", task, "wget", "-qO-", "http://appserver:8080/")
    if f"served by {task}@{node}" not in w.last or "database: answered" not in w.last:
        w.fail("the page did not name its task or did not reach the database")
    w.note("under the hood: the VIPs per network (service inspect), the DNS records of atsea")
    w.run("node1", "service", "inspect", "appserver")
    w.run(node, "dns", "atsea")
    if "tasks.database" not in w.last or "appserver" not in w.last:
        w.fail("the DNS records lack the services' names")
    w.note(f"the VIP's load balancer on {node}: backends, their connections, the nft rules")
    w.run(node, "network", "lb", "atsea")
    if "dnat to" not in w.last:
        w.fail("no nft rule balances the VIP")
    w.note("the published port 8080: every node DNATs it to its ingress sandbox, balanced there")
    w.run(node, "network", "lb", "ingress")
    if ":8080/tcp" not in w.last:
        w.fail("the ingress sandbox does not balance port 8080")
    w.picture(3, "services")
    for name in ("appserver", "database"):
        w.run("node1", "service", "rm", name)
    w.note("the tasks stop and their containers go (each within its 10 s grace), then we leave")
    for host in ("node3", "node2", "node1"):
        if not w.settle(host, ("ps", "-a", "--format", "{{.Names}}"), lambda out: not out.strip()):
            w.fail(f"the services' containers are still on {host}")
    for host in ("node3", "node2"):
        w.run(host, "swarm", "leave")
    w.run("node1", "swarm", "leave", "--force")


def run(lab: str, keep: bool = False, hosts: int = 3, out: Path | None = None) -> int:
    pictures = (out or Path(DEFAULT_OUT)).absolute()
    try:
        pictures.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        print(f"cannot make the folder for the pictures: {e}", file=sys.stderr)
        return 1
    print(f"Building lab {lab!r} with {hosts} hosts…", flush=True)
    print(f"A picture of the lab after each part goes to {pictures}/", flush=True)
    try:
        # The walk's overlay part forms a swarm of every host.
        labmod.up(lab, hosts, progress=True, swarm_later=True)
    except (labmod.LabError, ValueError) as e:
        print(f"cannot build the lab: {e}", file=sys.stderr)
        labmod.down(lab)
        return 1
    w = Walkthrough(lab, pictures)
    try:
        _bridge(w)
        _overlay(w)
        _services(w)
    finally:
        if keep:
            print(f"\nThe lab is still up: `overlaynet lab ls`; then `lab down --name {lab}`.")
        else:
            labmod.down(lab)
            print(f"\nLab {lab!r} removed.")
    print(f"Pictures of the lab in {pictures}/: {', '.join(w.drawn) or 'none'}")
    if w.failures:
        print(f"{w.failures} step(s) did not behave as the tutorial says.", file=sys.stderr)
        return 1
    print("Every step behaved as the tutorial says.")
    return 0
