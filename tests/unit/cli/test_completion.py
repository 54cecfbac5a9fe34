"""`overlaynet completion bash`: valid bash, generated from the parser, completing real words."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from overlaynet.cli import completion
from overlaynet.cli import main as cli

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "overlaynet.bash"
    path.write_text(completion.bash_script(cli.build_parser()))
    return path


def complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last word of `overlaynet WORDS…`."""
    line = " ".join(f"'{w}'" for w in ("overlaynet", *words))
    program = (
        f"source '{script}'; COMP_WORDS=({line}); COMP_CWORD={len(words)}; "
        '_overlaynet; printf "%s\\n" "${COMPREPLY[@]}"'
    )
    out = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return [w for w in out.stdout.split("\n") if w]


def test_the_script_is_valid_bash(script: Path) -> None:
    subprocess.run(["bash", "-n", str(script)], check=True)


def test_net_completes_to_network(script: Path) -> None:
    assert complete(script, "net") == ["network"]


def test_verbs_and_options_follow_the_command_path(script: Path) -> None:
    assert "create" in complete(script, "network", "")
    assert complete(script, "-H", "node2", "network", "ls", "--f") == ["--filter", "--format"]
    assert complete(script, "swarm", "join-token", "") == ["worker", "manager"]
    assert complete(script, "node", "update", "--availability", "d") == ["drain"]


def test_a_verb_added_to_the_parser_is_completed(tmp_path: Path) -> None:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    sub.add_parser("frobnicate").add_argument("--wobble")
    path = tmp_path / "c.bash"
    path.write_text(completion.bash_script(parser))
    assert complete(path, "frob") == ["frobnicate"]
    assert complete(path, "frobnicate", "--w") == ["--wobble"]


def test_the_cli_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["completion", "bash"]) == 0
    assert "complete -F _overlaynet overlaynet" in capsys.readouterr().out
