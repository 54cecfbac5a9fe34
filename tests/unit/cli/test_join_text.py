"""The join line `swarm init` prints per lab host."""

from __future__ import annotations

import pytest

from overlaynet import lab
from overlaynet.cli import main
from overlaynet.cli.join_text import lab_join_block, lab_join_command
from overlaynet.lab import LabHost


def test_a_named_lab_is_spelled_out_and_the_default_one_is_not() -> None:
    assert lab_join_command("SWMTKN-1-a-b", "192.168.0.11:2377", "node2", "s9u") == (
        "    overlaynet --lab s9u -H node2 swarm join --token SWMTKN-1-a-b 192.168.0.11:2377"
    )
    assert lab_join_command("SWMTKN-1-a-b", "192.168.0.11:2377", "node3", "default") == (
        "    overlaynet -H node3 swarm join --token SWMTKN-1-a-b 192.168.0.11:2377"
    )


def test_join_token_in_a_lab_spells_out_the_line_for_each_other_host(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `swarm join-token worker` in a lab printed `overlaynet swarm join ...` with no -H or
    # --lab (pasted, it went to lab "default"); swarm init's lab lines already had them.
    answer = {"token": "SWMTKN-1-a-b", "manager_addr": "192.168.0.11:2377"}
    monkeypatch.setattr(main, "call", lambda ns, op, **kw: answer)
    hosts = [LabHost(n, f"192.168.0.1{i}") for i, n in enumerate(["node1", "node2", "node3"])]
    monkeypatch.setattr(lab, "read_hosts", lambda name: hosts if name == "s9x" else [])
    ns = main.build_parser().parse_args(
        ["--lab", "s9x", "-H", "node1", "swarm", "join-token", "worker"]
    )
    assert ns.func(ns) == 0
    out = capsys.readouterr().out
    assert "    overlaynet swarm join --token SWMTKN-1-a-b 192.168.0.11:2377\n" in out
    assert "In lab s9x, paste for each host that joins:\n\n" in out
    for host in ("node2", "node3"):
        assert (
            f"    overlaynet --lab s9x -H {host} swarm join --token SWMTKN-1-a-b "
            "192.168.0.11:2377\n"
        ) in out
    assert "-H node1" not in out


def test_the_lab_block_leaves_out_this_host_and_is_empty_alone() -> None:
    block = lab_join_block("T", "A:2377", "default", "node1", ["node1", "node2"])
    assert block == (
        "In lab default, paste for each host that joins:\n\n"
        "    overlaynet -H node2 swarm join --token T A:2377\n"
    )
    assert lab_join_block("T", "A:2377", "s9x", "node1", ["node1"]) == ""
