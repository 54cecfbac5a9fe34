"""Containers started from images: their own root, exec into it, detached top, -i and -t,
exit codes, and nothing left mounted or on disk afterwards."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import dnslib

from overlaynet.host import nssocket, process
from overlaynet.images import rootfs
from tests.integration.images.conftest import Container, Pair, mounts_mentioning
from tests.integration.labs import wait_until

IMAGE_TOP_LEVEL = {
    *("bin", "dev", "etc", "home", "mnt", "proc", "root", "run"),
    *("sbin", "srv", "sys", "tmp", "usr", "var"),
}


def _ended(c: Container) -> int:
    """The container's exit status once its process has ended (bounded wait)."""
    return c.started.proc.wait(timeout=20)


def test_ls_root_shows_the_image_not_the_host(pair: Pair) -> None:
    c = pair.run("alpine", ["sh", "-c", "ls /; echo --; ls -A /"])
    assert _ended(c) == 0, c.log()
    plain, everything = c.log().split("--\n")
    assert set(plain.split()) == IMAGE_TOP_LEVEL
    # Hidden, as Docker's /.dockerenv: the init that records the exit status.
    assert set(everything.split()) == {*IMAGE_TOP_LEVEL, process.ROOT_INIT_PATH.lstrip("/")}
    assert c.exit_code() == 0


def test_the_container_sees_its_hostname_hosts_and_users(pair: Pair) -> None:
    script = "hostname; cat /etc/hostname; cat /etc/hosts; id -un; echo $PATH"
    c = pair.run("alpine", ["sh", "-c", script], hosts="10.203.0.9\tpeer\n")
    assert _ended(c) == 0, c.log()
    lines = c.log().splitlines()
    assert lines[:2] == [c.name, c.name]
    assert "10.203.0.9\tpeer" in lines
    assert "root" in lines
    assert lines[-1] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def test_busybox_cannot_be_changed_from_inside(pair: Pair) -> None:
    # The host's busybox is bound read-only, so no container can rewrite it for the others.
    c = pair.run(
        "alpine", ["sh", "-c", "grep ' /bin/busybox ' /proc/self/mountinfo; : > /bin/busybox"]
    )
    assert _ended(c) != 0
    mount_options = c.log().splitlines()[0].split()[5].split(",")
    assert "ro" in mount_options
    assert "can't create /bin/busybox" in c.log()
    assert rootfs.BUSYBOX.stat().st_size > 1000


