"""Container processes: started in the container's network, mount and UTS namespaces.

The process tree of a container is `sh` (pid 1 of the container, our shim) running the command.
The shim gives the container its own /etc/hosts, /etc/resolv.conf and hostname through bind
mounts in a private mount namespace, and writes the command's exit status to a file, so the exit
code survives an agent that died meanwhile (containerd's shim does the same job).
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
# Docker's default stop timeout (docker stop -t) before SIGKILL.
STOP_TIMEOUT = 10.0
# With no CMD a container runs this, like an image whose entrypoint waits forever.
IDLE_COMMAND = ["sleep", "infinity"]

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


@dataclass(frozen=True)
class Running:
    pid: int
    start_ticks: int


def start(spec: Launch) -> tuple[subprocess.Popen[bytes], Running]:
    """Start the container's shim; it outlives the agent (own session, not our child group)."""
    spec.exit_file.unlink(missing_ok=True)
    argv = ["unshare", "--mount", "--uts", "--propagation", "private", "--"]
    argv += ["sh", "-c", _SHIM, "sh", *spec.cmd]
    if spec.netns_path is not None:
        argv = ["nsenter", f"--net={spec.netns_path}", "--", *argv]
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "HOSTNAME": spec.hostname,
        "ONET_HOSTS": str(spec.hosts_file),
        "ONET_RESOLV": str(spec.resolv_file),
        "ONET_HOSTNAME": spec.hostname,
        "ONET_EXIT": str(spec.exit_file),
        "ONET_SYSFS": "1" if spec.netns_path is not None else "",
    }
    for item in spec.env:
        key, _, value = item.partition("=")
        env[key] = value
    stdin: int = subprocess.DEVNULL
    if spec.stdin_fifo is not None:
        if not spec.stdin_fifo.exists():
            os.mkfifo(spec.stdin_fifo, 0o600)
        # Opened read-write, the FIFO always has a writer: reads block instead of ending.
        stdin = os.open(spec.stdin_fifo, os.O_RDWR)
    try:
        with open(spec.log_file, "ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
    finally:
        if stdin != subprocess.DEVNULL:
            os.close(stdin)
    return proc, Running(proc.pid, start_ticks(proc.pid) or 0)


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
