"""Sockets inside another network namespace, opened without moving the calling thread.

A socket stays in the namespace it was created in for its whole life, so the agent serves
127.0.0.11:53 of every container from its own process. setns(2) changes only the calling
thread's namespace; the switch happens in a fresh thread that ends right after, so no pooled
thread (trio's included) is ever left in a container's namespace. Blocking: from trio, call
`trio.to_thread.run_sync(socket_in_netns, ...)`.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

#: linux/sched.h: the namespace type setns(2) is asked to switch.
CLONE_NEWNET = 0x40000000
#: iproute2's home for named namespaces (`ip netns add NAME`).
NETNS_RUN_DIR = "/run/netns"

_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(netns: str | int) -> str:
    """A namespace as a path: a name under /run/netns, a pid's /proc/PID/ns/net, or a path."""
    if isinstance(netns, int):
        return f"/proc/{netns}/ns/net"
    if "/" in netns:
        return netns
    return os.path.join(NETNS_RUN_DIR, netns)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@dataclass
class _Outcome(Generic[T]):
    value: T | None = None
    error: BaseException | None = None


def run_in_netns(netns: str | int, fn: Callable[[], T]) -> T:
    """Run `fn` in a fresh thread that has entered `netns`; return its result (blocking).

    What `fn` creates keeps the namespace (sockets), and what it opens under /proc/sys/net is
    that namespace's; the calling thread never moves.
    """
    path = netns_path(netns)
    outcome: _Outcome[T] = _Outcome()

    def work() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(target)
                finally:
                    os.close(target)
                try:
                    outcome.value = fn()
                finally:
                    # Hygiene only: this thread ends next, taking its namespace with it.
                    _setns(own)
            finally:
                os.close(own)
        except BaseException as exc:
            outcome.error = exc

    thread = threading.Thread(target=work, name=f"netns:{path}", daemon=True)
    thread.start()
    thread.join()
    if outcome.error is not None:
        raise outcome.error
    return outcome.value  # type: ignore[return-value]


def socket_in_netns(
    netns: str | int,
    family: socket.AddressFamily = socket.AF_INET,
    kind: socket.SocketKind = socket.SOCK_DGRAM,
    *,
    bind: tuple[str, int] | None = None,
    listen: int | None = None,
    reuse_address: bool = False,
) -> socket.socket:
    """Create a socket in `netns`, optionally bound and listening, and return it (blocking).

    Raises OSError when the namespace does not exist or the bind fails (e.g. address in use).
    """

    def create() -> socket.socket:
        sock = socket.socket(family, kind)
        try:
            if reuse_address:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if bind is not None:
                sock.bind(bind)
            if listen is not None:
                sock.listen(listen)
        except BaseException:
            sock.close()
            raise
        return sock

    return run_in_netns(netns, create)


def write_sysctl(netns: str | int, key: str, value: str) -> None:
    """`sysctl -w key=value` inside `netns` (e.g. net.ipv6.conf.all.disable_ipv6)."""

    def write() -> None:
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)

    run_in_netns(netns, write)
