"""Which peers a lab partition cuts off from a trace's source host, and the drop rule the
trace quotes (trace/partition.py's pure part)."""

from __future__ import annotations

from overlaynet.trace.partition import cut_off, rule_text

TABLE = """table ip onet_impair {
	chain input {
		type filter hook input priority filter; policy accept;
		ip saddr 192.168.0.13 drop
	}
	chain output {
		type filter hook output priority filter; policy accept;
		ip daddr { 192.168.0.13, 192.168.0.14 } drop
	}
}"""


def test_only_hosts_on_another_side_are_cut_off() -> None:
    partitions = [[["node1", "node2"], ["node3"]]]
    assert cut_off(partitions, "node2", "node3")
    assert cut_off(partitions, "node3", "node1")
    assert not cut_off(partitions, "node1", "node2")
    assert not cut_off([], "node1", "node3")
    # A host no partition names is cut off from nobody.
    assert not cut_off(partitions, "node1", "node9")


def test_the_drop_rule_naming_the_peer_is_quoted() -> None:
    assert rule_text(TABLE, "192.168.0.13") == "ip saddr 192.168.0.13 drop"
    assert rule_text(TABLE, "192.168.0.14") == "ip daddr { 192.168.0.13, 192.168.0.14 } drop"
    assert rule_text(TABLE, "192.168.0.12") == ""
    assert rule_text(TABLE, "192.168.0.1") == ""  # an address, not a prefix of one
    assert rule_text("", "192.168.0.13") == ""
