"""Under-the-hood views on a real swarm lab, each checked against the state it claims to show:
Prometheus text scraped inside a lab host (counters present and moving after a ping and a dig),
`stats`, `dns NETWORK` (a container on node2 appears on node1 with owner node2), and `network
inspect`'s Peers in Docker's layout."""

from __future__ import annotations

import json
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overlaynet import lab as labmod
from overlaynet.host import netns
from overlaynet.lab import lifecycle
from overlaynet.paths import HostPaths
from tests.integration.labs import Lab, wait_until

pytestmark = [pytest.mark.root, pytest.mark.slow]

NET = "viewnet"
PY = (sys.executable, "-c")
DIG = ("dig", "+short", "+tries=1", "+time=3", "@127.0.0.11")
METRICS_PORT = 9323
# The hosts' underlay addresses in every lab (lab/lifecycle numbering).
NODE1_IP, NODE2_IP = "192.168.0.11", "192.168.0.12"


@dataclass
class MetricsLab:
    lab: Lab
    agent: subprocess.Popen[bytes]

    def scrape(self) -> dict[str, list[tuple[dict[str, str], float]]]:
        """GET /metrics from inside node2's namespace, parsed by prometheus_client."""
        code = (
            "import urllib.request,sys;"
            f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics',"
            "timeout=10).read().decode())"
        )
        out = subprocess.run(
            ["nsenter", f"--net={netns.path(self.lab.netns_of('node2'))}", "--", *PY, code],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return {
            f.name: [(s.labels, s.value) for s in f.samples]
            for f in text_string_to_metric_families(out.stdout)
        }


def _start_agent_with_metrics(lab: Lab, host: str) -> subprocess.Popen[bytes]:
    """Replace the lab's agent of `host` by one started with --metrics-addr (same state)."""
    lifecycle.stop_agent(lab.name, host)
    assert wait_until(lambda: lifecycle.supervisor_pid(lab.name, host) is None, 10)
    paths = HostPaths(host, lab.name)
    argv = ["nsenter", f"--net={netns.path(lab.netns_of(host))}", "--", sys.executable]
    argv += ["-m", "overlaynet.agent", "--host", host, "--lab", lab.name]
    argv += ["--log-file", str(paths.log_file), "--metrics-addr", f"127.0.0.1:{METRICS_PORT}"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True)
    lifecycle.wait_for_agent(lab.name, host, proc)
    return proc


@pytest.fixture(scope="module")
def mlab() -> Iterator[MetricsLab]:
    """Three swarm hosts; node2's agent serves metrics; viewnet with c1 on node1, c2 on node2."""
    name = "t" + secrets.token_hex(4)
    proc: subprocess.Popen[bytes] | None = None
    try:
        labmod.up(name, 3, swarm=True)
        lab = Lab(name)
        proc = _start_agent_with_metrics(lab, "node2")
        lab.ok("node1", "network", "create", "-d", "overlay", "--attachable", NET)
        lab.ok("node1", "run", "-dit", "--name", "c1", "--network", NET, "alpine", "sh")
        lab.ok("node2", "run", "-dit", "--name", "c2", "--network", NET, "alpine", "sh")
        yield MetricsLab(lab, proc)
    finally:
        if proc is not None:
            _stop(proc)
        labmod.down(name)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _dns(lab: Lab, host: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.ok(host, "dns", NET, "--format", "json"))
    return doc


def _record(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((r for r in doc["Records"] if r["Name"] == name), None)


def _ip(lab: Lab, host: str, container: str) -> str:
    template = "{{.NetworkSettings.Networks." + NET + ".IPAddress}}"
    return lab.ok(host, "inspect", "-f", template, container).strip()


def _value(
    families: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str
) -> float:
    for got, value in families.get(name, []):
        if all(got.get(k) == v for k, v in labels.items()):
            return value
    return 0.0


def test_dns_view_shows_a_node2_container_on_node1_with_owner_node2(mlab: MetricsLab) -> None:
    lab = mlab.lab
    assert wait_until(lambda: _record(_dns(lab, "node1"), "c2") is not None, 20)
    doc = _dns(lab, "node1")
    assert doc["Network"] == NET and doc["ResolvesNames"]
    c2 = _record(doc, "c2")
    assert c2 is not None
    assert c2["Address"] == _ip(lab, "node2", "c2")
    assert c2["Origin"]["Source"] == "gossip"
    assert c2["Origin"]["Owner"] == "node2"
    assert c2["Origin"]["HostIP"] == NODE2_IP
    assert c2["FQDN"] == f"c2.{NET}"
    assert c2["TTL"] == doc["TTL"] > 0
    c1 = _record(doc, "c1")
    assert c1 is not None and c1["Origin"] == {
        "Source": "local",
        "Owner": "node1",
        "Container": "c1",
    }
    assert c1["Address"] == _ip(lab, "node1", "c1")
    # Each container's short id resolves too, with the same origin.
    c2_id = lab.ok("node2", "inspect", "-f", "{{.Id}}", "c2").strip()
    short = _record(doc, c2_id[:12])
    assert short is not None and short["Kind"] == "short-id" and short["Origin"]["Owner"] == "node2"
    # What the view claims is what the embedded DNS answers.
    out = lab.cli("node1", "exec", "c1", "nslookup", "c2")
    assert c2["Address"] in out.stdout, out.stdout + out.stderr
    table = lab.ok("node1", "dns", NET)
    assert "gossip node2 (192.168.0.12)" in table and "local (c1)" in table


def test_a_removed_container_leaves_the_dns_view(mlab: MetricsLab) -> None:
    lab = mlab.lab
    lab.ok("node2", "run", "-dit", "--name", "gone", "--network", NET, "alpine", "sh")
    assert wait_until(lambda: _record(_dns(lab, "node1"), "gone") is not None, 20)
    lab.ok("node2", "rm", "-f", "gone")
    assert wait_until(lambda: _record(_dns(lab, "node1"), "gone") is None, 20)


def test_dns_view_of_an_unknown_network_is_a_clear_error(mlab: MetricsLab) -> None:
    out = mlab.lab.cli("node1", "dns", "no-such-net")
    assert out.returncode != 0
    assert "no-such-net" in out.stderr


def test_network_inspect_shows_peers_in_dockers_layout(mlab: MetricsLab) -> None:
    lab = mlab.lab
    wanted = [{"Name": "node1", "IP": NODE1_IP}, {"Name": "node2", "IP": NODE2_IP}]

    def peers() -> Any:
        return json.loads(lab.ok("node1", "network", "inspect", NET))[0]["Peers"]

    assert wait_until(lambda: peers() == wanted, 20), peers()
    doc = json.loads(lab.ok("node1", "network", "inspect", NET))[0]
    vni = int(doc["Options"]["com.docker.network.driver.overlay.vxlanid_list"])
    assert doc["Overlay"]["VNI"] == vni
    assert doc["Overlay"]["VTEP"] == f"{NODE1_IP}:4789"
    # node3 has no container on the network: it is not a peer (and does not have the network).
    assert all(p["IP"] != "192.168.0.13" for p in doc["Peers"])
    # A worker shows both hosts too (by address where it cannot list the swarm's nodes).
    on2 = json.loads(lab.ok("node2", "network", "inspect", NET))[0]["Peers"]
    assert {p["IP"] for p in on2} == {NODE1_IP, NODE2_IP}
    assert {"Name": "node2", "IP": NODE2_IP} in on2


def test_stats_lists_every_plane_and_counts_its_own_calls(mlab: MetricsLab) -> None:
    lab = mlab.lab
    doc = json.loads(lab.ok("node1", "stats", "--format", "json"))
    assert doc["host"] == "node1"
    planes = doc["planes"]
    assert {"vtep", "dns", "gossip", "control", "manager", "api"} <= set(planes)
    # node1 is the manager: its rejection reasons are listed, zeros included.
    assert any(s["counter"] == "rejected" and "reason" in s["labels"] for s in planes["manager"])
    assert any(s["counter"] == "datagrams_received" and s["value"] > 0 for s in planes["gossip"])
    vtep = [s for s in planes["vtep"] if s["labels"].get("network") == NET]
    assert any(s["counter"] == "fdb_entries" and s["value"] >= 1 for s in vtep)

    def stats_calls() -> int:
        doc = json.loads(lab.ok("node1", "stats", "--format", "json"))
        return int(next(s["value"] for s in doc["planes"]["api"] if s["counter"] == "op:stats"))

    first = stats_calls()
    assert stats_calls() == first + 1
    table = lab.ok("node1", "stats", "--plane", "dns")
    assert table.splitlines()[0].split() == ["PLANE", "COUNTER", "LABELS", "VALUE"]
    assert all(line.startswith("dns ") for line in table.splitlines()[1:])
    bad = lab.cli("node1", "stats", "--plane", "nope")
    assert bad.returncode != 0 and "no plane 'nope'" in bad.stderr


def test_prometheus_text_counters_move_after_a_ping_and_a_dig(mlab: MetricsLab) -> None:
    lab = mlab.lab
    assert wait_until(lambda: _record(_dns(lab, "node2"), "c1") is not None, 20)
    before = mlab.scrape()
    labels = {"host": "node2", "network": NET}
    assert "overlaynet_vtep_tx_frames" in before
    assert "overlaynet_gossip_datagrams_received" in before
    assert "overlaynet_api_requests" in before
    out = lab.cli("node2", "exec", "c2", "ping", "-c", "3", "-W", "2", "c1")
    assert out.returncode == 0, out.stdout + out.stderr
    sandbox = json.loads(lab.ok("node2", "inspect", "c2"))[0]["NetworkSettings"]["SandboxKey"]
    dig = subprocess.run(
        ["nsenter", f"--net={sandbox}", "--", *DIG, "c1", "A"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert dig.stdout.split() == [_ip(lab, "node1", "c1")]
    after = mlab.scrape()
    tx = "overlaynet_vtep_tx_frames"
    assert _value(after, tx, **labels) >= _value(before, tx, **labels) + 3
    fdb_rx = "overlaynet_vtep_fdb_rx_frames"
    assert _value(after, fdb_rx, **labels) >= _value(before, fdb_rx, **labels) + 3
    queries = "overlaynet_dns_queries"
    assert _value(after, queries, type="A") >= _value(before, queries, type="A") + 2


def test_bad_metrics_clients_never_affect_the_agent(mlab: MetricsLab) -> None:
    lab = mlab.lab
    ns = netns.path(lab.netns_of("node2"))
    # A client that connects and says nothing, one that sends garbage, one that asks for
    # another path: each answered or timed out, the agent untouched.
    code = (
        "import socket,sys\n"
        f"addr=('127.0.0.1',{METRICS_PORT})\n"
        "silent=socket.create_connection(addr)\n"
        "for req in (b'\\x00\\xff garbage\\r\\n\\r\\n', b'GET /other HTTP/1.1\\r\\n\\r\\n',"
        " b'GET /metrics HTTP/1.1\\r\\nX: ' + b'a'*9000):\n"
        "    s=socket.create_connection(addr); s.sendall(req)\n"
        "    sys.stdout.write(s.recv(64).split(b'\\r\\n')[0].decode()+'\\n'); s.close()\n"
        "silent.close()\n"
    )
    out = subprocess.run(
        ["nsenter", f"--net={ns}", "--", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout.split("\n")[:3] == [
        "HTTP/1.1 400 Bad Request",
        "HTTP/1.1 404 Not Found",
        "HTTP/1.1 431 Request Header Fields Too Large",
    ]
    families = mlab.scrape()
    assert _value(families, "overlaynet_api_metrics_bad_requests", host="node2") >= 3
    assert _value(families, "overlaynet_api_metrics_scrapes", host="node2") >= 1
    assert lab.ok("node2", "ps", "-q")  # the agent answers its API as before
    assert mlab.agent.poll() is None


def test_a_taken_metrics_port_is_logged_and_counted_and_the_agent_runs_on(
    mlab: MetricsLab,
) -> None:
    lab = mlab.lab
    ns = netns.path(lab.netns_of("node3"))
    hold = (
        "import socket,time;s=socket.socket();"
        f"s.bind(('127.0.0.1',{METRICS_PORT}));s.listen();print('bound',flush=True);time.sleep(60)"
    )
    holder = subprocess.Popen(
        ["nsenter", f"--net={ns}", "--", *PY, hold], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "bound"
        proc = _start_agent_with_metrics(lab, "node3")
        try:
            doc = json.loads(lab.ok("node3", "stats", "--format", "json"))
            api = {s["counter"]: s["value"] for s in doc["planes"]["api"]}
            assert api["metrics_bind_failures"] == 1
            log = HostPaths("node3", lab.name).log_file.read_text()
            assert "metrics endpoint unavailable" in log
            assert proc.poll() is None
        finally:
            _stop(proc)
    finally:
        holder.kill()
        holder.wait()
