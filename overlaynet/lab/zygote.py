"""A fork server for a lab's agents: the agent's modules are imported once, and every host's
supervisor and agent is a fork of that process, so no agent pays for its imports again
(~0.45 s of CPU each) and their pages stay shared copy-on-write.

    python -m overlaynet.lab.zygote [--swarm] LAB HOST [HOST…]

The zygote imports `overlaynet.agent.daemon`, single-threaded (no trio run, no thread: a fork
of it is safe), then for each host forks a supervisor; once every supervisor has written its
pid file it prints READY, closes its stdio (its caller reads to EOF) and stays on as their
parent only to reap them, ending with the last.

A supervisor starts a session of its own (as `start_new_session` did), takes the host's
`agent.out` as its stdout and stderr, enters the host's network namespace (setns, alone in its
process) and runs `supervise.supervise`, whose `start` forks the agent (no exec): a restart
after a crash forks again from the supervisor. The forked agent gets fresh state: default signal
handlers and mask, a reseeded `random`, the logging set up by `daemon.main`, and no descriptor
of the zygote's.

It preloads what every agent runs from its start, no more (issue 15): the agent leaves what only
some hosts use (a manager's Raft, DNS answering, the VTEP, cryptography) to be imported where it
is used, and a module preloaded here would sit in every agent's RSS. `--swarm` (a lab whose hosts
are, or are about to be, swarm members) adds `SWARM_MODULES`, which every member then imports
within a second: shared from here instead of a private copy in each agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import os
import random
import select
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from overlaynet.lab import supervise
from overlaynet.paths import HostPaths

#: linux/sched.h: setns(2)'s namespace type (os.setns arrives in Python 3.12).
CLONE_NEWNET = 0x40000000
#: linux/prctl.h: names the process in `ps -o comm` / `top` (15 bytes at most).
PR_SET_NAME = 15
#: A supervisor writes its pid file within milliseconds of its fork; this bounds the wait for
#: all of them on a machine that is very busy.
READY_TIMEOUT = 30.0
#: Signals the supervisor handles (stop) and the agent must not inherit handled that way.
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: Exit code of a supervisor that could not set itself up (sysexits.h EX_SOFTWARE).
EX_SOFTWARE = 70

#: What every swarm member imports from its first exchange with the managers: cryptography's
#: AES-GCM and HKDF, which seal its cluster requests (cluster/protocol.py). ~7 MiB a copy.
SWARM_MODULES = (
    "cryptography.exceptions",
    "cryptography.hazmat.primitives.hashes",
    "cryptography.hazmat.primitives.ciphers.aead",
    "cryptography.hazmat.primitives.kdf.hkdf",
)
#: The option that asks for them (before the lab's name).
SWARM_OPTION = "--swarm"

#: The zygote's last line to its caller when every supervisor started.
READY = "zygote: ready"

_libc = ctypes.CDLL(None, use_errno=True)


class ForkedAgent:
    """An agent forked from its supervisor, waited for as `subprocess.Popen` is."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            try:
                _, status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                # The stop handler's `poll()` reaped it while this wait was interrupted.
                if self.returncode is None:
                    raise
            else:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        # Only while not reaped: the pid of a reaped child may belong to another process.
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def agent_argv(lab: str, host: str) -> list[str]:
    """The agent's arguments, as `python -m overlaynet.agent` would get them."""
    paths = HostPaths(host, lab)
    return ["--host", host, "--lab", lab, "--log-file", str(paths.log_file)]


def run_agent(argv: list[str]) -> int:
    """The agent's own `main`, as `python -m overlaynet.agent ARGV` runs it."""
    from overlaynet.agent import daemon

    return daemon.main(argv)


def fork_agent(run: Callable[[], int]) -> ForkedAgent:
    """Fork the agent (`run()` in the child, its result the exit code) from this
    single-threaded supervisor. The stop signals are blocked across the fork so the child
    never runs the supervisor's handler."""
    _flush_stdio()
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        pid = os.fork()
        if pid == 0:
            _agent_main(run)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    return ForkedAgent(pid)


def _agent_main(run: Callable[[], int]) -> NoReturn:
    """The forked agent: fresh process state, then the agent's own `main`. Never returns:
    `os._exit` keeps the supervisor's `finally` (its pid file) out of the agent."""
    code = 1
    try:
        # As a freshly started interpreter has them: SIGTERM kills until the agent's trio
        # loop takes it over, SIGINT raises KeyboardInterrupt.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        # The random module's state is a copy of the zygote's: every agent would draw the same
        # ids and jitter (Python reseeds after os.fork, this makes it explicit).
        random.seed()
        _name_process("onet-agent")
        code = run()
    except SystemExit as e:
        # As the interpreter does on exit: a message is printed and means 1.
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        _flush_stdio()
        os._exit(code)


