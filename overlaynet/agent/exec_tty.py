"""`exec -t`: the command gets a pseudo-terminal of its own, as docker gives it one.

Without this the command ran on the client's own descriptors: `exec -t c1 tty` said "not a
tty" when the client's stdin was not a terminal, and with one the command shared the client's
terminal session. Here the agent opens a pty, starts the command as the leader of a new session
whose controlling terminal is the pty's slave (`setsid --ctty`, so ^C on the pty reaches it),
and copies between the pty's master and the client's descriptors in two threads. The client's
descriptors are shared with its terminal, so they are never made non-blocking: each copy waits
in select() beside a wake-up pipe the agent writes when the command has ended.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import termios
import threading
from collections.abc import Sequence
from pathlib import Path

import trio

# `setsid --ctty`: a new session whose controlling terminal is stdin (the pty's slave).
SETSID_CTTY = ("setsid", "--ctty")
# <asm-generic/ioctls.h>: unlock a pty's slave; open the slave by the master's fd (Linux 4.13).
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
# Bytes per read: a terminal's output comes in lines, a pty's buffer is 4 KiB.
CHUNK = 65536


def _copy_size(src: int, pty: int) -> None:
    """The client's window size onto the pty, when the client's output is a terminal."""
    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(pty, termios.TIOCSWINSZ, size)


def _write_all(fd: int, data: bytes) -> bool:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except OSError:
            return False
        view = view[n:]
    return True


def _pump(src: int, dst: int, wake: int, drain_on_wake: bool) -> None:
    """Copy `src` to `dst` until `src` ends or `wake` is readable; with `drain_on_wake`, what
    `src` holds by then is copied first (the command's last output)."""
    while True:
        ready, _, _ = select.select([src, wake], [], [])
        if wake in ready and not (drain_on_wake and src in ready):
            return
        try:
            data = os.read(src, CHUNK)
        except OSError:  # EIO: the pty's last slave closed
            return
        if not data or not _write_all(dst, data):
            return


def open_pty(root: Path) -> tuple[int, int]:
    """A pty from the devpts of the container whose root is `root` (`/proc/PID/root`), as
    runc allocates exec's: the slave then has a name inside (`tty` prints /dev/pts/0). A
    container started before its devpts was mounted gets one of the host's."""
    try:
        master = os.open(root / "dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError:
        return os.openpty()
    try:
        fcntl.ioctl(master, TIOCSPTLCK, struct.pack("i", 0))  # unlockpt()
        # The peer by its fd, not a path lookup (which would resolve in the agent's /dev/pts).
        slave = fcntl.ioctl(master, TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    except OSError:
        os.close(master)
        return os.openpty()
    return master, slave


async def run_on_pty(
    argv: Sequence[str], env: dict[str, str], fds: Sequence[int], root: Path
) -> int:
    """Run `argv` on a new pty of the container rooted at `root`, relayed to the client's
    (stdin, stdout, stderr); its exit status. Ends the command if the caller is cancelled (the
    client hung up)."""
    master, slave = open_pty(root)
    wake_r, wake_w = os.pipe()
    try:
        _copy_size(fds[1], master)
        proc = await trio.lowlevel.open_process(
            [*SETSID_CTTY, *argv], stdin=slave, stdout=slave, stderr=slave, env=env
        )
        os.close(slave)
        slave = -1
        out = threading.Thread(target=_pump, args=(master, fds[1], wake_r, True), daemon=True)
        inp = threading.Thread(target=_pump, args=(fds[0], master, wake_r, False), daemon=True)
        out.start()
        inp.start()
        try:
            code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                with trio.CancelScope(shield=True):
                    await proc.wait()
            os.write(wake_w, b"x")
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(out.join)
                await trio.to_thread.run_sync(inp.join)
        return code
    finally:
        for fd in (master, slave, wake_r, wake_w):
            if fd >= 0:
                os.close(fd)
