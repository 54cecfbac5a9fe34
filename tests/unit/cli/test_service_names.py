"""Generated service names (service create without --name), as docker's adjective_surname."""

from __future__ import annotations

import random
import re

from overlaynet.cli import service_names
from overlaynet.names import check_container_name

SHAPE = re.compile(r"^[a-z]+_[a-z]+[0-9]?$")


def test_names_have_dockers_shape_and_are_valid_service_names() -> None:
    rng = random.Random(7)
    for _ in range(200):
        name = service_names.generate((), rng)
        assert SHAPE.match(name), name
        assert name != "boring_wozniak"
        check_container_name(name, "service")


def test_a_seed_gives_the_same_name_and_taken_names_are_skipped() -> None:
    first = service_names.generate((), random.Random(1))
    assert service_names.generate((), random.Random(1)) == first
    assert service_names.generate({first}, random.Random(1)) != first


def test_every_plain_name_taken_still_gives_a_new_one() -> None:
    every = {f"{a}_{b}" for a in service_names.LEFT for b in service_names.RIGHT}
    name = service_names.generate(every, random.Random(3))
    assert name not in every
    assert SHAPE.match(name) or name.startswith("service_")
