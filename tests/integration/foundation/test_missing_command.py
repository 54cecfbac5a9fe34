"""A command the container lacks: docker's words and exit statuses for run and exec (127 not
found, 126 not executable), not the error of the shell or nsenter that would have started it."""

from __future__ import annotations

from tests.integration.labs import Lab

NOT_FOUND = 'exec: "nosuchcmd": executable file not found in $PATH'


def test_run_of_a_missing_command(lab2: Lab) -> None:
    out = lab2.cli("node1", "run", "--rm", "alpine", "nosuchcmd")
    assert out.returncode == 127
    assert out.stderr.strip() == (
        f"Error response from daemon: unable to start container process: {NOT_FOUND}"
    )
    assert "overlaynet-init" not in out.stderr
    out = lab2.cli("node1", "run", "--rm", "alpine", "/etc/hosts")
    assert out.returncode == 126
    assert 'exec: "/etc/hosts": permission denied' in out.stderr
    assert lab2.ok("node1", "run", "--rm", "alpine", "echo", "hi") == "hi\n"


def test_exec_of_a_missing_command(lab2: Lab) -> None:
    lab2.ok("node1", "run", "-d", "--name", "mc1", "alpine", "sleep", "300")
    try:
        out = lab2.cli("node1", "exec", "mc1", "nosuchcmd")
        assert out.returncode == 127
        assert out.stderr.strip() == f"unable to start container process: {NOT_FOUND}"
        assert "nsenter" not in out.stderr
        out = lab2.cli("node1", "exec", "mc1", "/etc")
        assert out.returncode == 126
        assert 'exec: "/etc": permission denied' in out.stderr
        assert lab2.cli("node1", "exec", "mc1", "sh", "-c", "exit 3").returncode == 3
    finally:
        lab2.cli("node1", "rm", "-f", "mc1")
