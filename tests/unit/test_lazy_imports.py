"""An idle agent loads only what it uses (issue 15): importing the agent, or what the lab's fork
server preloads for the agents it forks, leaves the heavy modules that only some hosts need
unloaded, and those modules still arrive, with a clear error when missing, where they are used.

Each check runs in a fresh interpreter (this test process has long since imported everything)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Modules an idle worker agent (no encrypted network, not a manager, no container, no overlay)
#: must not have loaded, each with the reason it is only needed elsewhere.
LAZY = {
    "cryptography": "AES-GCM: only a sealed network, an encrypted gossip keyring or a swarm's "
    "cluster protocol use a key (dataplane/seal.py, gossip/keyring.py, cluster/protocol.py)",
    "pysyncobj": "the Raft engine: only a manager runs Raft (cluster/raft.py RaftLog.start)",
    "overlaynet.cluster.raft_syncobj": "PySyncObj's subclasses, imported with PySyncObj",
    "overlaynet.cluster.manager": "the manager's server: only when this host is or becomes a "
    "manager (agent/swarm.py)",
    "dnslib": "DNS answering: only with a container served (dns/server.py add_container)",
    "overlaynet.dns.answer": "the answering core, imported with the first container served",
    "overlaynet.dataplane.vtep": "the VTEP and its hot path: started with the first overlay "
    "(agent/daemon.py _run_vtep)",
    "overlaynet.dataplane.hotpath": "the VTEP's hot loop, imported with the VTEP",
    "nftables": "libnftables' binding: only for a balanced service or a published port "
    "(host/nft.py, the first nftables context)",
}


def loaded_after(code: str) -> set[str]:
    """The names in sys.modules of a fresh interpreter after it ran `code`."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def heavy_in(modules: set[str]) -> dict[str, str]:
    return {
        name: why
        for name, why in LAZY.items()
        if name in modules or any(m.startswith(name + ".") for m in modules)
    }


def test_importing_the_agent_loads_none_of_the_modules_only_some_hosts_use() -> None:
    assert heavy_in(loaded_after("import overlaynet.agent.daemon")) == {}


def test_the_fork_server_preloads_none_of_them_either() -> None:
    assert heavy_in(loaded_after("from overlaynet.lab import zygote\nzygote.preload()")) == {}


def test_for_a_swarm_the_fork_server_adds_cryptography_and_nothing_else() -> None:
    # Every swarm member seals its cluster requests from its start: shared from the zygote.
    loaded = loaded_after("from overlaynet.lab import zygote\nzygote.preload(swarm=True)")
    assert set(heavy_in(loaded)) == {"cryptography"}


def test_the_probe_sees_a_module_that_is_loaded() -> None:
    # The checks above would pass on a probe that never saw anything: this one must not.
    loaded = loaded_after("import overlaynet.agent.daemon\nimport overlaynet.dataplane.vtep")
    assert set(heavy_in(loaded)) == {"overlaynet.dataplane.vtep", "overlaynet.dataplane.hotpath"}


def test_a_sealer_loads_cryptography_when_a_network_is_sealed() -> None:
    loaded = loaded_after(
        "from overlaynet.dataplane.seal import DataKey, Sealer\n"
        "s = Sealer([DataKey(1, bytes(16))], 1, '192.168.0.11')\n"
        "h = bytes(8)\n"
        "head, body = s.seal(h, b'frame')\n"
        "assert s.open(head + body, '192.168.0.11') == h + b'frame'"
    )
    assert "cryptography" in loaded


def test_the_raft_engine_still_loads_pysyncobj_and_keeps_inet_ntop() -> None:
    # pysyncobj's win_inet_pton replaces socket.inet_ntop on import; raft_syncobj restores it.
    loaded = loaded_after(
        "import socket\n"
        "from overlaynet.cluster import raft\n"
        "assert raft._ReplicatedLog.__name__ == '_ReplicatedLog'\n"
        "assert socket.inet_ntop(socket.AF_INET, bytes([10, 0, 0, 2])) == '10.0.0.2'"
    )
    assert {"pysyncobj", "overlaynet.cluster.raft_syncobj"} <= loaded


#: Without cryptography installed, the first use of a key says what is missing.
NO_CRYPTOGRAPHY = "import sys\nsys.modules['cryptography'] = None\n"


@pytest.mark.parametrize(
    ("use", "what"),
    [
        (
            "from overlaynet.dataplane.seal import DataKey, Sealer\n"
            "Sealer([DataKey(1, bytes(16))], 1, '192.168.0.11')",
            "the 'cryptography' package is needed for encrypted overlays",
        ),
        (
            "from overlaynet.gossip.keyring import Keyring\nKeyring([bytes(16)])",
            "the 'cryptography' package is needed for gossip encryption",
        ),
        (
            "from overlaynet.cluster import protocol\nprotocol.derive_join_key('d', 's')",
            "the 'cryptography' package is needed for a swarm (join tokens, manager requests)",
        ),
        (
            "from overlaynet.cluster import protocol\n"
            "frame = protocol.Frame(protocol.FrameKind.JOIN, '', bytes(12), b'', b'')\n"
            "protocol.open_sealed(frame, bytes(32), now=0.0)",
            "the 'cryptography' package is needed for a swarm (join tokens, manager requests)",
        ),
    ],
)
def test_without_cryptography_the_agent_starts_and_a_key_use_says_why(use: str, what: str) -> None:
    code = f"{NO_CRYPTOGRAPHY}import overlaynet.agent.daemon\n{use}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 1
    assert f"ImportError: {what}" in out.stderr
