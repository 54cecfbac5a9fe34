"""The CLI parses docker's verbs and options; the command after IMAGE is the container's."""

from __future__ import annotations

import pytest

from overlaynet.cli import main as cli


def parse(*argv: str):  # type: ignore[no-untyped-def]
    return cli.build_parser().parse_args(list(argv))


def test_run_keeps_options_after_the_image_for_the_command() -> None:
    ns = parse(
        "-H",
        "node2",
        "run",
        "-dit",
        "--name",
        "a1",
        "--network",
        "net1",
        "alpine",
        "ping",
        "-c",
        "3",
        "x",
    )
    assert (ns.host, ns.detach, ns.interactive, ns.tty) == ("node2", True, True, True)
    assert (ns.name, ns.network, ns.image, ns.cmd) == (
        "a1",
        "net1",
        "alpine",
        ["ping", "-c", "3", "x"],
    )
    assert ns.func is cli.cmd_run


def test_container_and_top_level_verbs_are_the_same() -> None:
    assert parse("container", "ls", "-a").func is parse("ps", "-a").func
    assert parse("container", "rm", "--force", "a", "b").containers == ["a", "b"]
    assert parse("container", "inspect", "a").kind == "container"


def test_network_create_options() -> None:
    ns = parse(
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet",
        "10.1.0.0/24",
        "-o",
        "k=v",
        "--internal",
        "n",
    )
    assert (ns.driver, ns.subnet, ns.opt, ns.internal, ns.name) == (
        "bridge",
        "10.1.0.0/24",
        ["k=v"],
        True,
        "n",
    )


def test_host_and_lab_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVERLAYNET_HOST", "node3")
    monkeypatch.setenv("OVERLAYNET_LAB", "other")
    ns = parse("network", "ls")
    assert (ns.host, ns.lab) == ("node3", "other")
    assert str(cli._host_paths(ns).socket).endswith("/other/node3.sock")


def test_lab_none_talks_to_a_real_hosts_agent() -> None:
    ns = parse("--lab", "none", "-H", "vm1", "network", "ls")
    assert str(cli._host_paths(ns).socket).endswith("/overlaynet/vm1.sock")


def test_key_value_errors_are_cli_errors() -> None:
    with pytest.raises(cli.CliError, match="expected KEY=VALUE"):
        cli._key_values(["novalue"], "environment variable")
    with pytest.raises(cli.CliError, match=r"expected KEY\[=VALUE\]"):
        cli._key_values(["=x"], "option", bare=True)


def test_a_bare_option_is_an_empty_value_as_docker_reads_opt_encrypted() -> None:
    assert cli._key_values(["encrypted", "a=b"], "option", bare=True) == {
        "encrypted": "",
        "a": "b",
    }


def test_unknown_verbs_exit_125_as_docker(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        parse("network", "frobnicate")
    assert e.value.code == 125
    assert "See 'overlaynet network --help'." in capsys.readouterr().err
