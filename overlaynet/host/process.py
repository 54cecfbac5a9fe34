"""Container processes: started in the container's network, mount and UTS namespaces.

The process tree of a container is `sh` (the container's first process, our shim) running the
command. The shim gives the container its own /etc/hosts, /etc/resolv.conf and hostname through
bind mounts in a private mount namespace, and writes the command's exit status to a file, so the
exit code survives an agent that died meanwhile (containerd's shim does the same job).

With an image root (`Launch.root`, from `images.rootfs.prepare`) the shim is the host's static
busybox: it mounts /proc, /sys, the host's busybox and a few device nodes onto the root folder,
pivots into it and detaches the host's tree, so the command sees the image and nothing else.
Those mounts live only in the container's namespace and vanish with its last process. Such a
container also has its own pid namespace. `exec` lands in the same root and pid namespace by
entering the namespaces of `exec_pid(running)` (`nsenter -t PID -m -n -u -p`).

`-t` gives the command a pseudo-terminal whose master the caller holds; `-i` attached gives it a
pipe whose write end the caller holds (closing it is the command's end of input).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# 125: Docker's exit status when the container could not be started by the runtime.
EXIT_SETUP_FAILED = 125
# The PATH a container's first process starts with (Docker's default), unless its env sets one.
LAUNCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Docker's default stop timeout (docker stop -t) before SIGKILL.
STOP_TIMEOUT = 10.0

_SHIM = r"""
bind() { if [ -e "$2" ]; then mount --bind "$1" "$2" || exit 125; fi; }
bind "$ONET_HOSTS" /etc/hosts
bind "$ONET_RESOLV" /etc/resolv.conf
hostname "$ONET_HOSTNAME" 2>/dev/null
# sysfs shows the network namespace of whoever mounted it: remount it so /sys/class/net is ours.
if [ -n "$ONET_SYSFS" ]; then umount -l /sys 2>/dev/null; mount -t sysfs sysfs /sys 2>/dev/null; fi
unset ONET_HOSTS ONET_RESOLV ONET_HOSTNAME ONET_SYSFS
trap '' TERM INT
ONET_EXIT_FILE="$ONET_EXIT"; unset ONET_EXIT
( trap - TERM INT; exec "$@" ); status=$?
echo "$status" > "$ONET_EXIT_FILE"
exit "$status"
"""


# The image-root shim: runs as the host's busybox (static, so it still runs after the pivot).
# The exit file is opened as fd 9 before the pivot: afterwards its path is out of reach.
_ROOT_SHIM = r"""
fail() { echo "overlaynet: cannot set up the container's root filesystem: $*" >&2; exit 125; }
exec 9>"$ONET_EXIT" || fail "exit file"
R=$ONET_ROOT
$ONET_BB mount -t overlay overlay -o "$ONET_LAYERS" "$R" || fail "overlay on $R"
$ONET_BB mount --bind "$ONET_BB" "$R/bin/busybox" || fail busybox
$ONET_BB mount -o remount,bind,ro "$R/bin/busybox" || fail "busybox read-only"
$ONET_BB mount -t proc proc "$R/proc" || fail /proc
# A fresh sysfs shows the network namespace of whoever mounts it: the container's.
$ONET_BB mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$R/sys" || fail /sys
# The image's /dev holds empty files where it wants the host's device nodes (null, tty…).
for f in "$R"/dev/*; do
    d=${f##*/}
    if [ -f "$f" ] && [ ! -L "$f" ]; then $ONET_BB mount --bind "/dev/$d" "$f" || fail "/dev/$d"; fi
done
# `run -t`'s pty is the host's; otherwise a devpts of the container's own, as runc mounts
# one: `exec -t` opens its pty there, so the command's terminal has a name inside.
if [ -n "$ONET_PTS" ]; then $ONET_BB mount --bind /dev/pts "$R/dev/pts" || fail /dev/pts
else $ONET_BB mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$R/dev/pts" \
    || fail /dev/pts; fi
