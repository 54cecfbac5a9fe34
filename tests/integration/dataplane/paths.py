"""What the data-plane tests do across a testbed's overlay: two hosts with a container and a
`vtep_main` each, a short ping, a one-second iperf3 TCP transfer (the test modules' shared
drivers; each asserts on the results itself)."""

from __future__ import annotations

import json
import time
from typing import Any

from overlaynet.lab.testbed import Container, Host, Testbed

TIMEOUT = 30.0  # bounds a hang only


class TwoVteps:
    """Hosts h1 and h2 of `tb` (underlay addresses `.{numbers}`), container c1 on h1 and c2 on
    h2, and a `vtep_main` on each with the `extra` arguments."""

    def __init__(self, tb: Testbed, extra: tuple[str, ...], numbers: tuple[int, int]) -> None:
        self.tb = tb
        self.h1, self.h2 = tb.add_host("h1", numbers[0]), tb.add_host("h2", numbers[1])
        self.c1 = tb.add_container(self.h1, "c1", 2)
        self.c2 = tb.add_container(self.h2, "c2", 3)
        self.vteps = {
            "h1": tb.start_vtep(self.h1, [self.h2], extra=extra),
            "h2": tb.start_vtep(self.h2, [self.h1], extra=extra),
        }

    def stats(self, host: Host) -> dict[str, Any]:
        """Every counter of `host`'s running VTEP (`Testbed.vtep_stats`)."""
        return self.tb.vtep_stats(host, self.vteps[host.name])

    def network(self, host: Host) -> dict[str, Any]:
        """The testbed network's part of them."""
        doc: dict[str, Any] = self.stats(host)["networks"][str(self.tb.vni)]
        return doc


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
