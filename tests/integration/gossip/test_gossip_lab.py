"""Three lab hosts gossip over a real underlay (namespaces, veth, a bridge): they agree on
members and endpoint entries, and a host killed with SIGKILL is declared dead and its entries
withdrawn on the others, while a SIGTERM'd one leaves gracefully."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import NetNS
from pyroute2 import netns as pyroute2_netns

PREFIX = "onet-tgs-"
UNDERLAY = f"{PREFIX}ul"
HOSTS = {"h1": "192.168.0.11", "h2": "192.168.0.12", "h3": "192.168.0.13"}
KEY = "11" * 32
# Bounds every wait; convergence takes a few seconds with the lab timings.
PATIENCE = 40.0
REPO = Path(__file__).resolve().parents[3]


def _ns(host: str) -> str:
    return f"{PREFIX}{host}"


def _remove_namespaces() -> None:
    for name in [UNDERLAY, *(_ns(h) for h in HOSTS)]:
        with contextlib.suppress(FileNotFoundError, OSError):
            pyroute2_netns.remove(name)


def _build_underlay() -> None:
    """A bridge in its own namespace, one veth per host: nothing touches the root namespace."""
    for name in [UNDERLAY, *(_ns(h) for h in HOSTS)]:
        pyroute2_netns.create(name)
    with NetNS(UNDERLAY) as ul:
        ul.link("add", ifname="br0", kind="bridge")
        bridge = ul.link_lookup(ifname="br0")[0]
        ul.link("set", index=bridge, state="up")
        for host in HOSTS:
            ul.link("add", ifname=f"p-{host}", kind="veth", peer={"ifname": f"t-{host}"})
            ul.link("set", index=ul.link_lookup(ifname=f"t-{host}")[0], net_ns_fd=_ns(host))
            port = ul.link_lookup(ifname=f"p-{host}")[0]
            ul.link("set", index=port, master=bridge, state="up")
    for host, ip in HOSTS.items():
        with NetNS(_ns(host)) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            eth = ns.link_lookup(ifname=f"t-{host}")[0]
            ns.link("set", index=eth, ifname="eth0")
            ns.addr("add", index=eth, address=ip, prefixlen=24)
            ns.link("set", index=eth, state="up")


@pytest.fixture
def underlay() -> Iterator[None]:
    _remove_namespaces()  # debris of an interrupted earlier run
    try:
        _build_underlay()
        yield
    finally:
        _remove_namespaces()


@pytest.fixture
def agents(underlay: None, tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for host, ip in HOSTS.items():
            others = [f"--join={other}" for h, other in HOSTS.items() if h != host]
            cmd = [
                "nsenter",
                f"--net=/run/netns/{_ns(host)}",
                sys.executable,
                "-m",
                "overlaynet.gossip.node_main",
                f"--name={host}",
                f"--ip={ip}",
                f"--key={KEY}",
                *others,
                "--network=net1",
                f'--entry=net1:ep-{host}={{"host": "{ip}"}}',
                f"--status={tmp_path / host}.json",
            ]
            log = (tmp_path / f"{host}.log").open("wb")
            procs[host] = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        yield procs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def _status(tmp_path: Path, host: str) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((tmp_path / f"{host}.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"members": [], "entries": {"net1": {}}}
    return data


def _states(status: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["state"] for m in status["members"]}


def _wait(check: Callable[[], bool], what: str, tmp_path: Path) -> None:
    deadline = time.monotonic() + PATIENCE
    while not check():
        if time.monotonic() > deadline:
            logs = {h: (tmp_path / f"{h}.log").read_text()[-2000:] for h in HOSTS}
            views = {h: _status(tmp_path, h) for h in HOSTS}
            pytest.fail(f"timed out waiting for {what}: {views} {logs}")
        time.sleep(0.2)


def test_killed_agent_is_declared_dead_and_its_entries_withdrawn(
    agents: dict[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    def converged() -> bool:
        for host in HOSTS:
            status = _status(tmp_path, host)
            if set(_states(status).values()) != {"alive"} or len(status["members"]) != 3:
                return False
            if set(status["entries"]["net1"]) != {f"ep-{h}" for h in HOSTS}:
                return False
        return True

    _wait(converged, "three alive members and three entries everywhere", tmp_path)
    entry = _status(tmp_path, "h1")["entries"]["net1"]["ep-h3"]
    assert entry == {"value": '{"host": "192.168.0.13"}', "owner": "h3"}

    os.kill(agents["h3"].pid, signal.SIGKILL)

    def h3_dead() -> bool:
        for host in ("h1", "h2"):
            status = _status(tmp_path, host)
            if _states(status).get("h3") != "dead" or "ep-h3" in status["entries"]["net1"]:
                return False
        return True

    _wait(h3_dead, "h3 dead and ep-h3 withdrawn on h1 and h2", tmp_path)
    assert set(_status(tmp_path, "h1")["entries"]["net1"]) == {"ep-h1", "ep-h2"}

    agents["h2"].send_signal(signal.SIGTERM)
    _wait(lambda: _states(_status(tmp_path, "h1")).get("h2") == "left", "h2 left", tmp_path)
    assert _status(tmp_path, "h1")["stats"].get("dropped_unauthenticated", 0) == 0
