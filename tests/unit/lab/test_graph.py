"""`lab graph`'s pure part: agents' API answers to views, views to DOT, and DOT that graphviz
reads back (those tests skip, saying why, where graphviz is not installed)."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlaynet.lab import graph

OVERLAY_ID = "835orf2lvzt4ayjcsxyteobyr"
BRIDGE_ID = "b0d416882b865463b516168cc96e26ac3848f6d307d8b8da4d6a569909bdf463"
HOST_NET_ID = "c8ddeb3930230e4cd54332d3221b52fdd364af247e072411f007f77126e3fcdc"
NONE_ID = "446e28c061c5033046184e3c18646c43fe0fc23620104924de600df042a44d79"

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None, reason="graphviz's dot is not installed (apt-get install graphviz)"
)


def overlay_doc(ip: str, peers: list[str], vni: int = 4097) -> dict[str, Any]:
    """`network inspect` of an overlay with a running VTEP, as an agent answers it."""
    return {
        "Name": "tn",
        "Id": OVERLAY_ID,
        "Driver": "overlay",
        "Scope": "swarm",
        "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
        "Containers": {},
        "Options": {
            "com.docker.network.bridge.name": "on-br-835orf2lv",
            "com.docker.network.driver.mtu": "1450",
        },
        "Overlay": {
            "VNI": vni,
            "VTEP": f"{ip}:4789",
            "Peers": peers,
            "DataPlane": {
                "tap": "on-tap-835orf2l",
                "fdb": [{"mac": "02:42:0a:00:01:03", "remote_ip": peers[0] if peers else ""}],
            },
        },
    }


def bridge_doc() -> dict[str, Any]:
    return {
        "Name": "bridge",
        "Id": BRIDGE_ID,
        "Driver": "bridge",
        "IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]},
        "Options": {"com.docker.network.bridge.name": "on-docker0"},
    }


def container_doc(cid: str, name: str, ip: str, net: str = "tn") -> dict[str, Any]:
    return {
        "Id": cid,
        "Name": "/" + name,
        "HostConfig": {"NetworkMode": net},
        "NetworkSettings": {
            "Networks": {
                net: {"NetworkID": OVERLAY_ID, "IPAddress": ip, "MacAddress": "02:42:0a:00:01:02"}
            }
        },
    }


def answers(host_ip: str, peers: list[str], container: str, cid: str, ip: str) -> graph.HostAnswers:
    return graph.HostAnswers(
        network_ls=[
            {"id": BRIDGE_ID, "name": "bridge", "driver": "bridge", "scope": "local"},
            {"id": HOST_NET_ID, "name": "host", "driver": "host", "scope": "local"},
            {"id": NONE_ID, "name": "none", "driver": "null", "scope": "local"},
            {"id": OVERLAY_ID, "name": "tn", "driver": "overlay", "scope": "swarm"},
        ],
        network_inspect={BRIDGE_ID: bridge_doc(), OVERLAY_ID: overlay_doc(host_ip, peers)},
        container_ls=[{"id": cid, "names": container, "state": "running"}],
        container_inspect={cid: container_doc(cid, container, ip)},
        members=[
            {"name": "92f2v83ho7bdc1j2vg3jvgg2w", "addr": "192.168.0.11", "state": "alive"},
            {"name": "eyewm26g0yg5anqw0uq7yuaqh", "addr": "192.168.0.12", "state": "alive"},
        ],
    )


def two_hosts(node2_peers: list[str] | None = None) -> graph.Topology:
    """node1 and node2 sharing overlay `tn`: a1 on node1, a2 on node2."""
    peers2 = ["192.168.0.11"] if node2_peers is None else node2_peers
    n1 = graph.host_view(
        "node1",
        "192.168.0.11",
        answers("192.168.0.11", ["192.168.0.12"], "a1", "c1" * 32, "10.0.1.2"),
    )
    n2 = graph.host_view(
        "node2", "192.168.0.12", answers("192.168.0.12", peers2, "a2", "c2" * 32, "10.0.1.3")
    )
    return graph.Topology("t1", (n1, n2), underlay="br0 in onet-t1-ul")


def svg_of(dot_text: str, tmp_path: Path) -> ET.Element:
    out = tmp_path / "t.svg"
    graph.write(dot_text, out, "svg")
    return ET.parse(out).getroot()


def texts(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text")]


def titles(svg: ET.Element) -> list[str]:
    return [t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}title")]


# ---- answers to views --------------------------------------------------------------------------


def test_host_view_reads_bridge_overlay_vtep_and_container_endpoints() -> None:
    view = graph.host_view(
        "node1",
        "192.168.0.11",
        answers("192.168.0.11", ["192.168.0.12"], "a1", "c1" * 32, "10.0.1.2"),
    )
    assert view.reachable and view.problems == ()
    by_name = {n.name: n for n in view.networks}
    assert by_name["bridge"].bridge == "on-docker0"
    assert by_name["bridge"].subnet == "172.17.0.0/16"
    tn = by_name["tn"]
    assert (tn.vni, tn.bridge, tn.subnet) == (4097, "on-br-835orf2lv", "10.0.1.0/24")
    assert tn.vtep == graph.Vtep("192.168.0.11:4789", 4097, "on-tap-835orf2l", ("192.168.0.12",), 1)
    (a1,) = view.containers
    assert a1.name == "a1" and a1.network_mode == "tn"
    assert a1.attachments == (graph.Attachment(OVERLAY_ID, "tn", "10.0.1.2", "02:42:0a:00:01:02"),)
    assert [m.addr for m in view.members] == ["192.168.0.11", "192.168.0.12"]


def test_an_overlay_without_a_local_endpoint_has_a_vni_but_no_vtep() -> None:
    doc = {"Id": "x", "Name": "ingress", "Overlay": {"VNI": 4096, "Peers": []}}
    row = {"id": "x", "name": "ingress", "driver": "overlay", "scope": "swarm"}
    net = graph.network_view(row, doc)
    assert net.vni == 4096 and net.vtep is None


def test_a_host_whose_agent_does_not_answer_is_kept_and_marked() -> None:
    view = graph.host_view("node3", "192.168.0.13", None)
    assert not view.reachable
    assert view.problems == ("the agent does not answer",)
    dot = graph.to_dot(graph.Topology("t1", (view,)))
    assert "AGENT DOWN" in dot and '"node3/eth0" -- "underlay"' in dot


def test_unreadable_answers_become_problems_and_the_rest_is_kept() -> None:
    good = answers("192.168.0.11", ["192.168.0.12"], "a1", "c1" * 32, "10.0.1.2")
    good.network_ls.append({"name": "noid"})  # no id
    good.network_inspect[BRIDGE_ID] = {"Overlay": {"VNI": "not a number"}}
    good.container_ls.append({"id": "d" * 64, "names": "broken", "state": "running"})
    good.container_inspect["d" * 64] = {"NetworkSettings": {"Networks": {"tn": "not an object"}}}
    good.members = "not a list"
    good.errors.append("network ingress: network ingress not found")
    view = graph.host_view("node1", "192.168.0.11", good)
    assert [n.name for n in view.networks] == ["host", "none", "tn"]
    assert [c.name for c in view.containers] == ["a1"]
    assert view.members == ()
    assert view.problems == (
        "network ingress: network ingress not found",
        "network bridge: the overlay has no integer VNI",
        "network noid: no text field 'id'",
        "container broken: endpoint on tn is not an object",
        "gossip members: the answer is not a list",
    )
    assert "problems:" in graph.to_dot(graph.Topology("t1", (view,)))
    listed = list(graph.problems(graph.Topology("t1", (view,))))
    assert listed == [f"node1: {p}" for p in view.problems]


# ---- views to DOT -----------------------------------------------------------------------------


def test_peers_listing_each_other_make_one_tunnel_per_vni() -> None:
    (tunnel,) = graph.tunnels(two_hosts())
    assert tunnel == graph.Tunnel(
        4097, f"node1/vtep/{OVERLAY_ID}", f"node2/vtep/{OVERLAY_ID}", both=True
    )


def test_a_peering_known_to_one_side_only_is_a_one_way_tunnel() -> None:
    (tunnel,) = graph.tunnels(two_hosts(node2_peers=[]))
    assert (tunnel.a, tunnel.both) == (f"node1/vtep/{OVERLAY_ID}", False)
    assert "(one way)" in graph.to_dot(two_hosts(node2_peers=[]))


def test_a_peer_that_is_no_lab_host_is_an_outside_vtep() -> None:
    topo = two_hosts(node2_peers=["192.168.0.11", "192.168.0.99"])
    ends = {t.b for t in graph.tunnels(topo)} | {t.a for t in graph.tunnels(topo)}
    assert "outside/192.168.0.99" in ends
    assert '"outside/192.168.0.99" -- "underlay"' in graph.to_dot(topo)


def test_a_lab_host_peer_without_a_known_vtep_ends_at_its_underlay_port() -> None:
    n1 = two_hosts().hosts[0]
    topo = graph.Topology("t1", (n1, graph.host_view("node2", "192.168.0.12", None)))
    (tunnel,) = graph.tunnels(topo)
    assert tunnel.b == "node2/eth0" and not tunnel.both


def test_host_and_none_networks_are_drawn_only_when_a_container_uses_them() -> None:
    dot = graph.to_dot(two_hosts())
    assert f"node1/net/{HOST_NET_ID}" not in dot and f"node1/net/{NONE_ID}" not in dot
    raw = answers("192.168.0.11", [], "h1", "e" * 64, "")
    raw.container_inspect["e" * 64] = {"HostConfig": {"NetworkMode": "host"}}
    used = graph.to_dot(graph.Topology("t1", (graph.host_view("node1", "192.168.0.11", raw),)))
    assert f"node1/net/{HOST_NET_ID}" in used


def test_the_dot_text_names_every_host_network_container_and_the_underlay() -> None:
    dot = graph.to_dot(two_hosts())
    for needle in (
        'subgraph "cluster_node1"',
        'subgraph "cluster_node2"',
        "tn (overlay)",
        "bridge (bridge)",
        "bridge on-docker0",
        "a1\\nrunning",
        "a2\\nrunning",
        "underlay 192.168.0.0/24\\nbr0 in onet-t1-ul",
        '"node1/eth0" -- "underlay"',
        "VNI 4097",
        "TAP on-tap-835orf2l",
    ):
        assert needle in dot, needle
    assert dot == graph.to_dot(two_hosts()), "the same lab draws the same text"


def test_quote_escapes_what_would_end_or_bend_a_dot_string() -> None:
    assert graph.quote('a"b') == '"a\\"b"'
    assert graph.quote("a\\b") == '"a\\\\b"'
    assert graph.quote("a\nb") == '"a\\nb"'


# ---- formats and graphviz -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("t.svg", "svg"), ("T.PNG", "png"), ("a/b.dot", "dot"), ("x.gv", "dot")],
)
def test_output_format_comes_from_the_suffix(name: str, fmt: str) -> None:
    assert graph.output_format(name) == fmt


def test_an_unknown_suffix_is_refused_with_the_ones_known() -> None:
    with pytest.raises(graph.GraphError, match=r"\*\.svg"):
        graph.output_format("topology.jpeg")


def test_dot_output_needs_no_graphviz(tmp_path: Path) -> None:
    def no_dot(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("graphviz must not run for .dot")

    graph.write("graph {}\n", tmp_path / "t.dot", "dot", run=no_dot)
    assert (tmp_path / "t.dot").read_text() == "graph {}\n"


def test_a_missing_graphviz_is_one_clear_error(tmp_path: Path) -> None:
    def missing(*args: Any, **kwargs: Any) -> Any:
        raise FileNotFoundError("dot")

    with pytest.raises(graph.GraphError, match="apt-get install graphviz"):
        graph.write("graph {}\n", tmp_path / "t.svg", "svg", run=missing)


@needs_dot
def test_graphviz_draws_every_host_network_container_and_tunnel(tmp_path: Path) -> None:
    svg = svg_of(graph.to_dot(two_hosts()), tmp_path)
    words = " ".join(texts(svg))
    for needle in ("node1", "node2", "tn (overlay)", "bridge (bridge)", "a1", "a2", "VNI 4097"):
        assert needle in words, needle
    # The tunnel is one edge between the two VTEPs (SVG titles an edge "tail--head").
    assert f"node1/vtep/{OVERLAY_ID}--node2/vtep/{OVERLAY_ID}" in titles(svg)


@needs_dot
def test_graphviz_refusing_the_text_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(graph.GraphError, match="dot failed"):
        graph.write("graph { this is not dot", tmp_path / "t.svg", "svg")


@needs_dot
@settings(max_examples=20, deadline=None)
@given(
    st.text(
        alphabet=st.characters(
            whitelist_categories=("Lu", "Ll", "Nd", "Po", "Ps", "Pe", "Sm", "Pd"),
            max_codepoint=0x7E,
        ),
        min_size=1,
        max_size=20,
    )
)
def test_any_name_reaches_the_picture_unchanged(name: str) -> None:
    """Quoting holds for names graphviz would otherwise read as syntax or escapes."""
    dot = f"graph {{ {graph.quote('n')} [label={graph.quote(name)}]; }}\n"
    svg = subprocess.run(["dot", "-Tsvg"], input=dot.encode(), capture_output=True, check=True)
    root = ET.fromstring(svg.stdout)
    assert name in texts(root)
