"""The agent never forks itself to reach a namespace: a fork of its multi-threaded process can
hang in the child, which holds a copy of every descriptor, the API's listening socket included
(CI saw an agent killed -9 leave such an orphan: its socket accepted and never answered, and no
new agent could start). Namespaces are made and entered by threads, and the links code's
netlink sockets are opened the same way; these tests make any fork in those paths an error."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Interface

import pytest

from overlaynet.host import links, netns

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


@pytest.fixture
def no_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> int:
        raise AssertionError("os.fork() called: a namespace was reached by forking")

    monkeypatch.setattr(os, "fork", refuse)


@pytest.fixture
def ns_name() -> Iterator[str]:
    name = f"onet-t{uuid.uuid4().hex[:8]}-nofork"
    try:
        yield name
    finally:
        netns.remove(name)


def test_a_namespace_is_created_without_a_fork_and_is_a_new_one(
    no_fork: None, ns_name: str
) -> None:
    netns.create(ns_name)
    assert netns.exists(ns_name)
    assert netns.inode(ns_name) != os.stat("/proc/self/ns/net").st_ino
    assert [link.ifname for link in links.dump(ns_name)] == ["lo"]
    # The creating thread moved, the process did not: our own links are still ours.
    assert "lo" in [link.ifname for link in links.dump()]


def test_links_inside_a_namespace_are_made_without_a_fork(no_fork: None, ns_name: str) -> None:
    netns.create(ns_name)
    with links.ipr(ns_name) as ipr:
        ipr.link("add", ifname="on-br-nofork", kind="bridge")
        idx = links.index_of(ipr, "on-br-nofork")
        ipr.addr("add", index=idx, address="10.77.0.1", prefixlen=24)
    links.set_up("on-br-nofork", netns=ns_name)
    assert links.exists("on-br-nofork", netns=ns_name)
    assert not links.exists("on-br-nofork")
    assert ("on-br-nofork", IPv4Interface("10.77.0.1/24")) in links.addresses(ns_name)