$ONET_BB mount --bind "$ONET_HOSTS" "$R/etc/hosts" || fail /etc/hosts
$ONET_BB mount --bind "$ONET_RESOLV" "$R/etc/resolv.conf" || fail /etc/resolv.conf
$ONET_BB hostname "$ONET_HOSTNAME" || fail hostname
# pivot_root(".", "."): the old root ends up stacked on the new one; detaching it leaves only
# the image (runc does the same, without a put_old folder to hide).
cd "$R" && $ONET_BB pivot_root . . && $ONET_BB umount -l / && cd / || fail pivot_root
unset ONET_SETUP ONET_ROOT ONET_LAYERS ONET_BB ONET_PTS ONET_HOSTS ONET_RESOLV ONET_HOSTNAME
unset ONET_EXIT R
[ -x "$0" ] || fail "$0 is missing from the image"
exec "$0" "$@"
"""

# Inside an image root the container's pid 1 is this script (as `docker run --init` runs
# docker-init): it outlives the command to write its exit status (fd 9, opened before the
# pivot), and, unlike a bare command as pid 1, it lets the command die of SIGTERM at once.
# `images.rootfs` puts it in every busybox layer; a short path, as `ps`/`top` show it.
ROOT_INIT_PATH = "/.overlaynet-init"
ROOT_INIT_SCRIPT = """#!/bin/sh
# overlaynet's init: runs the command, writes its exit status for the runtime to read.
trap '' TERM INT
( trap - TERM INT; exec 9>&-; exec "$@" ); status=$?
echo "$status" >&9
exit "$status"
"""

# `setsid --ctty`: a new session whose controlling terminal is stdin (the pty), so ^C on the
# pty reaches the command; subprocess has no portable way to set one after fork.
_SETSID_CTTY = ["setsid", "--ctty"]
# An image root's container gets its own pid namespace. Its first process is forked by a
# busybox shell outside it (unshare --pid without --fork: the caller's first child is the
# namespace's init), not by `unshare --fork`: util-linux 2.38's unshare exits 1 ("sigprocmask
# unblock failed") when that init is killed by SIGKILL, so `kill -9` of State.Pid read as exit
# 1, not Docker's 137. A shell reports a child killed by signal N as 128+N and exits with it.
# The outer shell ignores SIGTERM/SIGINT (stop signals the command, whose init outlives it to
# write the status); the init is SIGKILLed if the outer shell dies (as --kill-child did).
_PID_NAMESPACE = ["--pid"]
# util-linux's setpriv by path: busybox's shell would run its own applet, which lacks --pdeathsig.
SETPRIV = "/usr/bin/setpriv"
_PID_PARENT = (
    "trap '' TERM INT; "
    f'( trap - TERM INT; exec {SETPRIV} --pdeathsig KILL "$ONET_BB" sh -c \'eval "$ONET_SETUP"\' '
    '"$0" "$@" ); exit $?'
)


@dataclass(frozen=True)
class RootFs:
    """A container's root as an overlay: the image's shared layer under its own upper folder,
    mounted at `target` inside the container's mount namespace (images.rootfs makes these)."""

    lower: Path
    upper: Path
    work: Path  # overlayfs's scratch folder, on the upper folder's filesystem
    target: Path

    def overlay_options(self) -> str:
        return f"lowerdir={self.lower},upperdir={self.upper},workdir={self.work}"


@dataclass(frozen=True)
class Launch:
    netns_path: str | None  # None: the agent's own namespace (network mode `host`)
    cmd: list[str]
    hostname: str
    hosts_file: Path
    resolv_file: Path
    log_file: Path
    exit_file: Path
    env: list[str]
    # `run -i`: stdin is a FIFO that never reaches end-of-file, as an attached stdin would not;
    # so `run -dit IMAGE sh` keeps its shell waiting, as in Docker's tutorial.
    stdin_fifo: Path | None = None
    # The image's root (`images.rootfs.prepare`); None: the host's (the `host` image).
    root: RootFs | None = None
    # `run -t`: stdin, stdout and stderr are a pseudo-terminal; the caller holds its master.
    tty: bool = False
    # `run -i` with a client attached: stdin is a pipe; the caller holds its write end, and
    # closing it ends the command's input (`echo hi | overlaynet run -i alpine cat`).
    attach_stdin: bool = False
    # Where the host's busybox is (the root shim and the image's applets run it).
    busybox: Path = Path("/bin/busybox")
    # `run -i` attached through the API: the client's own stdin, sent with the request
    # (SCM_RIGHTS). The command reads it directly, so the client's end of input is the
    # command's; the caller keeps (and closes) its copy.
    stdin_fd: int | None = None


@dataclass(frozen=True)
class Running:
    pid: int
    start_ticks: int


