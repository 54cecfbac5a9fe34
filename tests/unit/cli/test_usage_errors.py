"""Command lines the CLI cannot parse exit 125 with docker's two lines; no root, no agent."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from overlaynet.cli import main as cli

ROOT = Path(__file__).resolve().parents[3]


def usage_error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        cli.build_parser().parse_args(list(argv))
    assert e.value.code == 125
    return capsys.readouterr().err


def test_unknown_flag_names_the_verb_to_ask_for_help(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "network", "ls", "--bogus")
    assert err == "overlaynet: unknown flag: --bogus.\nSee 'overlaynet network ls --help'.\n"


def test_missing_argument(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "network", "create")
    assert err.startswith('"overlaynet network create" requires exactly 1 argument.\n')
    assert "See 'overlaynet network create --help'.\n" in err
    assert err.endswith("Usage:  overlaynet network create [OPTIONS] NAME\n")


def test_run_without_arguments_counts_as_docker_does(capsys: pytest.CaptureFixture[str]) -> None:
    # argparse said "required: image, cmd" though the command is optional
    assert usage_error(capsys, "run") == (
        '"overlaynet run" requires at least 1 argument.\n'
        "See 'overlaynet run --help'.\n\n"
        "Usage:  overlaynet run [OPTIONS] IMAGE [COMMAND] [ARG...]\n"
    )
    err = usage_error(capsys, "service", "create")
    assert err.startswith('"overlaynet service create" requires at least 1 argument.\n')
    assert "command" not in err.split("\n")[0]
    err = usage_error(capsys, "container", "stop")
    assert err.startswith('"overlaynet container stop" requires at least 1 argument.\n')
    err = usage_error(capsys, "network", "connect")
    assert err.startswith('"overlaynet network connect" requires exactly 2 arguments.\n')


def test_exec_needs_container_and_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert usage_error(capsys, "exec").startswith(
        '"overlaynet exec" requires at least 2 arguments.\n'
    )
    with pytest.raises(SystemExit) as e:
        cli.main(["--lab", "s9v-none", "exec", "b1"])
    assert e.value.code == 125
    assert capsys.readouterr().err.startswith('"overlaynet exec" requires at least 2 arguments.\n')


def test_usage_lines_name_what_docker_names(capsys: pytest.CaptureFixture[str]) -> None:
    # exec showed `CONTAINER [COMMAND] [ARG...]` though COMMAND is required, and lists showed
    # the parser's plural (`NETWORKS [NETWORKS...]`); docker: `NETWORK [NETWORK...]`.
    for argv, usage in (
        (["exec"], "overlaynet exec [OPTIONS] CONTAINER COMMAND [ARG...]"),
        (["container", "exec"], "overlaynet container exec [OPTIONS] CONTAINER COMMAND [ARG...]"),
        (["network", "rm"], "overlaynet network rm NETWORK [NETWORK...]"),
        (["stop"], "overlaynet stop [OPTIONS] CONTAINER [CONTAINER...]"),
        (["inspect"], "overlaynet inspect [OPTIONS] NAME|ID [NAME|ID...]"),
        (["node", "rm"], "overlaynet node rm [OPTIONS] NODE [NODE...]"),
    ):
        assert usage_error(capsys, *argv).endswith(f"\nUsage:  {usage}\n"), argv
    assert usage_error(capsys, "run").endswith(" IMAGE [COMMAND] [ARG...]\n")  # optional there


def test_missing_flag_or_verb_keeps_argparse_words(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "swarm", "join")
    assert "the following arguments are required: --token, HOST:PORT." in err
    assert "required: VERB." in usage_error(capsys, "network")


def test_stray_argument_and_unknown_verb(capsys: pytest.CaptureFixture[str]) -> None:
    assert "See 'overlaynet network ls --help'." in usage_error(capsys, "network", "ls", "x")
    assert "invalid choice: 'frob'" in usage_error(capsys, "frob")


def test_a_filter_without_equals_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    err = usage_error(capsys, "ps", "--filter", "running")
    assert "bad format of filter (expected name=value)" in err


def test_main_exits_125_for_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        cli.main(["node", "ls", "-z"])
    assert e.value.code == 125


def test_list_commands_accept_dockers_options() -> None:
    ns = cli.build_parser().parse_args(
        ["ps", "-aq", "--no-trunc", "-f", "status=exited", "-f", "name=a", "--format", "json"]
    )
    assert (ns.all, ns.quiet, ns.no_trunc, ns.format) == (True, True, True, "json")
    assert ns.filter == [("status", "exited"), ("name", "a")]
    ns = cli.build_parser().parse_args(["node", "ls", "-q", "--filter", "role=manager"])
    assert (ns.quiet, ns.filter, ns.func) == (True, [("role", "manager")], cli.cmd_node_ls)
    ns = cli.build_parser().parse_args(["network", "ls", "--no-trunc", "--format", "{{.ID}}"])
    assert (ns.no_trunc, ns.format) == (True, "{{.ID}}")


def test_a_host_the_lab_lacks_is_named_with_the_labs_hosts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OVERLAYNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("OVERLAYNET_RUN_DIR", str(tmp_path / "run"))
    lab_file = tmp_path / "state" / "labs" / "t1" / "lab.json"
    lab_file.parent.mkdir(parents=True)
    hosts = [{"name": "node1", "ip": "192.168.0.11"}, {"name": "node2", "ip": "192.168.0.12"}]
    lab_file.write_text(json.dumps({"name": "t1", "hosts": hosts, "owner_pid": 1}))
    assert cli.main(["--lab", "t1", "-H", "node9", "network", "ls"]) == 1
    err = capsys.readouterr().err
    assert "Cannot connect to the overlaynet agent of host node9" in err
    assert "lab t1 has no host node9; its hosts are node1, node2" in err
    # A lab that does not exist keeps the "is the agent running" advice.
    assert cli.main(["--lab", "nolab", "-H", "node9", "network", "ls"]) == 1
    assert "Is the agent running? (start it with `overlaynet lab up" in capsys.readouterr().err


# The CLI needs only the standard library: a system Python can run it as an unprivileged user
# (the venv's interpreter may live under root's home, which that user cannot enter).
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")
NOBODY = 65534


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as nobody")
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="needs a system python3")
def test_non_root_gets_one_line_for_a_socket_it_may_not_open(tmp_path: Path) -> None:
    assert SYSTEM_PYTHON is not None
    version = subprocess.run(
        [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
        capture_output=True,
        text=True,
        check=True,
    )
    if version.stdout.strip() != "True":
        pytest.skip("the system python3 is older than 3.11")
    run_dir = tmp_path / "run"
    (run_dir / "t1").mkdir(parents=True)
    run_dir.chmod(0o700)  # as /run/overlaynet: root's only
    tmp_path.chmod(0o755)
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(run_dir / "t1" / "node1.sock"))
        listener.listen()
        out = subprocess.run(
            [SYSTEM_PYTHON, "-m", "overlaynet", "--lab", "t1", "network", "ls"],
            user=NOBODY,
            group=NOBODY,
            env={
                "PATH": "/usr/bin:/bin",
                "PYTHONPATH": str(ROOT),
                "OVERLAYNET_RUN_DIR": str(run_dir),
            },
            cwd="/",
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode == 1, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("permission denied while trying to connect to the overlaynet")


def test_version_prints_the_client_and_fails_without_an_agent(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OVERLAYNET_RUN_DIR", str(tmp_path))
    assert cli.main(["--lab", "nolab", "version"]) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "Client:"
    assert lines[1].startswith(" Version:           ")  # docker's 20-wide label column
    assert "Server:" not in out and "Cannot connect to the overlaynet agent" in err
    assert cli.main(["--lab", "nolab", "version", "-f", "{{.Client.Version}}|{{.Server}}"]) == 1
    assert capsys.readouterr().out.endswith("|<nil>\n")
