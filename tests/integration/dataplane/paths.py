"""What the data-plane tests do across a testbed's overlay: a short ping, a one-second iperf3
TCP transfer (the test modules' shared drivers; each asserts on the results itself)."""

from __future__ import annotations

import json
import time
from typing import Any

from overlaynet.lab.testbed import Container, Testbed

TIMEOUT = 30.0  # bounds a hang only


def ping(tb: Testbed, src: Container, dst: Container, count: int = 3) -> str:
    """`count` pings 0.2 s apart from `src` to `dst` (fails the test unless answered)."""
    return tb.exec(src.ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", dst.ip)


def iperf3(
    tb: Testbed,
    client: Container,
    server: Container,
    *,
    streams: int = 1,
    reverse: bool = False,
    extra: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A one-second iperf3 transfer client -> server (`reverse`: server -> client) over
    `streams` connections, TCP unless `extra` client options say otherwise (`-u -b 20M`);
    iperf3's JSON result."""
    srv = tb.popen("ip", "netns", "exec", server.ns, "iperf3", "-s", "-1", "-B", server.ip)
    try:
        deadline = time.monotonic() + TIMEOUT
        while ":5201" not in tb.exec(server.ns, "ss", "-ltn"):
            assert time.monotonic() < deadline, "iperf3 server did not listen"
            time.sleep(0.05)
        args = ["iperf3", "-c", server.ip, "-t", "1", "-J", "-P", str(streams)]
        result: dict[str, Any] = json.loads(
            tb.exec(client.ns, *args, *(["-R"] if reverse else []), *extra, timeout=TIMEOUT)
        )
        return result
    finally:
        Testbed.stop(srv)
