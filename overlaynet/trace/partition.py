"""Whether the lab's partition rules cut a peer off from the trace's source host (pure part
and the look-up), so a probe that never reached a peer's VTEP is blamed on the rule that dropped
it, not on the underlay in general.

`lab partition` writes its groups in the lab's impairment record and drops the traffic between
them in each host's nftables table `ip onet_impair` (`lab.impair`); both are read here: the
record says who is cut off, the installed table confirms the rule is there.
"""

from __future__ import annotations

from collections.abc import Sequence


def cut_off(partitions: Sequence[Sequence[Sequence[str]]], source: str, peer: str) -> bool:
    """Whether any partition puts `source` and `peer` in different groups."""
    for groups in partitions:
        mine = next((g for g in groups if source in g), None)
        theirs = next((g for g in groups if peer in g), None)
        if mine is not None and theirs is not None and mine is not theirs:
            return True
    return False


def rule_text(table: str, peer_ip: str) -> str:
    """The drop rule of `table` (nft's text) that names `peer_ip`, or ''."""
    for line in table.splitlines():
        words = line.split()
        if "drop" in words and any(w.strip("{},") == peer_ip for w in words):
            return " ".join(words)
    return ""


def partitioned(lab: str, source: str, peers: dict[str, str]) -> dict[str, str]:
    """The peers (name → underlay address) the lab's partitions cut off from `source`, each
    with the reason as a trace prints it; {} outside a lab or when nothing is partitioned."""
    from overlaynet.lab import impair
    from overlaynet.lab.lifecycle import LabError
    from overlaynet.names import lab_namespace

    try:
        record = impair.load(lab)
    except LabError:
        return {}
    found = {p: ip for p, ip in peers.items() if cut_off(record.partitions, source, p)}
    if not found:
        return {}
    table = impair.table_text(lab_namespace(lab, source))
    out = {}
    for peer, ip in found.items():
        rule = rule_text(table, ip)
        where = f"table ip {impair.TABLE} on {source}"
        out[peer] = f"lab partition: {where}: {rule}" if rule else f"lab partition ({where})"
    return out
