"""host.nssocket: sockets opened in another namespace live there, and the caller never moves."""

from __future__ import annotations

import os
import socket
import subprocess

import pytest
import trio

from overlaynet.host.nssocket import netns_path, socket_in_netns
from tests.integration.dns.nshelp import PREFIX


def test_netns_path_accepts_names_pids_and_paths() -> None:
    assert netns_path("onet-x") == "/run/netns/onet-x"
    assert netns_path(42) == "/proc/42/ns/net"
    assert netns_path("/proc/self/ns/net") == "/proc/self/ns/net"


def test_socket_lives_in_the_namespace_and_caller_stays(netns_factory: list[str]) -> None:
    name = PREFIX + "ns"
    subprocess.run(["ip", "netns", "add", name], check=True)
    netns_factory.append(name)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    before = os.readlink("/proc/thread-self/ns/net")
    listener = socket_in_netns(
        name, socket.AF_INET, socket.SOCK_STREAM, bind=("127.0.0.11", 53), listen=1
    )
    with listener:
        assert os.readlink("/proc/thread-self/ns/net") == before
        listening = subprocess.run(
            ["ip", "netns", "exec", name, "ss", "-Htln", "sport = :53"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert "127.0.0.11:53" in listening
        # A client in the same namespace reaches it.
        client = socket_in_netns(name, socket.AF_INET, socket.SOCK_STREAM)
        with client:
            client.connect(("127.0.0.11", 53))
            conn, _ = listener.accept()
            conn.close()


def test_missing_namespace_raises_oserror() -> None:
    with pytest.raises(OSError):
        socket_in_netns(PREFIX + "does-not-exist")


def test_bind_conflict_raises_and_leaves_nothing_open(netns_factory: list[str]) -> None:
    name = PREFIX + "busy"
    subprocess.run(["ip", "netns", "add", name], check=True)
    netns_factory.append(name)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    first = socket_in_netns(name, bind=("127.0.0.11", 53))
    with first, pytest.raises(OSError):
        socket_in_netns(name, bind=("127.0.0.11", 53))


async def test_callable_from_trio_through_a_worker_thread(netns_factory: list[str]) -> None:
    name = PREFIX + "trio"
    subprocess.run(["ip", "netns", "add", name], check=True)
    netns_factory.append(name)
    sock = await trio.to_thread.run_sync(lambda: socket_in_netns(name))
    with sock:
        assert sock.family == socket.AF_INET
