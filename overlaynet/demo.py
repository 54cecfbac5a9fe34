"""`overlaynet lab demo`: the tutorial typed into overlaynet, with a look under the hood."""

from __future__ import annotations


def run(lab: str, keep: bool = False) -> int:
    raise NotImplementedError
