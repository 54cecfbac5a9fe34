"""exec -t gives the command a pseudo-terminal of its own, named inside the container, as
docker's does; it got the client's descriptors, so `tty` said "not a tty"."""

from __future__ import annotations

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
        # -i with -t: the client's input reaches the command through the pty.
        argv = [sys.executable, "-m", "overlaynet", "--lab", lab2.name, "-H", "node1"]
        script = "read x; echo got $x"
        piped = subprocess.run(
            [*argv, "exec", "-it", "tt1", "sh", "-c", script],
            input="hello\n",
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert piped.returncode == 0 and "got hello" in piped.stdout, piped
    finally:
        lab2.cli("node1", "rm", "-f", "tt1")
