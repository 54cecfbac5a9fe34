"""The lab comes up, answers, and goes down leaving nothing behind."""

from __future__ import annotations

import secrets
import subprocess

from overlaynet import lab as labmod
from overlaynet.host import netns


def _root_view() -> tuple[str, str, str]:
    """The root namespace's links, addresses and routes, which no lab may touch."""
    show = lambda *a: subprocess.run(["ip", "-o", *a], capture_output=True, text=True).stdout  # noqa: E731
    links = "\n".join(sorted(line.split(":")[1] for line in show("link").splitlines()))
    return links, show("addr"), show("route")


def _leftovers(name: str) -> list[str]:
    spaces = [ns for ns in netns.list_names("onet-") if ns.startswith(f"onet-{name}-")]
    return spaces


def test_lab_up_builds_hosts_on_an_underlay_and_down_removes_everything() -> None:
    name = "t" + secrets.token_hex(4)
    before = _root_view()
    try:
        hosts = labmod.up(name, 3)
        assert [h.ip for h in hosts] == ["192.168.0.11", "192.168.0.12", "192.168.0.13"]
        for h in hosts:
            out = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    f"onet-{name}-{h.name}",
                    "ip",
                    "-4",
                    "-o",
                    "addr",
                    "show",
                    "eth0",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert f"{h.ip}/24" in out
        ping = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                f"onet-{name}-node1",
                "ping",
                "-c",
                "1",
                "-W",
                "2",
                "192.168.0.13",
            ],
            capture_output=True,
            text=True,
        )
        assert ping.returncode == 0, ping.stdout
        statuses = labmod.status(name)
        assert [s.healthy for s in statuses] == [True, True, True]
        assert all(s.pid for s in statuses)
        assert _root_view() == before
    finally:
        removed = labmod.down(name)
    assert removed >= 4
    assert _leftovers(name) == []
    assert labmod.status(name) == []
    assert _root_view() == before


def test_lab_hosts_have_no_route_out() -> None:
    name = "t" + secrets.token_hex(4)
    try:
        labmod.up(name, 1)
        routes = subprocess.run(
            ["ip", "netns", "exec", f"onet-{name}-node1", "ip", "route"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "default" not in routes
        assert "192.168.0.0/24" in routes
    finally:
        labmod.down(name)


def test_two_labs_coexist_and_down_removes_only_its_own() -> None:
    a, b = "t" + secrets.token_hex(4), "t" + secrets.token_hex(4)
    try:
        labmod.up(a, 1)
        labmod.up(b, 1)
        assert labmod.status(a)[0].healthy and labmod.status(b)[0].healthy
        labmod.down(a)
        assert _leftovers(a) == []
        assert labmod.status(b)[0].healthy
        assert f"onet-{b}-node1" in netns.list_names()
    finally:
        labmod.down(a)
        labmod.down(b)
    assert _leftovers(b) == []


def test_down_cleans_up_after_a_half_finished_up() -> None:
    name = "t" + secrets.token_hex(4)
    # What a crash in the middle of `up` leaves: namespaces, a link, and no agents.
    netns.create(f"onet-{name}-ul")
    netns.create(f"onet-{name}-node1")
    netns.create(f"onet-{name}-node1-0123456789ab")
    subprocess.run(
        ["ip", "netns", "exec", f"onet-{name}-ul", "ip", "link", "add", "br0", "type", "bridge"],
        check=True,
    )
    sleeper = subprocess.Popen(
        ["ip", "netns", "exec", f"onet-{name}-node1-0123456789ab", "sleep", "60"]
    )
    try:
        assert labmod.down(name) == 3
        assert _leftovers(name) == []
        assert sleeper.wait(timeout=10) != 0
    finally:
        sleeper.kill()
        labmod.down(name)


def test_up_again_is_idempotent(fresh_lab) -> None:  # type: ignore[no-untyped-def]
    pid = labmod.status(fresh_lab.name)[0].pid
    labmod.up(fresh_lab.name, 1)
    assert labmod.status(fresh_lab.name)[0].pid == pid
    assert len(_leftovers(fresh_lab.name)) == 2
