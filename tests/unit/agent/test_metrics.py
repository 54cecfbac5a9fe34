"""metrics: every plane's counters collected, grouped for `stats`, rendered as Prometheus text
that prometheus_client's own parser reads back; the HTTP endpoint answers GET /metrics only."""

from __future__ import annotations

from collections import Counter
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from overlaynet.agent import metrics, views
from overlaynet.dns.records import NameRecord, RecordKind

VTEP_STATS: dict[str, Any] = {
    "counters": {"rx_drop_not_member": 2, "rx_drop_unknown_vni": 1},
    "networks": {
        "4097": {
            "vni": 4097,
            "peers": ["192.168.0.12", "192.168.0.13"],
            "learning": None,
            "counters": {"tx_flood": 3, "arp_answered": 5},
            "fdb": [
                {"tx_frames": 10, "tx_bytes": 980, "rx_frames": 9, "rx_bytes": 882},
                {"tx_frames": 1, "tx_bytes": 98, "rx_frames": 0, "rx_bytes": 0},
            ],
        }
    },
    "source_ports": [49152],
}
MANAGER = {
    "Rejections": {"per_source": 2, "total": 0},
    "Connections": {"open": 3, "unauthenticated": 1},
    "Counters": {"accepted": 7, "rejected_per_source": 2},
}


def _all() -> list[metrics.Sample]:
    return metrics.collect(
        vtep=VTEP_STATS,
        vni_names={4097: "my-overlay"},
        dns={"queries_A": 4, "queries_AAAA": 2, "answers_NOERROR": 6, "forwarded": 0},
        gossip={"datagrams_received": 40, "replay_cache": 12},
        control={"join_retries": 1},
        manager=MANAGER,
        tasks={"tasks_started": 2},
        api={"op:network.inspect": 2, "malformed_requests": 1},
    )


