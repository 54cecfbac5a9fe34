"""Containers from images in real namespaces: a server and a client namespace joined by a veth.

Everything is named onet-timg-<pid>-<hex>-…, lives in the test's own temp folder, and is removed
after the test even when it fails; teardown also asserts nothing stayed mounted."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from overlaynet.host import netns, process
from overlaynet.images import catalog, rootfs

# A subnet used only between the two namespaces of one test (no route leaves them).
SERVER_IP = "10.203.0.2"
CLIENT_IP = "10.203.0.1"
PREFIX = 24


@dataclass
class Container:
    name: str
    dir: Path
    image: catalog.Image
    launch: process.Launch
    started: process.Started

    @property
    def pid(self) -> int:
        return self.started.running.pid

    def log(self) -> str:
        return self.launch.log_file.read_text(errors="replace")

    def exit_code(self) -> int | None:
        return process.read_exit_code(self.launch.exit_file)


@dataclass
class Pair:
    """Two namespaces on one veth, and the containers a test starts in them."""

    server: str
    client: str
    tmp: Path
    images: catalog.Catalog
    containers: list[Container] = field(default_factory=list)

    def run(
        self,
        ref: str,
        cmd: list[str] | None = None,
        *,
        netns_name: str | None = None,
        hosts: str = "",
        resolv: str = "",
        env: list[str] | None = None,
        tty: bool = False,
        attach_stdin: bool = False,
        stdin_fifo: bool = False,
    ) -> Container:
        image = self.images.resolve(ref)
        name = f"c{len(self.containers)}"
        d = self.tmp / name
        d.mkdir()
        (d / "hosts").write_text(f"127.0.0.1\tlocalhost\n{hosts}")
        (d / "resolv.conf").write_text(resolv)
        root = rootfs.prepare(image, d, name, self.tmp / "layers")
        launch = process.Launch(
            netns_path=netns.path(netns_name or self.server),
            cmd=cmd if cmd is not None else list(image.cmd),
            hostname=name,
            hosts_file=d / "hosts",
            resolv_file=d / "resolv.conf",
            log_file=d / "output.log",
            exit_file=d / "exitcode",
            env=image.environment(env or []),
            stdin_fifo=d / "stdin" if stdin_fifo else None,
            root=root,
            tty=tty,
            attach_stdin=attach_stdin,
        )
        c = Container(name, d, image, launch, process.spawn(launch))
        self.containers.append(c)
        return c

    def stop(self, c: Container) -> None:
        process.stop(c.started.running, timeout=2)
        c.started.proc.wait(5)
        for fd in (c.started.pty_master, c.started.stdin_writer):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def in_client(self, *argv: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        """A host tool (busybox) in the client namespace: traffic stays between the two."""
        return subprocess.run(
            ["ip", "netns", "exec", self.client, *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def mounts_mentioning(path: Path) -> list[str]:
    """Lines of our /proc/self/mountinfo that name `path` (mount point or overlay option)."""
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if str(path) in line]


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    base = f"onet-timg-{os.getpid()}-{secrets.token_hex(3)}"
    p = Pair(f"{base}-s", f"{base}-c", tmp_path, catalog.load(environ={}))
    try:
        for name in (p.server, p.client):
            netns.create(name, ipv6=False)
        # Created inside the client namespace and moved straight into the server's: the veth
        # never exists in the root namespace, so it needs no on- name.
        _ip(
            "-n", p.client, "link", "add", "eth0", "type", "veth", "peer", "eth0", "netns", p.server
        )
        for name, ip in ((p.server, SERVER_IP), (p.client, CLIENT_IP)):
            _ip("-n", name, "addr", "add", f"{ip}/{PREFIX}", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
        yield p
    finally:
        for c in p.containers:
            with contextlib.suppress(Exception):
                p.stop(c)
        for name in (p.server, p.client):
            netns.remove(name)
        for c in p.containers:
            rootfs.remove(c.dir)
    leftovers = mounts_mentioning(tmp_path)
    assert not leftovers, f"mounts left behind: {leftovers}"
