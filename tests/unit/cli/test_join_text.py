"""The join line `swarm init` prints per lab host."""

from __future__ import annotations

from overlaynet.cli.join_text import lab_join_command


def test_a_named_lab_is_spelled_out_and_the_default_one_is_not() -> None:
    assert lab_join_command("SWMTKN-1-a-b", "192.168.0.11:2377", "node2", "s9u") == (
        "    overlaynet --lab s9u -H node2 swarm join --token SWMTKN-1-a-b 192.168.0.11:2377"
    )
    assert lab_join_command("SWMTKN-1-a-b", "192.168.0.11:2377", "node3", "default") == (
        "    overlaynet -H node3 swarm join --token SWMTKN-1-a-b 192.168.0.11:2377"
    )