def spawn_supervisor(lab: str, host: str) -> tuple[int, int]:
    """Fork the supervisor of `host`: its pid, and a descriptor that reads EOF once its pid
    file is written (or it died): `wait_ready` waits for many at once."""
    read_end, write_end = os.pipe()
    _flush_stdio()
    pid = os.fork()
    if pid == 0:
        code = EX_SOFTWARE
        try:
            os.close(read_end)
            code = _supervisor_main(lab, host, write_end)
        except BaseException:
            traceback.print_exc()
        finally:
            _flush_stdio()
            os._exit(code)
    # Closed at once, so no later supervisor inherits it and every EOF comes from its child.
    os.close(write_end)
    return pid, read_end


def wait_ready(fds: list[int], timeout: float = READY_TIMEOUT) -> list[int]:
    """Wait until every descriptor of `spawn_supervisor` reads EOF, at most `timeout` s; closes
    them all and returns those still not ready."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    waiting = set(fds)
    deadline = time.monotonic() + timeout
    while waiting and (left := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(left * 1000):
            # Nothing is ever written: readable means EOF (or an error, as final).
            poller.unregister(fd)
            waiting.discard(fd)
    for fd in fds:
        os.close(fd)
    return sorted(waiting)


def _supervisor_main(lab: str, host: str, ready_fd: int) -> int:
    paths = HostPaths(host, lab)
    assert paths.netns is not None
    os.setsid()
    devnull = os.open(os.devnull, os.O_RDONLY)
    out = os.open(paths.state_dir / "agent.out", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.dup2(devnull, 0)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(devnull)
    os.close(out)
    # The zygote holds no descriptor of its own beyond stdio (see `preload`); whatever it was
    # given besides is not the host's to keep.
    os.closerange(3, ready_fd)
    os.closerange(ready_fd + 1, os.sysconf("SC_OPEN_MAX"))
    os.chdir("/")
    _enter_netns(paths.netns)
    _name_process("onet-supervise")
    argv = agent_argv(lab, host)
    return supervise.supervise(
        supervise_pid_file(lab, host),
        lambda: fork_agent(lambda: run_agent(argv)),
        lambda: os.close(ready_fd),
    )


def supervise_pid_file(lab: str, host: str) -> Path:
    """Where the host's supervisor writes its pid (`lifecycle.supervisor_pid` reads it)."""
    return HostPaths(host, lab).state_dir / "supervisor.pid"


def _enter_netns(name: str) -> None:
    try:
        fd = os.open(f"/run/netns/{name}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"cannot enter network namespace {name}: {e.strerror}") from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"cannot enter network namespace {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _name_process(name: str) -> None:
    _libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def _flush_stdio() -> None:
    # Text buffered before a fork would be written twice, once by each process.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()


def preload(swarm: bool = False) -> None:
    """Import what every agent runs from its start (and, for a swarm's hosts, `SWARM_MODULES`),
    then freeze the heap: the collector of a forked agent then leaves those objects (and their
    pages) alone. Refuses to go on with a thread running: a fork copies a lock another thread
    holds, and nothing would ever release it."""
    from overlaynet.agent import daemon  # noqa: F401

    for name in SWARM_MODULES if swarm else ():
        importlib.import_module(name)

    gc.collect()
    gc.freeze()
    if threading.active_count() != 1:
        raise RuntimeError(f"{threading.active_count()} threads after the imports; cannot fork")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    swarm = bool(args) and args[0] == SWARM_OPTION
    args = args[1:] if swarm else args
    if not args:
        print(
            "usage: python -m overlaynet.lab.zygote [--swarm] LAB [HOST…] "
            "(or hosts on stdin, one a line)",
            file=sys.stderr,
        )
        return 2
    # Hosts come on stdin from `lifecycle.start_agents`, which keeps every supervisor's and
    # agent's command line (a copy of this one) short.
    lab, hosts = args[0], args[1:] or sys.stdin.read().split()
    _name_process("onet-zygote")
    preload(swarm)
    failed: list[str] = []
    ready: dict[int, str] = {}
    # All forked first, then waited for together: a wait per fork would add a scheduling
    # round-trip per host on a machine busy with the agents already started.
    for host in hosts:
        try:
            ready[spawn_supervisor(lab, host)[1]] = host
        except OSError as e:
            print(f"zygote: cannot start the supervisor of {host}: {e}", file=sys.stderr)
            failed.append(host)
    late = wait_ready(list(ready))
    if late:
        print(f"zygote: {len(late)} supervisors still starting", file=sys.stderr, flush=True)
    for host in (h for fd, h in ready.items() if fd not in late):
        if not supervise_pid_file(lab, host).exists():
            out = HostPaths(host, lab).state_dir / "agent.out"
            print(f"zygote: the supervisor of {host} ended at once (see {out})", file=sys.stderr)
            failed.append(host)
    sys.stderr.flush()
    print(READY if not failed else f"zygote: {len(failed)} of {len(hosts)} not started", flush=True)
    # The caller reads until EOF: let go of its pipe, then stay the supervisors' parent.
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    reap_children()
    return 0


def reap_children() -> None:
    """Wait for every supervisor to end. A supervisor orphaned instead would be reaped by
    init, and an init that does not reap (a container's) would keep each one as a zombie."""
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


if __name__ == "__main__":
    sys.exit(main())
