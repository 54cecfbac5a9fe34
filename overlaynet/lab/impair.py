"""Breaking a lab on purpose: impairments and partitions (`lab impair`, `lab partition`,
`lab heal`).

Two places act, because this kernel has no netem and the data plane is ours:
- overlay traffic (VXLAN) is impaired in the sending host's VTEP (`dataplane.impair`): loss,
  delay, jitter, duplicate, reorder, rate, seeded; each agent keeps its table across restarts.
- everything else a host sends on the underlay (gossip udp+tcp/7946, cluster tcp/2377) meets
  nftables in that host's namespace, in a table of our own, `ip onet_impair`: a partition drops
  all traffic, VXLAN included, between the groups; `--loss` drops that share of the non-VXLAN
  packets (`numgen random mod 10000 < 100 P`: the kernel's random numbers, not the seed). nftables
  cannot delay, so delay, jitter, duplicate, reorder and rate apply to overlay traffic only.

What is active is written in the lab's folder (`impair.json`), so `lab ls` shows it and every
change rebuilds each host's table from the whole record in one transaction. `lab down` needs no
step of its own: the tables die with the namespaces, the record and the agents' tables with the
lab's folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nftables  # type: ignore[import-untyped]

from overlaynet import api
from overlaynet.dataplane.impair import ALL_PEERS, Impairment, ImpairmentError
from overlaynet.host.nft import NamespaceThread
from overlaynet.lab.lifecycle import LabError, LabHost, read_hosts
from overlaynet.names import check_lab_name, lab_namespace
from overlaynet.paths import HostPaths, lab_dir, write_private

TABLE = "onet_impair"
#: Before the default filter priority (0), so a partition's drop comes before any accept of a
#: firewall a learner may add to a lab host.
FILTER_PRIORITY = -10
#: VXLAN's port (RFC 7348): overlay datagrams are impaired in the VTEP, never twice here.
VXLAN_PORT = 4789
#: What nftables cannot do on the underlay, said wherever impairments are shown.
OVERLAY_ONLY = "delay, jitter, duplicate, reorder and rate apply to overlay traffic only"


@dataclass(frozen=True)
class HostImpairment:
    """`lab impair HOST [--to PEER]`: what HOST sends (to PEER, or to every other host)."""

    host: str
    to: str | None
    impairment: Impairment

    def to_doc(self) -> dict[str, Any]:
        return {"host": self.host, "to": self.to, "impairment": self.impairment.to_doc()}


@dataclass
class LabImpairments:
    """The lab's record: impairments by (host, peer) and partitions (lists of host groups)."""

    impairments: list[HostImpairment] = field(default_factory=list)
    partitions: list[list[list[str]]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.impairments and not self.partitions

    def to_doc(self) -> dict[str, Any]:
        return {
            "impairments": [i.to_doc() for i in self.impairments],
            "partitions": self.partitions,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LabImpairments:
        return cls(
            [
                HostImpairment(d["host"], d["to"], Impairment.from_doc(d["impairment"]))
                for d in doc.get("impairments", [])
            ],
            [[list(g) for g in p] for p in doc.get("partitions", [])],
        )

    def lines(self) -> list[str]:
        """Human lines for `lab ls`."""
        out = [
            f"impair {i.host} -> {i.to or 'all'}: {i.impairment.describe()}"
            for i in self.impairments
        ]
        out += ["partition " + " | ".join(",".join(g) for g in p) for p in self.partitions]
        return out


def record_file(lab: str) -> Path:
    return lab_dir(lab) / "impair.json"


def load(lab: str) -> LabImpairments:
    try:
        return LabImpairments.from_doc(json.loads(record_file(lab).read_text()))
    except FileNotFoundError:
        return LabImpairments()
    except (ValueError, KeyError, TypeError, ImpairmentError) as e:
        raise LabError(
            f"{record_file(lab)} is damaged ({e}): `overlaynet lab heal` resets it"
        ) from None


def _save(lab: str, record: LabImpairments) -> None:
    if record.empty:
        record_file(lab).unlink(missing_ok=True)
    else:
        write_private(record_file(lab), json.dumps(record.to_doc(), indent=2))


def _hosts(lab: str) -> dict[str, LabHost]:
    check_lab_name(lab)
    hosts = {h.name: h for h in read_hosts(lab)}
    if not hosts:
        raise LabError(f"lab {lab} is not up: `overlaynet lab up --name {lab}` first")
    return hosts


def _known(hosts: dict[str, LabHost], name: str, lab: str) -> LabHost:
    if name not in hosts:
        raise LabError(f"lab {lab} has no host {name!r} (it has {', '.join(sorted(hosts))})")
    return hosts[name]


# ---- the operations ---------------------------------------------------------------------------


def impair(lab: str, host: str, to: str | None, impairment: Impairment) -> LabImpairments:
    """Impair what `host` sends (to `to`, or to every other host): in its VTEP and, for
    `loss`, in its nftables table. An empty impairment ends what was set for that pair."""
    hosts = _hosts(lab)
    _known(hosts, host, lab)
    if to is not None and _known(hosts, to, lab).name == host:
        raise LabError(f"--to {to}: a host does not send overlay traffic to itself")
    peer = hosts[to].ip if to is not None else ALL_PEERS
    _agent(lab, host).call("impair", action="set", peer=peer, **_args(impairment))
    record = load(lab)
    record.impairments = [i for i in record.impairments if (i.host, i.to) != (host, to)]
    if not impairment.empty:
        record.impairments.append(HostImpairment(host, to, impairment))
    _save(lab, record)
    _apply(lab, hosts, record)
    return record


def partition(lab: str, groups: Sequence[str]) -> LabImpairments:
    """Cut the lab into groups that cannot reach each other ('node1,node2' 'node3'); one
    group is cut off from the rest. Hosts not named stay with the first group: with them left
    on no side, SWIM's indirect probes through them would keep the far side Alive (that is
    what ping-req is for), and `partition node1 node2` should cut node2 off from node1 for
    real. Adds to partitions made before."""
    hosts = _hosts(lab)
    parsed = [[n for n in g.split(",") if n] for g in groups]
    if not parsed or not all(parsed):
        raise LabError("name at least one group of hosts, e.g. `lab partition node1 node2`")
    seen: set[str] = set()
    for group in parsed:
        for name in group:
            _known(hosts, name, lab)
            if name in seen:
                raise LabError(f"{name} is in two groups: a host is on one side of a partition")
            seen.add(name)
    rest = [n for n in hosts if n not in seen]
    if len(parsed) == 1:
        if not rest:
            raise LabError("that group is the whole lab: name hosts to cut off from the rest")
        parsed.append(rest)
    else:
        parsed[0] += rest
    record = load(lab)

    def sides(p: list[list[str]]) -> frozenset[frozenset[str]]:
        return frozenset(frozenset(g) for g in p)

    # The same cut named again (in another order) is recorded once.
    if sides(parsed) not in {sides(p) for p in record.partitions}:
        record.partitions.append(parsed)
    _save(lab, record)
    _apply(lab, hosts, record)
    return record


def heal(lab: str, host: str | None = None) -> LabImpairments:
    """End every impairment and partition (or those `host` is part of, as sender, peer or
    partition member). Nothing of ours is left in the hosts' namespaces once all is healed."""
    hosts = _hosts(lab)
    if host is not None:
        _known(hosts, host, lab)
    if host is None:
        for name in hosts:
            _agent(lab, name).call("impair", action="clear", peer=ALL_PEERS)
        record = LabImpairments()
    else:
        record = load(lab)
        for item in record.impairments:
            if host in (item.host, item.to):
                peer = hosts[item.to].ip if item.to is not None else ALL_PEERS
                _agent(lab, item.host).call("impair", action="clear", peer=peer)
        record.impairments = [i for i in record.impairments if host not in (i.host, i.to)]
        record.partitions = [p for p in record.partitions if not any(host in g for g in p)]
    _save(lab, record)
    _apply(lab, hosts, record)
    return record


def active(lab: str) -> list[str]:
    """What `lab ls` shows for the lab ([] when nothing is impaired)."""
    try:
        return load(lab).lines()
    except LabError as e:
        return [str(e)]


def _agent(lab: str, host: str) -> api.Client:
    return api.Client(HostPaths(host, lab).socket, timeout=10)


def _args(impairment: Impairment) -> dict[str, Any]:
    return impairment.to_doc()


# ---- nftables on the underlay ---------------------------------------------------------------


def _match(left: dict[str, Any], right: Any, op: str = "==") -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _addresses(ips: list[str]) -> Any:
    return ips[0] if len(ips) == 1 else {"set": sorted(ips)}


_SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}


def table_commands(host: str, hosts: dict[str, LabHost], record: LabImpairments) -> list[Any]:
    """The libnftables JSON commands that make `host`'s table what the record says: one
    transaction that removes it and (when anything applies to this host) builds it anew."""
    table = {"family": "ip", "name": TABLE}
    commands: list[Any] = [{"add": {"table": table}}, {"delete": {"table": table}}]
    rules: list[tuple[str, list[dict[str, Any]]]] = []
    for groups in record.partitions:
        mine = next((g for g in groups if host in g), None)
        if mine is None:
            continue
        others = [hosts[n].ip for g in groups if g is not mine for n in g]
        rules.append(("input", [_match(_SADDR, _addresses(others)), {"drop": None}]))
        rules.append(("output", [_match(_DADDR, _addresses(others)), {"drop": None}]))
    loss = [i for i in record.impairments if i.host == host and i.impairment.loss]
    if loss:
        # VXLAN leaves the loss chain first: the VTEP impairs it already.
        rules.append(("output", [{"jump": {"target": "loss"}}]))
        port = {"payload": {"protocol": "udp", "field": "dport"}}
        rules.append(("loss", [_match(port, VXLAN_PORT), {"return": None}]))
        for item in loss:
            peers = (
                [hosts[item.to].ip] if item.to else [h.ip for n, h in hosts.items() if n != host]
            )
            # Per ten thousand, so a fractional --loss (0.5 %) is kept, not rounded away.
            numgen = {"numgen": {"mode": "random", "mod": 10000, "offset": 0}}
            expr = [
                _match(_DADDR, _addresses(peers)),
                _match(numgen, round(item.impairment.loss * 100), "<"),
                {"counter": {"packets": 0, "bytes": 0}},
                {"drop": None},
            ]
            rules.append(("loss", expr))
    if not rules:
        return commands
    commands.append({"add": {"table": table}})
    for name, hook in (("input", "input"), ("output", "output")):
        chain = {"family": "ip", "table": TABLE, "name": name, "type": "filter", "hook": hook}
        commands.append({"add": {"chain": {**chain, "prio": FILTER_PRIORITY, "policy": "accept"}}})
    if loss:
        commands.append({"add": {"chain": {"family": "ip", "table": TABLE, "name": "loss"}}})
    for chain_name, expr in rules:
        rule = {"family": "ip", "table": TABLE, "chain": chain_name, "expr": expr}
        commands.append({"add": {"rule": rule}})
    return commands


def _apply(lab: str, hosts: dict[str, LabHost], record: LabImpairments) -> None:
    for name in hosts:
        run_in(lab_namespace(lab, name), table_commands(name, hosts, record))


def run_in(netns: str, commands: list[Any]) -> None:
    """One libnftables transaction in `netns` (all or nothing)."""
    thread = NamespaceThread(netns)
    try:
        rc, _out, error = thread.call(lambda: _nft().json_cmd({"nftables": commands}))
    finally:
        thread.close()
    if rc != 0:
        raise LabError(f"nftables refused the impairment table in {netns}: {str(error).strip()}")


def table_text(netns: str) -> str:
    """`nft list table ip onet_impair` in `netns` ('' when there is none)."""
    thread = NamespaceThread(netns)
    try:
        rc, out, _ = thread.call(lambda: _nft(json_output=False).cmd(f"list table ip {TABLE}"))
    finally:
        thread.close()
    return str(out) if rc == 0 else ""


def _nft(*, json_output: bool = True) -> Any:
    ctx = nftables.Nftables()
    ctx.set_json_output(json_output)
    return ctx
