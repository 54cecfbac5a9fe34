"""tools/decode_pcap.py as the README runs it: `tools/decode_pcap.py FILE`, directly (its own
shebang, no .venv/bin on PATH), and a clear line for a file it cannot read."""

from __future__ import annotations

import subprocess
from pathlib import Path

from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN
from scapy.utils import wrpcap

TOOL = Path(__file__).resolve().parents[3] / "tools" / "decode_pcap.py"
# A PATH without the project's venv: what a shell has before `.venv/bin` is put on it.
BARE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin"}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TOOL), *args], capture_output=True, text=True, env=BARE_ENV, timeout=60, check=False
    )


def test_it_runs_as_written_and_decodes_a_vxlan_frame(tmp_path: Path) -> None:
    inner = Ether(src="02:42:0a:00:00:02", dst="02:42:0a:00:00:03") / IP(
        src="10.0.0.2", dst="10.0.0.3"
    )
    frame = (
        Ether()
        / IP(src="192.168.0.11", dst="192.168.0.12")
        / UDP(sport=49152, dport=4789)
        / VXLAN(flags=0x08, vni=4097)
        / inner
        / ICMP()
    )
    pcap = tmp_path / "ping.pcap"
    wrpcap(str(pcap), [frame])
    out = _run(str(pcap))
    assert out.returncode == 0, out.stderr
    assert "VXLAN  flags 0x08 vni 4097" in out.stdout, out.stdout
    assert "10.0.0.2 > 10.0.0.3" in out.stdout


def test_a_missing_or_foreign_file_is_one_line(tmp_path: Path) -> None:
    missing = _run(str(tmp_path / "nope.pcap"))
    assert missing.returncode == 1
    assert missing.stderr.splitlines() == [
        f"decode_pcap: cannot read {tmp_path / 'nope.pcap'}: No such file or directory"
    ]
    text = tmp_path / "notes.txt"
    text.write_text("not a capture\n")
    foreign = _run(str(text))
    assert foreign.returncode == 1
    assert len(foreign.stderr.splitlines()) == 1 and "not a pcap file" in foreign.stderr
