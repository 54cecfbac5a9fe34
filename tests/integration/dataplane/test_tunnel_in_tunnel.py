"""A tunnel inside the overlay (issue 15): two containers on an overlaynet overlay make their own
kernel `vxlan` device over eth0 (dstport 4789, the same as the overlay's, MTU = overlay MTU - 50)
and carry ping, TCP and UDP DNS across it. UDP GSO has broken tunnels-in-tunnels elsewhere: a VTEP
that batches, merges or checksums inner UDP-in-UDP wrongly loses or corrupts these frames.

Topology (one per VTEP mode): hosts o1, o2 run `vtep_main` (default batching mode, the naive
`--no-batch` mode and, where vtep_main has it, `--offload`), containers c1 (10.0.0.2) and c2
(10.0.0.3) on them. In the containers: on-vx0 (VNI 42, UDP checksum 0, the kernel's default for
IPv4: 10.9.0.1/.2) and on-vx1 (VNI 43, `udpcsum`: 10.9.1.1/.2), point to point (`remote`).
Delivery and correctness only, no speed. With a scratch copy whose GSO path cut batched inner
UDP frames at the wrong size, the TCP tests failed in batch mode (2 failed, 10 passed).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlaynet.dataplane.vtep_main import parse_args
from overlaynet.lab.testbed import Container, Testbed

REPO = Path(__file__).resolve().parents[3]
#: The DNS server the dns_load benchmark runs: answers `10-1-2-3.<zone>` with A 10.1.2.3.
DNS_SERVER = REPO / "benchmarks" / "dns_load.py"
TIMEOUT = 60.0  # bounds a hang only
#: Inner VXLAN over the container's eth0: outer IPv4 + UDP + VXLAN + Ethernet.
INNER_OVERHEAD = 50
#: Bytes of the bounded TCP transfers: enough for many full-size GSO batches, seconds at most.
TCP_BYTES = 16 * 1024 * 1024
HASHED_BYTES = 4 * 1024 * 1024
DNS_QUERIES = 60
#: The TCP load under the DNS queries runs at most this long; it is stopped once dig is done.
LOAD_SECONDS = 20
#: (device, VNI, subnet, extra `ip link add` options): both UDP checksum choices of the kernel.
INNER = {
    "on-vx0": (42, "10.9.0", ("noudpcsum",)),
    "on-vx1": (43, "10.9.1", ("udpcsum",)),
}


def _vtep_takes(*flags: str) -> bool:
    """Whether this checkout's vtep_main accepts `flags` (offload mode is being built)."""
    try:
        parse_args(["--local-ip", "192.0.2.1", "--vni", "1", "--tap", "on-t", *flags])
    except SystemExit:
        return False
    return True


#: VTEP modes: the RFC wire batched (default) and naive, and offload mode where it exists (not
#: the RFC wire, but an inner tunnel must cross it all the same).
MODES = {"batch": (), "naive": ("--no-batch",)} | (
    {"offload": ("--offload",)} if _vtep_takes("--offload") else {}
)


@dataclass
class Pair:
    tb: Testbed
    c1: Container
    c2: Container


@pytest.fixture(scope="module", params=list(MODES))
def pair(request: pytest.FixtureRequest) -> Iterator[Pair]:
    with Testbed("onet-mxt-") as tb:
        h1, h2 = tb.add_host("o1", 11), tb.add_host("o2", 12)
        c1, c2 = tb.add_container(h1, "c1", 2), tb.add_container(h2, "c2", 3)
        extra = MODES[request.param]
        tb.start_vtep(h1, [h2], extra=extra)
        tb.start_vtep(h2, [h1], extra=extra)
        for dev, (vni, subnet, options) in INNER.items():
            for c, peer, last in ((c1, c2, 1), (c2, c1, 2)):
                tb.ip(c.ns, "link", "add", dev, "mtu", str(tb.mtu - INNER_OVERHEAD), "type",
                      "vxlan", "id", str(vni), "local", c.ip, "remote", peer.ip, "dstport",
                      "4789", *options, "dev", "eth0")  # fmt: skip
                tb.ip(c.ns, "addr", "add", f"{subnet}.{last}/24", "dev", dev)
                tb.ip(c.ns, "link", "set", dev, "up")
        yield Pair(tb, c1, c2)


def inner_ip(dev: str, last: int) -> str:
    return f"{INNER[dev][1]}.{last}"


