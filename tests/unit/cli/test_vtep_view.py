"""`network vtep`'s view of an inspect document (sans-IO)."""

from __future__ import annotations

import pytest

from overlaynet.cli.main import CliError
from overlaynet.cli.vtep_cmd import render

# A swarm overlay as a host it has not reached yet shows it: VNI and peers, no VTEP, no data plane.
NOT_REACHED = {"Name": "test-net", "Overlay": {"VNI": 4097, "Peers": [], "Encrypted": False}}


def test_an_overlay_without_a_vtep_here_is_one_clear_line() -> None:
    with pytest.raises(CliError) as err:
        render("test-net", NOT_REACHED)
    assert "network test-net has no VTEP on this host yet" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_bridge_network_is_not_an_overlay() -> None:
    with pytest.raises(CliError, match="network bridge is not an overlay network"):
        render("bridge", {"Name": "bridge"})


def test_an_overlay_with_its_vtep_draws_its_tables() -> None:
    doc = {
        "Overlay": {
            "VNI": 4200,
            "VTEP": "192.168.0.11:4789",
            "Peers": ["192.168.0.12"],
            "DataPlane": {
                "tap": "on-tap-80cbf850",
                "fdb": [
                    {
                        "mac": "02:42:0a:00:00:03",
                        "remote_ip": "192.168.0.12",
                        "tx_frames": 8,
                        "rx_frames": 7,
                    }
                ],
                "arp": {"10.0.9.128": "02:42:0a:00:00:03"},
                "counters": {"tx_flood": 2},
            },
        }
    }
    text = render("ov", doc)
    assert text.splitlines()[:2] == [
        "VNI 4200   VTEP 192.168.0.11:4789   TAP on-tap-80cbf850",
        "peers (head-end replication): 192.168.0.12",
    ]
    assert "MAC learning: off (the FDB comes from gossip or `network fdb`)\n\n" in text
    assert "02:42:0a:00:00:03   192.168.0.12   8           7" in text
    assert "10.0.9.128" in text and "tx_flood" in text
