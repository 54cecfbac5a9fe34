"""Bridge networks on one host: addresses, reachability by IP, isolation, per-host lists."""

from __future__ import annotations

import json

from tests.integration.labs import Lab


def _ip(lab: Lab, host: str, name: str, network: str) -> str:
    fmt = "{{.NetworkSettings.Networks." + network + ".IPAddress}}"
    return lab.ok(host, "inspect", "-f", fmt, name).strip()


def test_ping_by_ip_on_a_user_bridge(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "--driver", "bridge", "pingnet")
    lab2.ok("node1", "run", "-dit", "--name", "p1", "--network", "pingnet", "alpine")
    lab2.ok("node1", "run", "-dit", "--name", "p2", "--network", "pingnet", "alpine")
    ip2 = _ip(lab2, "node1", "p2", "pingnet")
    assert ip2.startswith("172.")
    out = lab2.cli("node1", "exec", "p1", "ping", "-c", "2", "-W", "2", ip2)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 packets received" in out.stdout  # busybox ping, as in the tutorial


def test_containers_on_different_bridges_cannot_reach_each_other(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "isoa")
    lab2.ok("node1", "network", "create", "isob")
    lab2.ok("node1", "run", "-dit", "--name", "ia", "--network", "isoa", "alpine")
    lab2.ok("node1", "run", "-dit", "--name", "ib", "--network", "isob", "alpine")
    lab2.ok("node1", "run", "-dit", "--name", "idef", "alpine")
    ib, idef = _ip(lab2, "node1", "ib", "isob"), _ip(lab2, "node1", "idef", "bridge")
    assert idef.startswith("172.17.")
    for target in (ib, idef):
        out = lab2.cli("node1", "exec", "ia", "ping", "-c", "1", "-W", "1", target)
        assert out.returncode != 0, f"ia reached {target}"
    # Connecting ia to isob as well makes ib reachable through the shared bridge.
    lab2.ok("node1", "network", "connect", "isob", "ia")
    out = lab2.cli("node1", "exec", "ia", "ping", "-c", "1", "-W", "2", ib)
    assert out.returncode == 0, out.stdout
    lab2.ok("node1", "network", "disconnect", "isob", "ia")
    out = lab2.cli("node1", "exec", "ia", "ping", "-c", "1", "-W", "1", ib)
    assert out.returncode != 0


def test_network_ls_differs_per_host(lab2: Lab) -> None:
    lab2.ok("node1", "network", "create", "onlyone")
    ls1 = lab2.ok("node1", "network", "ls")
    ls2 = lab2.ok("node2", "network", "ls")
    assert ls1.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert "onlyone" in ls1 and "onlyone" not in ls2
    names2 = [line.split()[1] for line in ls2.splitlines()[1:]]
    assert {"bridge", "host", "none"} <= set(names2)
    id1 = next(line.split()[0] for line in ls1.splitlines() if " bridge " in line)
    id2 = next(line.split()[0] for line in ls2.splitlines() if " bridge " in line)
    assert len(id1) == 12 and id1 != id2


def test_network_inspect_lists_containers_with_addresses(lab2: Lab) -> None:
    lab2.ok(
        "node2",
        "network",
        "create",
        "--subnet",
        "172.30.5.0/24",
        "--gateway",
        "172.30.5.254",
        "insp",
    )
    lab2.ok("node2", "run", "-d", "--name", "i1", "--network", "insp", "--ip", "172.30.5.7", "host")
    doc = json.loads(lab2.ok("node2", "network", "inspect", "insp"))[0]
    assert doc["Name"] == "insp" and doc["Driver"] == "bridge" and doc["Scope"] == "local"
    assert doc["IPAM"]["Config"] == [{"Subnet": "172.30.5.0/24", "Gateway": "172.30.5.254"}]
    (member,) = doc["Containers"].values()
    assert member["Name"] == "i1"
    assert member["IPv4Address"] == "172.30.5.7/24"
    assert member["MacAddress"] == "02:42:ac:1e:05:07"
    cdoc = json.loads(lab2.ok("node2", "container", "inspect", "i1"))[0]
    net = cdoc["NetworkSettings"]["Networks"]["insp"]
    assert net["Gateway"] == "172.30.5.254" and net["NetworkID"] == doc["Id"]
    assert cdoc["NetworkSettings"]["SandboxKey"].startswith(f"/run/netns/onet-{lab2.name}-node2-")
    routes = lab2.ok("node2", "exec", "i1", "ip", "route")
    assert "default via 172.30.5.254 dev eth0" in routes
    tmpl = lab2.ok(
        "node2", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "i1"
    )
    assert tmpl.strip() == "172.30.5.7"


def test_host_and_none_networks(lab2: Lab) -> None:
    lab2.ok("node2", "run", "-d", "--name", "hn", "--network", "host", "host")
    out = lab2.ok("node2", "exec", "hn", "ip", "-4", "-o", "addr")
    assert "192.168.0.12" in out
    lab2.ok("node2", "run", "-d", "--name", "nn", "--network", "none", "host")
    out = lab2.ok("node2", "exec", "nn", "ip", "-o", "link")
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]
