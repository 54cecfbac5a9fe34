"""Namespaces for the DNS integration tests: Docker's tutorial topology, built and torn down here.

alpine1 and alpine2 sit on the user bridge `alpine-net` (172.18.0.0/16), alpine3 on the default
`bridge` (172.17.0.0/16); both bridges live in a switch namespace. Every namespace is named
`onet-tdns-<pid>-…` and removed even when a test fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio

from overlaynet.dns.records import DnsTable, NameRecord, Network, RecordKind
from overlaynet.dns.server import DnsServer
from tests.integration.dns.nshelp import PREFIX, Topology, ip, sh


def _add_netns(name: str, created: list[str]) -> None:
    sh("ip", "netns", "add", name)
    created.append(name)
    sh("ip", "-n", name, "link", "set", "lo", "up")


def _plug(container: str, switch: str, bridge: str, port: str, cidr: str) -> None:
    # Created inside the container's namespace, the peer moved straight into the switch's:
    # nothing ever appears in the root namespace.
    sh(
        "ip",
        "-n",
        container,
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        port,
        "netns",
        switch,
    )
    sh("ip", "-n", switch, "link", "set", port, "master", bridge, "up")
    sh("ip", "-n", container, "addr", "add", cidr, "dev", "eth0")
    sh("ip", "-n", container, "link", "set", "eth0", "up")


@pytest.fixture
def netns_factory() -> Iterator[list[str]]:
    """Collects namespace names; every one of them is deleted at teardown."""
    created: list[str] = []
    try:
        yield created
    finally:
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def topology(netns_factory: list[str], tmp_path: Path) -> Topology:
    names = Topology(
        switch=PREFIX + "sw",
        alpine1=PREFIX + "alpine1",
        alpine2=PREFIX + "alpine2",
        alpine3=PREFIX + "alpine3",
        resolv_conf=tmp_path / "resolv.conf",
    )
    for name in (names.switch, names.alpine1, names.alpine2, names.alpine3):
        _add_netns(name, netns_factory)
    for bridge in ("br-alpine", "br-default"):
        sh("ip", "-n", names.switch, "link", "add", bridge, "type", "bridge")
        sh("ip", "-n", names.switch, "link", "set", bridge, "up")
    _plug(names.alpine1, names.switch, "br-alpine", "v1", "172.18.0.2/16")
    _plug(names.alpine2, names.switch, "br-alpine", "v2", "172.18.0.3/16")
    _plug(names.alpine3, names.switch, "br-default", "v3", "172.17.0.2/16")
    # What the agent writes into each container's mount namespace (Docker's embedded DNS).
    names.resolv_conf.write_text("nameserver 127.0.0.11\noptions ndots:0 timeout:2 attempts:1\n")
    return names


@pytest.fixture
def table() -> DnsTable:
    t = DnsTable()
    t.set_network(Network("net-alpine", "alpine-net"))
    t.set_network(Network("net-bridge", "bridge", resolves_names=False))
    t.add_record(NameRecord("net-alpine", "alpine1", ip("172.18.0.2")))
    t.add_record(NameRecord("net-alpine", "alpine2", ip("172.18.0.3")))
    t.add_record(NameRecord("net-alpine", "db", ip("172.18.0.3"), RecordKind.ALIAS))
    t.add_record(NameRecord("net-bridge", "alpine3", ip("172.17.0.2")))
    for i in range(60):
        t.add_record(NameRecord("net-alpine", "crowd", ip(f"172.18.1.{i}"), RecordKind.ALIAS))
    t.attach("alpine1", "net-alpine")
    t.attach("alpine2", "net-alpine")
    t.attach("alpine3", "net-bridge")
    return t


@pytest.fixture
async def server(
    nursery: trio.Nursery, table: DnsTable, topology: Topology
) -> AsyncIterator[DnsServer]:
    dns = DnsServer(table)
    await nursery.start(dns.run)
    for container in ("alpine1", "alpine2", "alpine3"):
        await dns.add_container(container, getattr(topology, container))
    try:
        yield dns
    finally:
        for container in list(dns.containers):
            await dns.remove_container(container)
