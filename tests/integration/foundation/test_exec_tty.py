"""exec -t gives the command a pseudo-terminal of its own, named inside the container, as
docker's does; it got the client's descriptors, so `tty` said "not a tty"."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys

from tests.integration.labs import Lab


def test_exec_t_runs_on_a_pty_of_the_container(lab2: Lab) -> None:
    lab2.ok("node1", "run", "-d", "--name", "tt1", "alpine", "sleep", "300")
    try:
        out = lab2.cli("node1", "exec", "-t", "tt1", "tty")
        assert out.returncode == 0, out.stdout + out.stderr
        assert re.fullmatch(r"/dev/pts/\d+\r?\n", out.stdout), out.stdout
        # Without -t the command keeps the client's descriptors (here pipes), as docker.
        plain = lab2.cli("node1", "exec", "tt1", "tty")
        assert (plain.returncode, plain.stdout) == (1, "not a tty\n")
        assert lab2.cli("node1", "exec", "-t", "tt1", "sh", "-c", "exit 4").returncode == 4
        # -i with -t: the client's terminal input reaches the command through the pty.
        argv = [sys.executable, "-m", "overlaynet", "--lab", lab2.name, "-H", "node1"]
        assert "got hello" in _exec_it_on_a_terminal(argv, "tt1", "read x; echo got $x")
        # -i with -t from a pipe: docker refuses before it asks the daemon (exit 1); it was
        # accepted and the input echoed back through the pty.
        piped = subprocess.run(
            [*argv, "exec", "-it", "tt1", "cat"],
            input="hello\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (piped.returncode, piped.stdout, piped.stderr) == (
            1,
            "",
            "the input device is not a TTY\n",
        )
    finally:
        lab2.cli("node1", "rm", "-f", "tt1")


def _exec_it_on_a_terminal(argv: list[str], container: str, script: str) -> str:
    """`exec -it CONTAINER sh -c SCRIPT` with a pseudo-terminal as the client's stdin; the line
    is typed until the command ends (raw mode flushes what came before it), its output back."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            [*argv, "exec", "-it", container, "sh", "-c", script],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(40):  # bounded: 20 s
            os.write(master, b"hello\r")
            try:
                proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            proc.kill()
        out, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, (out, err)
        return out
    finally:
        os.close(master)
        os.close(slave)