def test_exec_with_nsenter_lands_in_the_container_root(pair: Pair) -> None:
    c = pair.run("alpine", ["sleep", "60"])
    assert wait_until(lambda: _root_mounted(c.pid)), c.log()
    target = process.exec_pid(c.started.running)
    assert target is not None
    enter = ["nsenter", "-t", str(target), "-m", "-n", "-u", "-p", "--"]
    out = subprocess.run(
        [*enter, "sh", "-c", "ls /; hostname; ps -o pid,args"],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    lines = out.stdout.splitlines()
    assert set(lines[: len(IMAGE_TOP_LEVEL)]) == IMAGE_TOP_LEVEL
    assert lines[len(IMAGE_TOP_LEVEL)] == c.name
    # Its own pid namespace: our init is 1, then the command, then what exec started.
    processes = [line.split(None, 1) for line in lines[len(IMAGE_TOP_LEVEL) + 2 :]]
    assert processes[0][0] == "1"
    assert processes[0][1].endswith(f"/bin/sh {process.ROOT_INIT_PATH} sleep 60")
    assert "sleep 60" in [args for _, args in processes[1:]]
    assert all(int(pid) < 100 for pid, _ in processes), processes


def _command_runs(c: Container, args: str) -> bool:
    """Whether a process of `c`'s session runs `args` (its init's child, not the init)."""
    return any(
        line.endswith(f" {args}") and process.ROOT_INIT_PATH not in line
        for line in process.top(c.pid).splitlines()[1:]
    )


def test_stop_terminates_the_command_and_records_its_status(pair: Pair) -> None:
    c = pair.run("alpine", ["sleep", "60"])
    # Stopped once the command runs under its init (as the agent's start waits for), not while
    # the root is still being set up: a SIGTERM then ends the set-up shell before any init
    # exists to write a status (a flake under load: exit code None).
    assert wait_until(lambda: _command_runs(c, "sleep 60")), c.log()
    pair.stop(c)
    assert c.exit_code() == 143  # 128 + SIGTERM, written by the shim inside the root
    assert c.started.proc.returncode == 143


def _root_mounted(pid: int) -> bool:
    """The container's shim has pivoted: its mount namespace's / is the overlay."""
    try:
        with open(f"/proc/{pid}/mountinfo") as f:
            return any(line.split()[4] == "/" and " overlay " in line for line in f)
    except OSError:
        return False


def test_busybox_top_keeps_running_detached(pair: Pair) -> None:
    # The tutorial's `docker run --detach ... alpine top`: no terminal, stdin not attached.
    c = pair.run("alpine", ["top"])
    # Two screens written (busybox top refreshes every 5 s) and still running: it neither
    # needed a terminal nor ended at the end of its input.
    assert wait_until(lambda: c.log().count("Mem:") >= 2, 20), c.log()
    assert process.alive(c.started.running)
    assert c.exit_code() is None


def test_top_keeps_running_with_the_dit_stdin_fifo(pair: Pair) -> None:
    c = pair.run("alpine", ["top"], stdin_fifo=True)
    assert wait_until(lambda: c.log().count("Mem:") >= 2, 20), c.log()
    assert process.alive(c.started.running)


def test_ping_of_an_unknown_name_says_bad_address(pair: Pair) -> None:
    # The default bridge: no embedded DNS, and the name is nowhere in /etc/hosts.
    c = pair.run("alpine", ["ping", "-c", "1", "alpine_host"])
    assert _ended(c) == 1
    assert "ping: bad address 'alpine_host'" in c.log()


def test_ping_by_a_name_in_hosts_reaches_the_other_namespace(pair: Pair) -> None:
    # Positive control for the test above: the same ping resolves and answers when it can.
    c = pair.run("alpine", ["ping", "-c", "1", "-W", "5", "peer"], hosts="10.203.0.1\tpeer\n")
    assert _ended(c) == 0, c.log()
    assert "1 packets received" in c.log()


def test_exit_code_is_recorded_from_inside_the_root(pair: Pair) -> None:
    c = pair.run("alpine", ["sh", "-c", "exit 7"])
    assert _ended(c) == 7
    assert c.exit_code() == 7


def test_a_broken_root_fails_with_125_and_says_why(pair: Pair) -> None:
    c = pair.run("alpine", ["true"])
    _ended(c)
    assert c.launch.root is not None
    broken = replace(c.launch.root, lower=Path("/nonexistent-onet-layer"))
    started = process.spawn(replace(c.launch, root=broken))
    assert started.proc.wait(20) == 125
    assert "cannot set up the container's root filesystem" in c.log()


def test_files_written_survive_a_restart_and_go_with_remove(pair: Pair) -> None:
    c = pair.run("alpine", ["sh", "-c", "echo kept > /root/notes"])
    assert _ended(c) == 0, c.log()
    again = process.spawn(c.launch)  # `docker start` of the same container
    assert again.proc.wait(20) == 0
    c2 = pair.run("alpine", ["cat", "/root/notes"])  # another container: its own files
    assert _ended(c2) == 1
    cat = process.spawn(replace(c.launch, cmd=["cat", "/root/notes"]))
    assert cat.proc.wait(20) == 0
    assert c.log().endswith("kept\n")
    rootfs.remove(c.dir)
    assert not (c.dir / rootfs.ROOTFS).exists()


def test_stop_and_remove_leave_nothing_mounted_or_on_disk(pair: Pair) -> None:
    c = pair.run("alpine", ["sleep", "60"])
    assert wait_until(lambda: _root_mounted(c.pid))
    # The mounts live in the container's namespace only, never in ours.
    assert mounts_mentioning(c.dir) == []
    with open(f"/proc/{c.pid}/mountinfo") as f:
        inside = f.read()
    assert "/bin/busybox" in inside and "/proc" in inside
    pair.stop(c)
    assert not process.alive(c.started.running)
    assert mounts_mentioning(c.dir) == []
    rootfs.remove(c.dir)
    assert sorted(p.name for p in c.dir.iterdir()) == [
        "exitcode",
        "hosts",
        "output.log",
        "resolv.conf",
    ]


def test_attached_stdin_ends_when_the_writer_closes(pair: Pair) -> None:
    # `echo hi | overlaynet run -i --rm alpine cat`
    c = pair.run("alpine", ["cat"], attach_stdin=True)
    writer = c.started.stdin_writer
    assert writer is not None
    os.write(writer, b"hi\n")
    os.close(writer)
    c.started = replace(c.started, stdin_writer=None)  # closed: teardown must not close it again
    assert _ended(c) == 0
    assert c.log() == "hi\n"


def _read_until(fd: int, want: bytes, seconds: float = 10) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while want not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the terminal's last process has gone
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_tty_gives_an_interactive_shell_and_ctrl_c_interrupts(pair: Pair) -> None:
    # `overlaynet run -it alpine sh`: a terminal, a prompt, ^C stops the foreground command only.
    c = pair.run("alpine", ["sh"], tty=True)
    master = c.started.pty_master
    assert master is not None
    assert b"/ # " in _read_until(master, b"/ # ")
    os.write(master, b"tty; echo term=$TERM; sleep 60\n")
    seen = _read_until(master, b"term=xterm\r\n")
    assert b"/dev/pts/" in seen
    # ^C only once `sleep` runs: earlier, it would interrupt the shell, not the command.
    assert wait_until(lambda: "sleep 60" in process.top(c.pid))
    os.write(master, b"\x03")
    assert b"/ # " in _read_until(master, b"/ # ")
    assert process.alive(c.started.running)
    os.write(master, b"exit 3\n")
    assert _ended(c) == 3


def test_host_image_keeps_the_hosts_root_with_its_own_hosts_file(pair: Pair) -> None:
    # For iperf3, dig and tcpdump: the host's files, but still the container's /etc/hosts.
    c = pair.run("host", ["sh", "-c", "ls /; echo --; cat /etc/hosts"], hosts="10.203.0.9\tpeer\n")
    assert c.launch.root is None
    assert _ended(c) == 0, c.log()
    listing, hosts = c.log().split("--\n")
    assert set(listing.split()) == {p for p in os.listdir("/") if not p.startswith(".")}
    assert "10.203.0.9\tpeer" in hosts.splitlines()


def test_overlaynet_top_shows_a_short_line_per_process(pair: Pair) -> None:
    c = pair.run("alpine", ["sleep", "60"])
    assert wait_until(lambda: "sleep 60" in process.top(c.pid))
    lines = process.top(c.pid).splitlines()
    assert any(line.endswith(f"{process.ROOT_INIT_PATH} sleep 60") for line in lines), lines
    assert all(len(line) < 250 for line in lines), lines


def test_names_resolve_over_dns_from_inside_the_image(pair: Pair) -> None:
    # busybox is glibc-static with no NSS libraries in the image: resolving through the
    # container's nameserver (the agent's 127.0.0.11) must still work, for ping as for nslookup.
    sock = nssocket.socket_in_netns(pair.server, bind=("127.0.0.11", 53))
    answering = threading.Thread(target=_answer_peer, args=(sock,), daemon=True)
    answering.start()
    try:
        c = pair.run(
            "alpine",
            ["sh", "-c", "ping -c 1 -W 5 peer && nslookup peer"],
            resolv="nameserver 127.0.0.11\noptions ndots:0\n",
        )
        assert _ended(c) == 0, c.log()
    finally:
        sock.close()
        answering.join(5)
    assert "PING peer (10.203.0.1)" in c.log()
    assert "1 packets received" in c.log()
    assert "Address: 10.203.0.1" in c.log()


def _answer_peer(sock: socket.socket) -> None:
    """A one-name DNS server: `peer` is the client namespace; everything else NXDOMAIN."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + 30  # bounded even if the test forgets to close the socket
    while time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(4096)
        except TimeoutError:
            continue
        except OSError:
            return  # closed by the test
        query = dnslib.DNSRecord.parse(data)
        reply = query.reply()
        if str(query.q.qname).rstrip(".") == "peer" and query.q.qtype == dnslib.QTYPE.A:
            reply.add_answer(dnslib.RR("peer", dnslib.QTYPE.A, rdata=dnslib.A("10.203.0.1")))
        elif query.q.qtype != dnslib.QTYPE.AAAA:
            reply.header.rcode = dnslib.RCODE.NXDOMAIN
        sock.sendto(reply.pack(), addr)


def test_wait_in_root_returns_once_exec_would_land_in_the_image(pair: Pair) -> None:
    # No polling of our own: right after wait_in_root, entering the container shows the image
    # (before it, an exec right after `run -d` could enter the half-built namespace and run the
    # host's tools: the lab demo's ping once printed iputils' message, not busybox's).
    c = pair.run("alpine", ["sleep", "60"])
    assert process.wait_in_root(c.started.running), c.log()
    target = process.exec_pid(c.started.running)
    assert target is not None
    out = subprocess.run(
        ["nsenter", "-t", str(target), "-m", "--", "ls", "/"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert set(out.stdout.split()) == IMAGE_TOP_LEVEL


def test_wait_in_root_is_false_for_a_container_that_ends(pair: Pair) -> None:
    c = pair.run("alpine", ["true"])
    c.started.proc.wait(10)
    assert not process.wait_in_root(c.started.running, timeout=2)
