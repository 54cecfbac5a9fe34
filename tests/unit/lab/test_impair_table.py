"""The nftables table `lab impair`/`lab partition` build for each host (pure: the JSON
commands, checked without root) and the lab's record of what is active."""

from __future__ import annotations

from typing import Any

from overlaynet.dataplane.impair import Impairment
from overlaynet.lab.impair import TABLE, HostImpairment, LabImpairments, table_commands
from overlaynet.lab.lifecycle import LabHost

HOSTS = {f"node{n}": LabHost.numbered(n) for n in (1, 2, 3)}


def _rules(commands: list[Any]) -> list[tuple[str, list[Any]]]:
    return [(c["add"]["rule"]["chain"], c["add"]["rule"]["expr"]) for c in commands
            if "rule" in c.get("add", {})]  # fmt: skip


def test_nothing_active_deletes_the_table_and_builds_nothing() -> None:
    commands = table_commands("node1", HOSTS, LabImpairments())
    table = {"family": "ip", "name": TABLE}
    assert commands == [{"add": {"table": table}}, {"delete": {"table": table}}]


def test_a_partition_drops_both_ways_on_each_side_and_leaves_no_side_alone() -> None:
    record = LabImpairments(partitions=[[["node1", "node3"], ["node2"]]])
    rules1 = _rules(table_commands("node1", HOSTS, record))
    assert ("input", [_match("saddr", "192.168.0.12"), {"drop": None}]) in rules1
    assert ("output", [_match("daddr", "192.168.0.12"), {"drop": None}]) in rules1
    rules2 = _rules(table_commands("node2", HOSTS, record))
    wanted = {"set": ["192.168.0.11", "192.168.0.13"]}
    assert ("input", [_match("saddr", wanted), {"drop": None}]) in rules2
    assert ("output", [_match("daddr", wanted), {"drop": None}]) in rules2
    # node1 and node3 are on one side: nothing between them.
    assert all("192.168.0.13" not in str(expr) for _chain, expr in rules1)


def test_loss_skips_vxlan_and_applies_only_to_the_sender_and_its_peer() -> None:
    record = LabImpairments([HostImpairment("node1", "node2", Impairment(loss=12.5, delay=3))])
    rules = _rules(table_commands("node1", HOSTS, record))
    assert rules[0] == ("output", [{"jump": {"target": "loss"}}])
    port = {"payload": {"protocol": "udp", "field": "dport"}}
    assert rules[1] == ("loss", [{"match": {"op": "==", "left": port, "right": 4789}},
                                 {"return": None}])  # fmt: skip
    chain, expr = rules[2]
    assert chain == "loss" and expr[0] == _match("daddr", "192.168.0.12")
    assert expr[1]["match"]["op"] == "<" and expr[1]["match"]["right"] == 1250  # of 10000
    assert expr[-1] == {"drop": None}
    # The receiver builds nothing: an impairment acts on what its host sends.
    assert _rules(table_commands("node2", HOSTS, record)) == []


def test_delay_alone_needs_no_underlay_rule() -> None:
    record = LabImpairments([HostImpairment("node1", None, Impairment(delay=20))])
    assert _rules(table_commands("node1", HOSTS, record)) == []


def test_the_record_round_trips_and_reads_as_lines() -> None:
    record = LabImpairments(
        [HostImpairment("node1", None, Impairment(loss=20, seed=7))],
        [[["node1", "node3"], ["node2"]]],
    )
    assert LabImpairments.from_doc(record.to_doc()) == record
    assert record.lines() == [
        "impair node1 -> all: loss 20% seed 7",
        "partition node1,node3 | node2",
    ]


def _match(field: str, right: Any) -> dict[str, Any]:
    left = {"payload": {"protocol": "ip", "field": field}}
    return {"match": {"op": "==", "left": left, "right": right}}