@dataclass(frozen=True)
class Started:
    """A started container process and the ends of its streams the caller now owns."""

    proc: subprocess.Popen[bytes]
    running: Running
    # -t: read the command's output (and the echo of its input) here, write its input here.
    pty_master: int | None = None
    # -i without -t: the command's stdin; close it to send end-of-file.
    stdin_writer: int | None = None


def start(spec: Launch) -> tuple[subprocess.Popen[bytes], Running]:
    """Start the container's shim; it outlives the agent (own session, not our child group).
    For `-t` or an attached `-i` use `spawn`, which hands back the stream ends."""
    if spec.tty or spec.attach_stdin:
        raise ValueError("a container with -t or attached -i is started with spawn()")
    started = spawn(spec)
    return started.proc, started.running


def spawn(spec: Launch) -> Started:
    """Start the container's shim in its own session; the caller owns the returned stream ends
    (`pty_master`, `stdin_writer`) and must close them."""
    if sum((spec.attach_stdin, spec.stdin_fifo is not None, spec.stdin_fd is not None)) > 1:
        raise ValueError("stdin is one of: attached (attach_stdin), a FIFO, the client's fd")
    spec.exit_file.unlink(missing_ok=True)
    argv = ["unshare", "--mount", "--uts", "--propagation", "private"]
    if spec.root is None:
        argv += ["--", "sh", "-c", _SHIM, "sh", *spec.cmd]
    else:
        # An image root also gets its own pid namespace, so `ps`/`top` inside show the
        # container's processes only (its /proc is mounted after the fork). A busybox shell
        # stays as the parent, passing on the exit status (_PID_PARENT); if it is killed, so
        # is the container. The set-up script travels in the environment, so `overlaynet top`
        # (ps on the host) shows a short line for the container's first process.
        shim = [str(spec.busybox), "sh", "-c", _PID_PARENT, ROOT_INIT_PATH, *spec.cmd]
        argv += [*_PID_NAMESPACE, "--", *shim]
    if spec.netns_path is not None:
        argv = ["nsenter", f"--net={spec.netns_path}", "--", *argv]
    if spec.tty:
        argv = [*_SETSID_CTTY, *argv]
    env = {
        "PATH": LAUNCH_PATH,
        "HOME": "/root",
        "HOSTNAME": spec.hostname,
        "ONET_HOSTS": str(spec.hosts_file),
        "ONET_RESOLV": str(spec.resolv_file),
        "ONET_HOSTNAME": spec.hostname,
        "ONET_EXIT": str(spec.exit_file),
        "ONET_SYSFS": "1" if spec.netns_path is not None else "",
    }
    if spec.tty:
        env["TERM"] = "xterm"  # Docker's default for -t
    if spec.root is not None:
        env["ONET_SETUP"] = _ROOT_SHIM
        env["ONET_ROOT"] = str(spec.root.target)
        env["ONET_LAYERS"] = spec.root.overlay_options()
        env["ONET_BB"] = str(spec.busybox)
        env["ONET_PTS"] = "1" if spec.tty else ""
        del env["ONET_SYSFS"]
    for item in spec.env:
        key, _, value = item.partition("=")
        env[key] = value
    mine: list[int] = []  # fds to close here once the child has its copies
    kept: list[int] = []  # fds handed to the caller (closed here only if the start fails)
    stdin: int = subprocess.DEVNULL
    out: int | None = None
    try:
        if spec.tty:
            master, slave = os.openpty()
            kept.append(master)
            mine.append(slave)
            os.set_inheritable(master, False)
            stdin = out = slave
        elif spec.attach_stdin:
            reader, writer = os.pipe()
            kept.append(writer)
            mine.append(reader)
            stdin = reader
        elif spec.stdin_fd is not None:
            stdin = spec.stdin_fd
        elif spec.stdin_fifo is not None:
            if not spec.stdin_fifo.exists():
                os.mkfifo(spec.stdin_fifo, 0o600)
            # Opened read-write, the FIFO always has a writer: reads block instead of ending.
            stdin = os.open(spec.stdin_fifo, os.O_RDWR)
            mine.append(stdin)
        with open(spec.log_file, "ab") as log:
            target: int = out if out is not None else log.fileno()
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=target,
                stderr=target,
                env=env,
                # With -t, `setsid --ctty` makes the session (it must not lead a group already).
                start_new_session=not spec.tty,
                close_fds=True,
            )
    except BaseException:
        for fd in kept:
            os.close(fd)
        raise
    finally:
        for fd in mine:
            os.close(fd)
    running = Running(proc.pid, start_ticks(proc.pid) or 0)
    return Started(
        proc,
        running,
        pty_master=kept[0] if spec.tty else None,
        stdin_writer=kept[0] if spec.attach_stdin else None,
    )


