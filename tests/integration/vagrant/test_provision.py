"""vagrant/provision.sh, run for real inside a lab host namespace in its nosystemd mode: it runs
the README's set-up (which finds everything present and installs nothing), writes its files
under a temporary root, starts an agent, and that agent answers the CLI through the socket it
made. The machine's /etc, /usr/local/bin and root namespace are not touched."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlaynet import lab as labmod
from overlaynet.host import links, netns
from overlaynet.names import lab_namespace

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "vagrant" / "provision.sh"
# What provision.sh would write into the machine itself without OVERLAYNET_PROVISION_ROOT.
MACHINE_FILES = (
    Path("/etc/systemd/system/overlaynet-agent.service"),
    Path("/etc/profile.d/overlaynet.sh"),
    Path("/usr/local/bin/overlaynet"),
)
# The set-up, the agent's start and its first answer; generous for a busy 2-core machine.
PROVISION_TIMEOUT = 180


def setup_pending() -> str | None:
    """Why tools/setup.sh would install something here (None: everything is present). The test
    must not install into the shared environment, and the lab host has no way out anyway."""
    listed = subprocess.run(
        [
            "bash",
            "-c",
            'eval "$(sed -n "/^DEBIAN_PACKAGES=(/,/^)/p" tools/setup.sh)"; '
            'printf "%s\\n" "${DEBIAN_PACKAGES[@]}"',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert listed, "could not read DEBIAN_PACKAGES from tools/setup.sh"
    missing = [
        p
        for p in listed
        if "install ok installed"
        not in subprocess.run(
            ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False
        ).stdout
    ]
    if missing:
        return f"Debian packages missing: {' '.join(missing)} (run tools/setup.sh first)"
    stamp = REPO / ".venv" / ".overlaynet-installed"
    if not stamp.exists() or (REPO / "pyproject.toml").stat().st_mtime > stamp.stat().st_mtime:
        return "the .venv is older than pyproject.toml: run tools/setup.sh first"
    return None


@dataclass
class HostNamespace:
    lab: str
    ns: str
    ip: str


@pytest.fixture
def lab_host() -> Iterator[HostNamespace]:
    """A lab host namespace with its underlay port and no agent of the lab in it: provision.sh
    brings the only agent there (two agents would fight over the same bridges)."""
    name = "t" + secrets.token_hex(4)
    try:
        (host,) = labmod.up(name, 1)
        labmod.stop_agent(name, host.name)
        yield HostNamespace(name, lab_namespace(name, host.name), host.ip)
    finally:
        labmod.down(name)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Short: the agent's socket lives under it and a Unix socket path has 108 bytes at most.
    path = Path(tempfile.mkdtemp(prefix="onet-prov-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop(pid: int) -> None:
    """The agent provision.sh started, by its pid: SIGTERM, then SIGKILL if it lingers."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def test_provision_nosystemd_starts_an_agent_that_answers(
    lab_host: HostNamespace, scratch: Path
) -> None:
    pending = setup_pending()
    if pending:
        pytest.skip(pending)
    root, run_dir, state_dir = scratch / "root", scratch / "run", scratch / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OVERLAYNET_")}
    env |= {
        "OVERLAYNET_PROVISION_MODE": "nosystemd",
        "OVERLAYNET_PROVISION_ROOT": str(root),
        "OVERLAYNET_SRC": str(REPO),
        "OVERLAYNET_RUN_DIR": str(run_dir),
        "OVERLAYNET_STATE_DIR": str(state_dir),
    }
    machine_before = {p: p.exists() for p in MACHINE_FILES}
    root_ns_bridge_before = links.exists("on-docker0")
    pid_file = root / "run" / "overlaynet-agent.pid"
    started: list[int] = []

    def provision() -> int:
        argv = ["nsenter", f"--net={netns.path(lab_host.ns)}", "--"]
        argv += ["bash", str(SCRIPT), "node1", lab_host.ip]
        out = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=PROVISION_TIMEOUT, check=False
        )
        if pid_file.exists():
            started.append(int(pid_file.read_text()))
        assert out.returncode == 0, f"provision.sh failed:\n{out.stdout}\n{out.stderr}"
        assert "set-up: installing" not in out.stdout, "everything was present: nothing to install"
        assert "agent running (192.168.0.11)" in out.stdout
        return started[-1]

    def cli(*args: str, wrapper: bool = False) -> subprocess.CompletedProcess[str]:
        if wrapper:  # what a user on the VM types: no lab, no host given
            argv = [str(root / "usr/local/bin/overlaynet"), *args]
            user_env = {k: v for k, v in env.items() if not k.startswith("OVERLAYNET_")}
        else:
            argv = [sys.executable, "-m", "overlaynet", "--lab", "none", "-H", "node1", *args]
            user_env = env
        return subprocess.run(
            argv, env=user_env, capture_output=True, text=True, timeout=60, check=False
        )

    try:
        pid = provision()

        # The agent runs in the lab host's namespace and made its socket where it was told.
        assert _alive(pid)
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns.path(lab_host.ns)).st_ino
        assert (run_dir / "node1.sock").is_socket()
        assert int((state_dir / "node1" / "agent.pid").read_text()) == pid

        version = cli("version", "--format", "{{.Server.Host}} {{.Server.Pid}}")
        assert version.returncode == 0, version.stderr
        assert version.stdout.split() == ["node1", str(pid)]
        listed = cli("network", "ls", "--format", "{{.Name}}")
        assert listed.returncode == 0, listed.stderr
        assert {"bridge", "host", "none"} <= set(listed.stdout.split())
        # The wrapper on PATH talks to this host's agent without being told the lab or host.
        wrapped = cli("network", "ls", "--format", "{{.Name}} {{.Driver}}", wrapper=True)
        assert wrapped.returncode == 0, wrapped.stderr
        assert "bridge bridge" in wrapped.stdout.splitlines()

        # Its files went under the temporary root, none into the machine.
        unit = (root / "etc/systemd/system/overlaynet-agent.service").read_text()
        assert f"ExecStart={REPO}/.venv/bin/overlaynet-agent --host node1 --advertise-addr " in unit
        assert f"Environment=OVERLAYNET_RUN_DIR={run_dir}" in unit
        assert "KillMode=process" in unit
        if shutil.which("systemd-analyze"):
            verify = subprocess.run(
                [
                    "systemd-analyze",
                    "verify",
                    str(root / "etc/systemd/system/overlaynet-agent.service"),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            assert verify.returncode == 0, verify.stderr
        profile = (root / "etc/profile.d/overlaynet.sh").read_text()
        assert "OVERLAYNET_LAB=none" in profile and "OVERLAYNET_HOST=node1" in profile
        assert {p: p.exists() for p in MACHINE_FILES} == machine_before
        # The agent's default bridge is in the lab host, not in the machine's own namespace.
        assert links.exists("on-docker0", netns=lab_host.ns)
        assert links.exists("on-docker0") == root_ns_bridge_before

        # Provisioning again (`vagrant provision`) replaces the agent rather than adding one.
        again = provision()
        assert again != pid and not _alive(pid) and _alive(again)
        assert cli("version", "--format", "{{.Server.Pid}}").stdout.strip() == str(again)
    finally:
        for p in started:
            _stop(p)
    assert not any(_alive(p) for p in started)