def _parsed(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    return {
        f.name: [(s.name, s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_every_plane_is_collected() -> None:
    planes = {s.plane for s in _all()}
    assert planes == set(metrics.PLANES)


def test_vtep_tx_frames_add_unicast_from_the_fdb_and_floods() -> None:
    by_name = {(s.counter, s.labels): s.value for s in _all() if s.plane == "vtep"}
    labels = (("network", "my-overlay"), ("vni", "4097"))
    assert by_name[("fdb_tx_frames", labels)] == 11
    assert by_name[("tx_frames", labels)] == 14  # 11 unicast + 3 flooded
    assert by_name[("fdb_entries", labels)] == 2
    assert by_name[("peers", labels)] == 2
    assert by_name[("rx_drop_not_member", ())] == 2


def test_prometheus_text_parses_with_names_labels_and_types() -> None:
    parsed = _parsed(metrics.render("node1", _all()))
    tx = parsed["overlaynet_vtep_tx_frames"]
    assert tx == [
        (
            "overlaynet_vtep_tx_frames_total",
            {"host": "node1", "network": "my-overlay", "vni": "4097"},
            14.0,
        )
    ]
    queries = {s[1]["type"]: s[2] for s in parsed["overlaynet_dns_queries"]}
    assert queries == {"A": 4.0, "AAAA": 2.0}
    assert parsed["overlaynet_dns_answers"][0][1]["rcode"] == "NOERROR"
    assert parsed["overlaynet_api_requests"][0][1]["op"] == "network.inspect"
    rejected = {s[1]["reason"]: s[2] for s in parsed["overlaynet_manager_rejected"]}
    assert rejected == {"per_source": 2.0, "total": 0.0}
    # The manager's `rejected_*` counters appear once, by reason, not twice.
    assert "overlaynet_manager_rejected_per_source" not in parsed
    assert parsed["overlaynet_manager_connections_open"][0][0] == (
        "overlaynet_manager_connections_open"
    )
    types = {f.name: f.type for f in text_string_to_metric_families(metrics.render("n", _all()))}
    assert types["overlaynet_manager_connections_open"] == "gauge"
    assert types["overlaynet_gossip_replay_cache"] == "gauge"
    assert types["overlaynet_gossip_datagrams_received"] == "counter"


def test_a_plane_that_does_not_run_contributes_nothing() -> None:
    samples = metrics.collect(dns={"queries_A": 1})
    assert {s.plane for s in samples} == {"dns"}
    assert not any(s.plane == "manager" for s in samples)


def test_non_numbers_in_a_stats_dict_are_left_out() -> None:
    samples = metrics.collect(gossip={"ok": 1, "flag": True, "list": [1], "doc": {"a": 1}})
    assert [s.counter for s in samples] == ["ok"]


def test_stats_doc_groups_by_plane_in_order() -> None:
    doc = metrics.stats_doc("node1", _all())
    assert list(doc["planes"]) == list(metrics.PLANES)
    assert {"counter": "queries_A", "labels": {}, "value": 4} in doc["planes"]["dns"]
    assert doc["host"] == "node1"


@given(
    name=st.text(min_size=1, max_size=20),
    network=st.text(max_size=20),
    value=st.integers(min_value=0, max_value=2**53),
)
def test_any_counter_name_and_label_renders_as_parseable_text(
    name: str, network: str, value: int
) -> None:
    sample = metrics.Sample("vtep", name, float(value), (("network", network),))
    parsed = list(text_string_to_metric_families(metrics.render("node1", [sample])))
    assert len(parsed) == 1
    (got,) = parsed[0].samples
    assert got.labels == {"host": "node1", "network": network}
    assert got.value == value


def test_two_counters_that_map_to_one_series_are_added() -> None:
    samples = [metrics.Sample("api", "a-b", 1.0), metrics.Sample("api", "a_b", 2.0)]
    parsed = _parsed(metrics.render("h", samples))
    assert parsed["overlaynet_api_a_b"][0][2] == 3.0


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("127.0.0.1:9323", ("127.0.0.1", 9323)), ("0.0.0.0:1", ("0.0.0.0", 1))],
)
def test_parse_addr(spec: str, expected: tuple[str, int]) -> None:
    assert metrics.parse_addr(spec) == expected


@pytest.mark.parametrize("spec", ["9323", ":9323", "127.0.0.1:", "127.0.0.1:x", "a:70000"])
def test_parse_addr_refuses_bad_addresses(spec: str) -> None:
    with pytest.raises(ValueError, match="metrics address"):
        metrics.parse_addr(spec)


@pytest.mark.parametrize(
    ("head", "status"),
    [
        (b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"200"),
        (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", b"200"),
        (b"GET / HTTP/1.1\r\n\r\n", b"404"),
        (b"POST /metrics HTTP/1.1\r\n\r\n", b"405"),
        (b"garbage\r\n\r\n", b"400"),
        (b"", b"400"),
    ],
)
def test_answer_serves_get_metrics_only(head: bytes, status: bytes) -> None:
    reply = metrics.answer(head, lambda: "x_total 1\n")
    assert reply.split(b" ")[1] == status
    if status == b"200":
        assert reply.endswith(b"\r\n\r\nx_total 1\n")
        assert b"version=0.0.4" in reply


def test_head_gets_headers_only() -> None:
    reply = metrics.answer(b"HEAD /metrics HTTP/1.1\r\n\r\n", lambda: "x_total 1\n")
    assert reply.endswith(b"\r\n\r\n") and b"Content-Length: 10" in reply


async def _exchange(port: int, data: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(data)
        out = b""
        while chunk := await stream.receive_some(65536):
            out += chunk
        return out


async def test_the_endpoint_survives_bad_clients_and_serves_the_next_scrape() -> None:
    counters: Counter[str] = Counter()
    text = metrics.render("node1", _all())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(metrics.serve, "127.0.0.1", 0, lambda: text, counters)
        # Too big: refused without reading forever.
        big = await _exchange(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000)
        assert big.startswith(b"HTTP/1.1 431")
        # A client that resets mid-request.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_all(b"GET /met")
        await stream.aclose()
        ok = await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200")
        body = ok.split(b"\r\n\r\n", 1)[1].decode()
        assert "overlaynet_vtep_tx_frames" in _parsed(body)
        nursery.cancel_scope.cancel()
    assert counters["metrics_scrapes"] == 1
    assert counters["metrics_bad_requests"] >= 1


async def test_a_failing_page_is_counted_and_the_server_goes_on() -> None:
    counters: Counter[str] = Counter()
    calls = []

    def page() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return "x_total 1\n"

    async with trio.open_nursery() as nursery:
        port = await nursery.start(metrics.serve, "127.0.0.1", 0, page, counters)
        assert await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n") == b""
        again = await _exchange(port, b"GET /metrics HTTP/1.1\r\n\r\n")
        assert again.endswith(b"x_total 1\n")
        nursery.cancel_scope.cancel()
    assert counters["metrics_client_errors"] == 1


async def test_a_silent_client_times_out(autojump_clock: trio.testing.MockClock) -> None:
    counters: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(metrics.serve, "127.0.0.1", 0, lambda: "", counters)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            assert await stream.receive_some(100) == b""
        nursery.cancel_scope.cancel()
    assert counters["metrics_timeouts"] == 1


# ---- the views that go with the counters (agent/views.py: dns_doc, peers_doc) ---------------


def _rec(name: str, ip: str, kind: RecordKind = RecordKind.CONTAINER) -> NameRecord:
    return NameRecord("n1", name, IPv4Address(ip), kind)


def test_dns_doc_gives_each_record_its_origin() -> None:
    local = {"Source": "local", "Owner": "node1", "Container": "c1"}
    remote = {"Source": "gossip", "Owner": "node2", "HostIP": "192.168.0.12", "Container": "w"}
    records = [
        _rec("c1", "10.0.0.2"),
        _rec("web.1.abc", "10.0.0.5"),
        _rec("tasks.web", "10.0.0.5", RecordKind.TASK),
        _rec("web", "10.0.0.9", RecordKind.SERVICE),
        _rec("stray", "10.0.0.7"),
    ]
    origins = {records[0]: local, records[1]: remote}
    doc = views.dns_doc("ov", True, 5, records, origins)
    by_name = {r["Name"]: r for r in doc["Records"]}
    assert by_name["c1"]["Origin"] == local
    assert by_name["c1"]["FQDN"] == "c1.ov" and by_name["c1"]["TTL"] == 5
    # A task name comes from where its task container lives.
    assert by_name["tasks.web"]["Origin"] == remote
    assert by_name["web"]["Origin"]["Source"] == "service"
    assert by_name["stray"]["Origin"] == {"Source": "unknown"}
    assert [r["Name"] for r in doc["Records"]] == sorted(by_name)


def test_peers_doc_is_dockers_layout_named_where_known() -> None:
    rows = views.peers_doc(
        ["192.168.0.12", "192.168.0.11", "192.168.0.12"], {"192.168.0.11": "node1"}
    )
    assert rows == [
        {"Name": "192.168.0.12", "IP": "192.168.0.12"},
        {"Name": "node1", "IP": "192.168.0.11"},
    ]
