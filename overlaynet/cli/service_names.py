"""Names for services created without --name, as docker's (adjective_surname, moby's
pkg/namesgenerator): `service create alpine ...` said generated names were not supported.

The caller passes the randomness (`random.Random`), so tests pick a seed; the names the swarm
already has are skipped, as a manager refuses a second service of one name.
"""

from __future__ import annotations

import random
from collections.abc import Collection

# A part of moby's lists (pkg/namesgenerator/names-generator.go): adjectives, then scientists
# and hackers; 24 x 24 names, enough for a lab's services.
LEFT = (
    *("admiring", "adoring", "affectionate", "agitated", "amazing", "angry", "awesome"),
    *("blissful", "bold", "boring", "brave", "busy", "charming", "clever", "cool"),
    *("compassionate", "competent", "confident", "dazzling", "determined", "eager"),
    *("ecstatic", "elegant", "epic"),
)
RIGHT = (
    *("albattani", "allen", "babbage", "bell", "curie", "darwin", "dijkstra", "einstein"),
    *("euclid", "fermat", "goldberg", "hamilton", "hopper", "kepler", "lamport"),
    *("lovelace", "meitner", "noether", "pasteur", "ritchie", "shannon", "thompson"),
    *("turing", "wozniak"),
)
# Draws before a digit goes on the end (moby's retry appends one: GetRandomName(retry)).
TRIES = 16


def generate(taken: Collection[str], rng: random.Random) -> str:
    """A name of the form adjective_surname that is not in `taken`."""
    for attempt in range(TRIES * 2):
        name = f"{rng.choice(LEFT)}_{rng.choice(RIGHT)}"
        if name == "boring_wozniak":  # moby: "Steve Wozniak is not boring"
            continue
        if attempt >= TRIES:
            name += str(rng.randrange(10))
        if name not in taken:
            return name
    # Every draw was taken (a swarm of thousands of generated names): a number makes it new.
    n = 1
    while f"service_{n}" in taken:
        n += 1
    return f"service_{n}"