def wait_listening(tb: Testbed, ns: str, port: str, flags: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while port not in tb.exec(ns, "ss", flags):
        assert time.monotonic() < deadline, f"nothing listens on {port} in {ns}"
        time.sleep(0.05)


@pytest.mark.parametrize("dev", list(INNER))
def test_ping_across_the_inner_tunnel_small_and_full_size(pair: Pair, dev: str) -> None:
    """Pings of every size up to the inner MTU (DF set: a full one is exactly an overlay-MTU
    frame once wrapped) all come back."""
    full = pair.tb.mtu - INNER_OVERHEAD - 28
    for size in (56, 1000, full):
        out = pair.tb.exec(pair.c1.ns, "ping", "-c", "5", "-i", "0.05", "-W", "2", "-M", "do",
                           "-s", str(size), inner_ip(dev, 2), check=False)  # fmt: skip
        assert " 0% packet loss" in out, f"{size}-octet pings over {dev}: {out}"


#: Receives one TCP connection on port 5301 and prints the SHA-256 of what arrived.
SINK = """import hashlib, socket, sys
s = socket.create_server((sys.argv[1], 5301))
c, _ = s.accept()
h = hashlib.sha256()
while chunk := c.recv(1 << 16):
    h.update(chunk)
print(h.hexdigest())
"""
#: Sends its stdin to port 5301 of argv[1], then closes.
SOURCE = """import socket, sys
socket.create_connection((sys.argv[1], 5301)).sendall(sys.stdin.buffer.read())
"""


def hashed_transfer(tb: Testbed, src: Container, dst: Container, dst_ip: str) -> None:
    """HASHED_BYTES of random data from src to dst_ip (in dst) arrive bit for bit."""
    payload = os.urandom(HASHED_BYTES)
    receiver = subprocess.Popen(
        ["ip", "netns", "exec", dst.ns, sys.executable, "-c", SINK, dst_ip],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_listening(tb, dst.ns, ":5301", "-ltn")
        subprocess.run(["ip", "netns", "exec", src.ns, sys.executable, "-c", SOURCE, dst_ip],
                       input=payload, check=True, timeout=TIMEOUT)  # fmt: skip
        digest, _ = receiver.communicate(timeout=TIMEOUT)
    finally:
        Testbed.stop(receiver)
    assert digest.decode().strip() == hashlib.sha256(payload).hexdigest(), f"to {dst_ip}"


@pytest.mark.parametrize("dev", list(INNER))
def test_tcp_across_the_inner_tunnel_delivers_every_byte_intact(pair: Pair, dev: str) -> None:
    """iperf3 -n completes both ways (its own count of what arrived is taken before the last
    bytes land, so delivery is checked by hash), and hashed transfers both ways arrive bit for
    bit (an inner checksum wrongly marked valid would let corruption reach the application)."""
    tb, server_ip = pair.tb, inner_ip(dev, 2)
    for reverse in ((), ("-R",)):
        server = tb.popen("ip", "netns", "exec", pair.c2.ns, "iperf3", "-s", "-1", "-B", server_ip)
        try:
            wait_listening(tb, pair.c2.ns, ":5201", "-ltn")
            out = tb.exec(pair.c1.ns, "iperf3", "-c", server_ip, "-n", str(TCP_BYTES), "-J",
                          *reverse, check=False, timeout=TIMEOUT)  # fmt: skip
        finally:
            tb.stop(server)
        result = json.loads(out)
        assert "error" not in result, f"iperf3 over {dev} {reverse}: {result.get('error')}"
        assert result["end"]["sum_sent"]["bytes"] >= TCP_BYTES
    hashed_transfer(tb, pair.c1, pair.c2, server_ip)
    hashed_transfer(tb, pair.c2, pair.c1, inner_ip(dev, 1))


def dig_answers(out: str) -> dict[str, str]:
    """name -> address of every A record in `dig +noall +answer` output."""
    answers = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[3] == "A":
            answers[fields[0].rstrip(".")] = fields[4]
    return answers


@pytest.mark.parametrize("dev", list(INNER))
def test_dns_across_the_inner_tunnel_under_tcp_load_answers_every_query_right(
    pair: Pair, dev: str
) -> None:
    """While iperf3 pushes TCP through the inner tunnel, dig's UDP queries to a server in the
    far container all get their own, correct answer."""
    tb, server_ip = pair.tb, inner_ip(dev, 2)
    dns = tb.popen("ip", "netns", "exec", pair.c2.ns, sys.executable, str(DNS_SERVER), "serve",
                   "--bind", server_ip)  # fmt: skip
    iperf_server = tb.popen("ip", "netns", "exec", pair.c2.ns, "iperf3", "-s", "-1", "-B",
                            server_ip)  # fmt: skip
    load = None
    try:
        wait_listening(tb, pair.c2.ns, ":53", "-lun")
        wait_listening(tb, pair.c2.ns, ":5201", "-ltn")
        load = subprocess.Popen(
            ["ip", "netns", "exec", pair.c1.ns, "iperf3", "-c", server_ip, "-t",
             str(LOAD_SECONDS)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)  # the transfer is under way
        names = [f"10-{i // 250}-{i % 250}-{i % 7 + 1}.mx.test" for i in range(DNS_QUERIES)]
        queries = [arg for name in names for arg in (name, "A")]
        out = tb.exec(pair.c1.ns, "dig", f"@{server_ip}", "+noall", "+answer", "+tries=3",
                      "+time=2", *queries, check=False, timeout=TIMEOUT)  # fmt: skip
        loaded = load.poll() is None
    finally:
        for p in (load, iperf_server, dns):
            if p is not None:
                Testbed.stop(p)
    answers = dig_answers(out)
    expected = {name: name.split(".")[0].replace("-", ".") for name in names}
    assert answers == expected, (
        f"over {dev}: wrong or missing answers: {expected.items() - answers.items()}"
    )
    assert loaded, "the TCP transfer ended before the queries did: not a loaded test"
