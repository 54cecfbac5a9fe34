"""The Vagrant set-up, checked without VMs: Vagrant itself accepts the Vagrantfile, and the
provisioning script parses. (Bringing the VMs up needs a hypervisor; vagrant/README.md.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

VAGRANT_DIR = Path(__file__).resolve().parents[3] / "vagrant"


@pytest.mark.skipif(
    shutil.which("vagrant") is None,
    reason="vagrant is not installed (Debian: apt-get install vagrant; tools/setup.sh)",
)
def test_vagrant_validates_the_vagrantfile(tmp_path: Path) -> None:
    # --ignore-provider: no hypervisor here, and validation is about the Vagrantfile itself.
    # VAGRANT_HOME and VAGRANT_DOTFILE_PATH keep vagrant's own files out of ~ and the repo.
    env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
        "VAGRANT_HOME": str(tmp_path / "vagrant.d"),
        "VAGRANT_DOTFILE_PATH": str(tmp_path / "dotfile"),
        "VAGRANT_CHECKPOINT_DISABLE": "1",
    }
    out = subprocess.run(
        ["vagrant", "validate", "--ignore-provider"],
        cwd=VAGRANT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validated successfully" in out.stdout
    # One machine per node, each provisioned by provision.sh.
    for node in ("node1", "node2", "node3"):
        assert f"==> {node}:" in out.stdout
    assert not (VAGRANT_DIR / ".vagrant").exists(), "vagrant validate left .vagrant/ behind"


def test_provision_script_parses_and_refuses_a_wrong_call() -> None:
    script = VAGRANT_DIR / "provision.sh"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    out = subprocess.run(["bash", str(script)], capture_output=True, text=True, check=False)
    assert out.returncode == 2 and "usage: provision.sh HOSTNAME UNDERLAY_IP" in out.stderr
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "OVERLAYNET_PROVISION_MODE": "docker"}
    out = subprocess.run(
        ["bash", str(script), "node1", "192.168.56.11"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert out.returncode == 2 and "must be systemd or nosystemd" in out.stderr
