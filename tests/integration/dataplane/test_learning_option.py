"""`network create -d overlay --opt learning=on` through the agent: the VTEP learns the MACs
behind its static peers from the frames they send (no `network fdb add`), shows them as learned
in `network inspect` and `network vtep`; a network without the option learns nothing."""

from __future__ import annotations

import json

from tests.integration.labs import Lab

HOSTS = (("node1", "192.168.0.12", "10.0.41.0/25"), ("node2", "192.168.0.11", "10.0.41.128/25"))


def _container(lab: Lab, host: str, name: str, field: str) -> str:
    template = "{{.NetworkSettings.Networks.ovl." + field + "}}"
    return lab.ok(host, "inspect", "-f", template, name).strip()


def test_learning_on_fills_the_fdb_from_frames_of_the_peer(lab2: Lab) -> None:
    for host, peer, ip_range in HOSTS:
        opts = ["--opt", "vni=4310"] + (["--opt", "learning=on"] if host == "node1" else [])
        lab2.ok(host, "network", "create", "-d", "overlay", "--subnet", "10.0.41.0/24",
                "--ip-range", ip_range, *opts, "ovl")  # fmt: skip
        lab2.ok(host, "network", "peer", "add", "ovl", peer)
    lab2.ok("node1", "run", "-dit", "--name", "l1", "--network", "ovl", "alpine")
    lab2.ok("node2", "run", "-dit", "--name", "l2", "--network", "ovl", "alpine")
    mac1, mac2 = (
        _container(lab2, "node1", "l1", "MacAddress"),
        _container(lab2, "node2", "l2", "MacAddress"),
    )
    out = lab2.cli("node1", "exec", "l1", "ping", "-c", "3", "-W", "2",
                   _container(lab2, "node2", "l2", "IPAddress"))  # fmt: skip
    assert out.returncode == 0, out.stdout

    dp1 = json.loads(lab2.ok("node1", "network", "inspect", "ovl"))[0]["Overlay"]["DataPlane"]
    assert dp1["learning"] is not None and dp1["learning"]["learned"] >= 1, dp1
    row = next(r for r in dp1["fdb"] if r["mac"] == mac2)
    assert row["remote_ip"] == "192.168.0.12" and row["learned"] is True
    assert row["tx_frames"] >= 1, row  # the replies after the first went to the learned entry
    vtep = lab2.ok("node1", "network", "vtep", "ovl")
    assert any(line.split()[:2] == [mac2, "192.168.0.12"] for line in vtep.splitlines()), vtep

    dp2 = json.loads(lab2.ok("node2", "network", "inspect", "ovl"))[0]["Overlay"]["DataPlane"]
    assert dp2["learning"] is None
    assert all(r["mac"] != mac1 for r in dp2["fdb"]), dp2["fdb"]