# The pty relay (`run -t`): host `cat`s in a session of their own, so a container's terminal
# outlives the agent as the container does (a master closed with the agent would hang the
# terminal up: SIGHUP to the container). Its fd 0 is the master (read-write), fd 1 the log
# (append), fd 2 the client's input when $1 is set (dash redirects only fds 0-9, so the
# descriptors come as the standard three). Output ends when the last slave closes (EIO), input
# when the client's input ends; coreutils cat copies without buffering.
# (An asynchronous list's stdin is /dev/null before its own redirections: the master goes by
# fd 3 to the input cat.)
_TTY_RELAY = (
    'if [ -n "$1" ]; then exec 3<&0; cat <&2 >&3 3<&- 2>/dev/null & exec 3<&-; fi; '
    "exec 2>/dev/null; exec cat"
)


def relay_tty(master: int, log_file: Path, stdin_fd: int | None = None) -> subprocess.Popen[bytes]:
    """`run -t`: the pty's output goes to the container's log, as Docker's log gets a tty's
    output (the client follows the log); the client's input (`-i`: the read end of its stdin
    pipe), if any, goes into the pty. Takes ownership of both descriptors (closed here once
    the relay has its copies)."""
    try:
        with open(log_file, "ab") as log:
            return subprocess.Popen(
                ["sh", "-c", _TTY_RELAY, "tty-relay", "" if stdin_fd is None else "input"],
                stdin=master,
                stdout=log,
                stderr=subprocess.DEVNULL if stdin_fd is None else stdin_fd,
                start_new_session=True,
            )
    finally:
        os.close(master)
        if stdin_fd is not None:
            os.close(stdin_fd)


def start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot: with the pid, names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    if fields[0] == "Z":
        return None
    return int(fields[19])


def exec_pid(run: Running) -> int | None:
    """The process to enter for `exec` (`nsenter -t PID -m -n -u -p`): the container's first
    process inside its own pid namespace (unshare's forked child) when it has one, else the
    started process itself. None if the container is not running."""
    if not alive(run):
        return None
    try:
        children = Path(f"/proc/{run.pid}/task/{run.pid}/children").read_text().split()
        mine = os.stat(f"/proc/{run.pid}/ns/pid").st_ino
        for child in children:
            if os.stat(f"/proc/{child}/ns/pid").st_ino != mine:
                return int(child)
    except OSError:
        return None
    return run.pid


# How long a start waits for an image root to be entered: the set-up is a dozen mounts (a few
# ms); a busy host may take far longer, and a start that gives up only loses that guarantee.
READY_TIMEOUT = 10.0


def wait_in_root(run: Running, timeout: float = READY_TIMEOUT) -> bool:
    """Wait until the container's set-up is over and its init runs inside the image root, so
    an `exec` right after `run -d` lands in the image, not in the half-built mount namespace
    (between pivot_root and detaching the old root, entering it shows the host's files).
    False if the container ended or `timeout` passed first."""
    # The set-up shim runs as `busybox sh -c …`; once done it execs the init script, whose
    # interpreter line makes the kernel run `/bin/sh /.overlaynet-init …`.
    started = [b"/bin/sh", ROOT_INIT_PATH.encode()]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = exec_pid(run)
        if pid is None:
            return False
        if pid != run.pid:
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                argv = []
            if argv[:2] == started:
                return True
        time.sleep(0.002)
    return False


def alive(run: Running) -> bool:
    return start_ticks(run.pid) == run.start_ticks


def read_exit_code(exit_file: Path) -> int | None:
    try:
        return int(exit_file.read_text().strip())
    except (OSError, ValueError):
        return None


def stop(run: Running, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM the container's process group, SIGKILL it after `timeout` seconds."""
    if not alive(run):
        return
    _signal_group(run.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(run.pid):
            return
        time.sleep(0.05)
    _signal_group(run.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while _group_alive(run.pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process is left in the process group."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def top(session: int) -> str:
    """`ps -ef` columns for the processes of a container (one session per container)."""
    out = subprocess.run(
        ["ps", "-o", "uid,pid,ppid,c,stime,tty,time,cmd", "--sid", str(session)],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout
