"""Overlay networks through the agent and CLI, with peers and endpoints given by hand."""

from __future__ import annotations

import json
import os
import signal

from overlaynet import lab as labmod
from tests.integration.labs import Lab


def _overlay_on_both(lab: Lab, name: str, vni: str, third: int) -> None:
    subnet = f"10.0.{third}.0/24"
    for host, rng, peer in (
        ("node1", f"10.0.{third}.0/25", "192.168.0.12"),
        ("node2", f"10.0.{third}.128/25", "192.168.0.11"),
    ):
        lab.ok(
            host,
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            subnet,
            "--ip-range",
            rng,
            "--opt",
            f"vni={vni}",
            name,
        )
        lab.ok(host, "network", "peer", "add", name, peer)


def _ip(lab: Lab, host: str, c: str, net: str) -> str:
    return lab.ok(
        host, "inspect", "-f", "{{.NetworkSettings.Networks." + net + ".IPAddress}}", c
    ).strip()


def _mac(lab: Lab, host: str, c: str, net: str) -> str:
    return lab.ok(
        host, "inspect", "-f", "{{.NetworkSettings.Networks." + net + ".MacAddress}}", c
    ).strip()


def test_containers_on_two_hosts_ping_over_a_static_overlay(lab2: Lab) -> None:
    _overlay_on_both(lab2, "ov1", "4300", 31)
    lab2.ok("node1", "run", "-dit", "--name", "o1", "--network", "ov1", "alpine")
    lab2.ok("node2", "run", "-dit", "--name", "o2", "--network", "ov1", "alpine")
    assert lab2.ok("node1", "exec", "o1", "cat", "/sys/class/net/eth0/mtu").strip() == "1450"
    out = lab2.cli(
        "node1", "exec", "o1", "ping", "-c", "2", "-W", "2", _ip(lab2, "node2", "o2", "ov1")
    )
    assert out.returncode == 0, out.stdout
    doc = json.loads(lab2.ok("node1", "network", "inspect", "ov1"))[0]
    assert doc["Driver"] == "overlay"
    assert doc["Overlay"]["VNI"] == 4300 and doc["Overlay"]["VTEP"] == "192.168.0.11:4789"
    assert doc["Overlay"]["Peers"] == ["192.168.0.12"]
    assert doc["Options"]["com.docker.network.driver.mtu"] == "1450"


def test_static_endpoint_feeds_fdb_and_local_arp_answers(lab2: Lab) -> None:
    _overlay_on_both(lab2, "ov2", "4301", 32)
    lab2.ok("node1", "run", "-dit", "--name", "s1", "--network", "ov2", "alpine")
    lab2.ok("node2", "run", "-dit", "--name", "s2", "--network", "ov2", "alpine")
    ip2, mac2 = _ip(lab2, "node2", "s2", "ov2"), _mac(lab2, "node2", "s2", "ov2")
    lab2.ok("node1", "network", "fdb", "add", "ov2", mac2, "192.168.0.12", "--ip", ip2)
    out = lab2.cli("node1", "exec", "s1", "ping", "-c", "2", "-W", "2", ip2)
    assert out.returncode == 0, out.stdout
    vtep = lab2.ok("node1", "network", "vtep", "ov2")
    fdb_row = next(line for line in vtep.splitlines() if line.startswith(mac2))
    assert fdb_row.split()[1] == "192.168.0.12" and int(fdb_row.split()[2]) >= 2
    assert any(line.split() == [ip2, mac2] for line in vtep.splitlines())
    dp = json.loads(lab2.ok("node1", "network", "inspect", "ov2"))[0]["Overlay"]["DataPlane"]
    # The TAP hands over TCP super-frames exactly while the C egress drain serves it (issue 15).
    assert dp["tap_tso"] is dp["accel"].startswith("c egress"), dp["accel"]
    assert ("tap: tso" in vtep) is dp["tap_tso"]
    assert dp["counters"]["arp_answered"] >= 1, dp["counters"]
    lab2.ok("node1", "network", "fdb", "rm", "ov2", mac2)
    assert mac2 not in lab2.ok("node1", "network", "vtep", "ov2")


def test_overlay_comes_back_after_kill_9(fresh_lab: Lab) -> None:
    lab = fresh_lab
    lab.ok("node1", "network", "create", "-d", "overlay", "--opt", "vni=4302", "ovr")
    lab.ok("node1", "network", "peer", "add", "ovr", "192.168.0.99")
    lab.ok("node1", "run", "-dit", "--name", "r1", "--network", "ovr", "alpine")
    lab.ok("node1", "run", "-dit", "--name", "r2", "--network", "ovr", "alpine")
    pid = labmod.status(lab.name)[0].pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    labmod.up(lab.name, 1)
    doc = json.loads(lab.ok("node1", "network", "inspect", "ovr"))[0]
    assert doc["Overlay"]["Peers"] == ["192.168.0.99"] and doc["Overlay"]["DataPlane"][
        "tap"
    ].startswith("on-tap-")
    out = lab.cli("node1", "exec", "r1", "ping", "-c", "1", "-W", "2", "r2")
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_overlay_requests(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "-d", "overlay", "--opt", "vni=4303", "ov3")
    for args, says in (
        (
            ("network", "create", "-d", "overlay", "--opt", "vni=4303", "ov4"),
            "VNI 4303 is already used",
        ),
        (("network", "create", "-d", "overlay", "--opt", "vni=16777216", "ov5"), "24 bits"),
        (("network", "peer", "add", "ov3", "not-an-ip"), "invalid peer address"),
        (("network", "peer", "add", "bridge", "192.168.0.12"), "not an overlay network"),
        (("network", "fdb", "add", "ov3", "zz:zz", "192.168.0.12"), "invalid MAC address"),
        (("network", "fdb", "add", "ov3", "01:00:5e:00:00:01", "192.168.0.12"), "multicast"),
        (("network", "fdb", "rm", "ov3", "02:42:0a:00:00:09"), "no static endpoint"),
    ):
        out = lab2.cli("node1", *args)
        assert out.returncode != 0 and says in out.stderr, (args, out.stderr)
