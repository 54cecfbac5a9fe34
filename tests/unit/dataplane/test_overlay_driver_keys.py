"""The agent's overlay driver with encrypted networks (issue 18): never served plain for want
of a key, no static peers (a kernel VTEP cannot open sealed frames), keys applied to the VTEP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from overlaynet.agent.overlay import OverlayDriver
from overlaynet.dataplane.datakeys import ENCRYPTED_OPTION
from overlaynet.dataplane.seal import DataKey
from overlaynet.dataplane.vtep import Vtep
from overlaynet.model import Driver, Network
from tests.unit.dataplane.ports import free_port

KEY = DataKey(1, bytes(16))


@pytest.fixture
def driver() -> Iterator[OverlayDriver]:
    d = OverlayDriver("127.0.0.2")
    d.vtep = Vtep("127.0.0.2", free_port(), source_sockets=1, socket_buffer=1 << 16)
    try:
        yield d
    finally:
        d.close()


def network(**kw: object) -> Network:
    fields: dict[str, object] = {
        "id": "n" * 12, "name": "secnet", "driver": Driver.OVERLAY, "created": "now",
        "scope": "swarm", "subnet": "10.0.9.0/24", "gateway": "10.0.9.1", "vni": 4200,
        "options": {ENCRYPTED_OPTION: ""},
    }  # fmt: skip
    fields.update(kw)
    return Network(**fields)  # type: ignore[arg-type]


def test_an_encrypted_network_without_its_key_is_not_served(driver: OverlayDriver) -> None:
    with pytest.raises(RuntimeError, match="data key"):
        driver.attach(network())
    assert driver.taps() == set()
    assert driver.vtep is not None and driver.vtep.stats()["networks"] == {}


def test_an_encrypted_network_takes_no_static_peers(driver: OverlayDriver) -> None:
    driver.set_data_keys("n" * 12, [KEY])
    with pytest.raises(ValueError, match="no static peers"):
        driver.attach(network(peers=["192.168.0.13"]))
    with pytest.raises(ValueError, match="no static peers"):
        driver.apply_static(network(options={}, static_endpoints=[{"mac": "m", "host": "h"}]))
    assert driver.taps() == set()


def test_an_empty_keyring_never_makes_an_encrypted_network_plain(driver: OverlayDriver) -> None:
    driver.set_data_keys("n" * 12, [KEY])
    driver.set_data_keys("n" * 12, [])
    assert driver.encrypted(network(options={}))
    assert not driver.encrypted(network(id="p" * 12, options={}))
