"""The layer-by-layer decoding of underlay frames (pure, from bytes built with scapy)."""

from __future__ import annotations

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from overlaynet.lab import capture


def test_vxlan_frame_decodes_every_layer() -> None:
    inner = (
        Ether(src="02:42:0a:00:09:02", dst="02:42:0a:00:09:80")
        / IP(src="10.0.9.2", dst="10.0.9.128")
        / ICMP(id=7, seq=3)
    )
    outer = (
        Ether(src="0e:00:00:00:00:01", dst="0e:00:00:00:00:02")
        / IP(src="192.168.0.11", dst="192.168.0.12", flags="DF")
        / UDP(sport=50000, dport=4789, chksum=0)
        / VXLAN(flags=0x08, vni=4200)
        / inner
    )
    layers = capture.describe(bytes(outer))
    assert [layer.name for layer in layers] == [
        "Ether",
        "IPv4",
        "UDP",
        "VXLAN",
        "Ether",
        "IPv4",
        "ICMP",
    ]
    assert "vni 4200" in layers[3].fields and "flags 0x08" in layers[3].fields
    assert "192.168.0.11 > 192.168.0.12" in layers[1].fields and "DF" in layers[1].fields
    assert "chksum 0x0000" in layers[2].fields
    assert layers[6].fields == "echo-request id 7 seq 3"
    text = capture.render([bytes(outer)])
    assert text.splitlines()[0].startswith("#1  ") and "VXLAN" in text


def test_truncated_frame_does_not_raise() -> None:
    layers = capture.describe(b"\x00" * 20)
    assert len(layers) == 1 and layers[0].fields == "20 bytes"
