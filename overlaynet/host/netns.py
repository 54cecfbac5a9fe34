"""Network namespaces: create, remove, list, and find or stop the processes inside them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import threading
import time
from pathlib import Path

from pyroute2 import netns as _netns

NETNS_DIR = Path("/run/netns")
#: linux/sched.h
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def path(name: str) -> str:
    return str(NETNS_DIR / name)


def exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def create(name: str, ipv6: bool = True) -> None:
    """Create a named namespace with `lo` up (idempotent); `ipv6=False` turns IPv6 off in it,
    as Docker does in containers unless asked otherwise."""
    if not exists(name):
        _create(name)
    from overlaynet.host import links, nssocket

    if not ipv6:
        for scope in ("all", "default"):
            nssocket.write_sysctl(name, f"net.ipv6.conf.{scope}.disable_ipv6", "1")
    links.set_up("lo", netns=name)


def _create(name: str) -> None:
    """`ip netns add NAME` without a fork: a fresh thread unshares its network namespace and
    pyroute2 bind-mounts that thread's namespace on /run/netns/NAME.

    pyroute2's own `netns.create` forks the calling process to unshare, and a fork of the
    multi-threaded agent can hang in the child holding a copy of every descriptor (see
    `links.rtnl_socket_in`). unshare(CLONE_NEWNET) moves only the calling thread, which ends
    right after.
    """
    errors: list[BaseException] = []

    def work() -> None:
        try:
            if _libc.unshare(CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"unshare: {os.strerror(err)}")
            _netns.attach(name, "thread-self")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"netns-create:{name}", daemon=True)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def remove(name: str) -> None:
    """Remove a named namespace; processes still inside are stopped first (idempotent)."""
    if not exists(name):
        return
    kill_pids(name)
    with contextlib.suppress(FileNotFoundError):
        _netns.remove(name)


def list_names(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


def inode(name_or_path: str) -> int | None:
    p = name_or_path if name_or_path.startswith("/") else path(name_or_path)
    try:
        return os.stat(p).st_ino
    except OSError:
        return None


def pids(name: str) -> list[int]:
    """Processes whose network namespace is this one (what `ip netns pids` shows)."""
    want = inode(name)
    if want is None:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == want:
                found.append(int(entry))
        except OSError:
            continue
    return found


def kill_pids(name: str, grace: float = 2.0) -> None:
    """SIGTERM everything in the namespace, then SIGKILL what is left after `grace` seconds."""
    me = os.getpid()
    victims = [p for p in pids(name) if p != me]
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 1.0)):
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while victims and time.monotonic() < deadline:
            victims = [p for p in victims if _alive(p)]
            if victims:
                time.sleep(0.05)
        if not victims:
            return


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            # A zombie has left the namespace in all but name; its parent reaps it.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
