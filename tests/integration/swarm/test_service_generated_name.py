"""service create without --name: docker generates adjective_surname and prints the ID; it was
refused ('generated names are not supported')."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from tests.integration.labs import Lab, make_lab


@pytest.fixture(scope="module")
def swarm2() -> Iterator[Lab]:
    yield from make_lab(2, swarm=True)


def test_service_create_without_name_generates_one(swarm2: Lab) -> None:
    out = swarm2.cli("node1", "service", "create", "--detach", "alpine", "sleep", "300")
    assert out.returncode == 0, out.stderr
    service_id = out.stdout.strip()
    assert re.fullmatch(r"[a-z0-9]+", service_id), out.stdout
    try:
        doc = json.loads(swarm2.ok("node1", "service", "inspect", service_id))[0]
        name = doc["Spec"]["Name"]
        assert re.fullmatch(r"[a-z]+_[a-z]+[0-9]?", name), name
        assert name in swarm2.ok("node1", "service", "ls")
    finally:
        swarm2.cli("node1", "service", "rm", service_id)
