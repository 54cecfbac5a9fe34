"""A load-balancing testbed on the real kernel: a client, an LB namespace, three backends and a
host with published ports, all on one bridge in a switch namespace.

Every namespace is `onet-tsvc-<pid>-…` (removed even when a test fails); addresses come from
10.77.0.0/24, which exists only on that bridge. Backends are tiny servers run by threads of this
process on sockets made inside their namespaces: each answers a connection with its own name,
then echoes every line as `NAME:line`, so a client always knows which backend it reached.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from overlaynet.host.nssocket import socket_in_netns

PREFIX = f"onet-tsvc-{os.getpid()}-"
SUBNET_PREFIX = 24
LB_ADDR = "10.77.0.2"
CLIENT_ADDR = "10.77.0.10"
HOST_ADDR = "10.77.0.20"
BACKENDS = {"b1": "10.77.0.11", "b2": "10.77.0.12", "b3": "10.77.0.13"}
# VIPs are not on the bridge: the client routes them to the LB namespace, as a container's
# traffic to a service VIP goes to its network's load balancer.
VIP_RANGE = "10.77.100.0/24"
PORT = 80
# Every socket operation in these tests gives up after this long: a hang fails, never blocks.
IO_TIMEOUT = 3.0


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class NameServer:
    """Accepts on `sock` until stopped; each connection: NAME\\n, then NAME:line per line
    (NAME:peer=ADDR for the line `peer`)."""

    name: str
    sock: socket.socket
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _conns: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        self.sock.settimeout(0.2)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn, peer[0]), daemon=True)
            t.start()

    def _serve(self, conn: socket.socket, peer: str) -> None:
        with contextlib.suppress(OSError):
            conn.settimeout(IO_TIMEOUT * 4)
            conn.sendall(f"{self.name}\n".encode())
            buf = b""
            while not self._stop.is_set():
                data = conn.recv(4096)
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    text = line.decode()
                    # `peer` asks who the backend thinks it is talking to.
                    answer = f"peer={peer}" if text == "peer" else text
                    conn.sendall(f"{self.name}:{answer}\n".encode())
        conn.close()

    def stop(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self._conns:
            with contextlib.suppress(OSError):
                c.close()
        for t in self._threads:
            t.join(timeout=IO_TIMEOUT)


@dataclass
class UdpNameServer:
    """Answers every datagram with its own name."""

    name: str
    sock: socket.socket
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self.sock.settimeout(0.2)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                _, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            with contextlib.suppress(OSError):
                self.sock.sendto(self.name.encode(), peer)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=IO_TIMEOUT)
        self.sock.close()


def udp_who_answers(netns: str, addr: str, port: int) -> str:
    """One datagram from a fresh socket (a new flow), and the name that answers it."""
    sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.settimeout(IO_TIMEOUT)
        # Connected, so an ICMP port-unreachable comes back as ConnectionRefusedError.
        sock.connect((addr, port))
        sock.send(b"who")
        return sock.recv(2048).decode()
    finally:
        sock.close()


@dataclass(frozen=True)
class LbTopology:
    switch: str
    client: str
    lb: str
    host: str
    backends: dict[str, str]  # name -> namespace


class Client:
    """A TCP connection from the client namespace, read line by line."""

    def __init__(self, netns: str, addr: str, port: int) -> None:
        self.sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(IO_TIMEOUT)
        self._buf = b""
        try:
            self.sock.connect((addr, port))
        except BaseException:
            self.sock.close()
            raise

    def line(self) -> str:
        while b"\n" not in self._buf:
            data = self.sock.recv(4096)
            if not data:
                raise ConnectionError("closed by the peer")
            self._buf += data
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode()

    def ask(self, text: str) -> str:
        self.sock.sendall(f"{text}\n".encode())
        return self.line()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def who_answers(netns: str, addr: str, port: int) -> str:
    """Connect, read the backend's name, close."""
    with Client(netns, addr, port) as c:
        return c.line()


def _plug(ns: str, switch: str, port: str, cidr: str) -> None:
    # Made inside the namespace, the peer moved straight into the switch's: nothing ever
    # appears in the root namespace.
    sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", switch)
    sh("ip", "-n", switch, "link", "set", port, "master", "br0", "up")
    sh("ip", "-n", ns, "addr", "add", cidr, "dev", "eth0")
    sh("ip", "-n", ns, "link", "set", "eth0", "up")


@pytest.fixture(scope="module")
def testbed() -> Iterator[LbTopology]:
    created: list[str] = []
    servers: list[NameServer | UdpNameServer] = []

    def add(role: str) -> str:
        name = PREFIX + role
        sh("ip", "netns", "add", name)
        created.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    try:
        switch = add("sw")
        sh("ip", "-n", switch, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", switch, "link", "set", "br0", "up")
        client, lb, host = add("cl"), add("lb"), add("host")
        _plug(client, switch, "p-cl", f"{CLIENT_ADDR}/{SUBNET_PREFIX}")
        _plug(lb, switch, "p-lb", f"{LB_ADDR}/{SUBNET_PREFIX}")
        _plug(host, switch, "p-host", f"{HOST_ADDR}/{SUBNET_PREFIX}")
        sh("ip", "-n", client, "route", "add", VIP_RANGE, "via", LB_ADDR)
        backends = {}
        for name, addr in BACKENDS.items():
            ns = add(name)
            _plug(ns, switch, f"p-{name}", f"{addr}/{SUBNET_PREFIX}")
            backends[name] = ns
            listener = socket_in_netns(
                ns, socket.AF_INET, socket.SOCK_STREAM, bind=("0.0.0.0", PORT), listen=64
            )
            server = NameServer(name, listener)
            server.start()
            servers.append(server)
            udp = socket_in_netns(ns, socket.AF_INET, socket.SOCK_DGRAM, bind=("0.0.0.0", PORT))
            udp_server = UdpNameServer(name, udp)
            udp_server.start()
            servers.append(udp_server)
        yield LbTopology(switch, client, lb, host, backends)
    finally:
        for s in servers:
            s.stop()
        for name in reversed(created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
