"""Service load balancing and published ports on nftables, through libnftables' JSON API.

libnftables (and the conntrack netlink socket) act on the network namespace of the calling
thread, so each namespace gets a `NamespaceThread`: a thread that enters it once with setns(2)
and stays, running every request for that namespace in turn. Nothing here shells out to `nft`,
uses IPVS, or proxies in user space: the kernel does the work, per connection.

`VipBalancer` — one load-balancer namespace (the future `lb_<net>`). Its table:

    map vips { ipv4_addr . inet_proto . inet_service : verdict }   VIP:port/proto -> its chain
    map vips_any_port { ipv4_addr . inet_proto : verdict }        VIP/proto, every port
    chain prerouting (nat, dstnat):  ip daddr . l4proto . th dport vmap @vips
                                     ip daddr . l4proto vmap @vips_any_port
    chain v_<vip>_<proto>_<port>:    numgen random mod N == 0 goto b_<first>
                                     numgen random mod N-1 == 0 goto b_<second> … goto b_<last>
                                     (no backends: reject with tcp reset / icmp port-unreachable)
    chain b_<vip>_<proto>_<port>_<backend>: ct mark set LB_MARK counter dnat to BACKEND
    chain postrouting (nat, srcnat): ct mark LB_MARK snat to <the LB's own address>

Nat chains see only a connection's first packet, so conntrack keeps a connection on the backend
it got, and each backend chain's counter counts connections. Replacing a VIP's backends is one
transaction (one json_cmd: flush the VIP's chain, write its new rules, add and delete backend
chains), so no connection ever meets a half-written set. A removed backend's conntrack entries
are deleted afterwards, so its clients' next packet meets no NAT binding, is sent to a live
backend as a new flow and answered with a reset instead of hanging.

`PublishedPorts` — a host's published ports (routing mesh ingress and `run -p`): a table
`onet_ports` whose rules DNAT a local port to a target address:port, optionally masquerading
(when the target's reply would not come back through this host otherwise); removed whole on
cleanup.
"""

from __future__ import annotations

import contextlib
import os
import queue
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, TypeVar

from pyroute2 import Conntrack
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from overlaynet.host.nssocket import _setns, netns_path

T = TypeVar("T")

LB_TABLE = "onet_lb"
PORTS_TABLE = "onet_ports"
# ct marks that tell our SNAT which connections are ours: "on" 0x6f6e, then a kind.
LB_MARK = 0x6F6E0001
PORTS_MARK = 0x6F6E0002
# nftables' standard NAT priorities (`priority dstnat` / `srcnat`).
DSTNAT_PRIORITY = -100
SRCNAT_PRIORITY = 100
_IPPROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
# Per network namespace: how long an idle established TCP connection keeps its entry.
IDLE_TIMEOUT_SYSCTL = "net/netfilter/nf_conntrack_tcp_timeout_established"


class NftError(RuntimeError):
    """libnftables refused a transaction; nothing of it was applied (nft commits atomically)."""


class NamespaceThread:
    """A thread that has entered one network namespace and stays there, running calls."""

    def __init__(self, netns: str | None) -> None:
        self.netns = netns
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        entered: Future[None] = Future()
        self._thread = threading.Thread(
            target=self._run, args=(entered,), name=f"nft:{netns}", daemon=True
        )
        self._thread.start()
        entered.result()

    def _run(self, entered: Future[None]) -> None:
        try:
            if self.netns is not None:
                fd = os.open(netns_path(self.netns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(fd)
                finally:
                    os.close(fd)
        except BaseException as exc:
            entered.set_exception(exc)
            return
        entered.set_result(None)
        while (item := self._calls.get()) is not None:
            fn, result = item
            try:
                result.set_result(fn())
            except BaseException as exc:
                result.set_exception(exc)
        # The thread ends here, and its namespace reference with it.

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in the namespace and return its result (blocking; from trio, wrap in
        trio.to_thread.run_sync)."""
        if not self._thread.is_alive():
            raise RuntimeError(f"the thread for namespace {self.netns} has stopped")
        result: Future[T] = Future()
        self._calls.put((fn, result))
        return result.result()

    def close(self) -> None:
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join()


class _Nft:
    """One libnftables context, used only from its namespace's thread."""

    def __init__(self) -> None:
        # Imported with the first context, so an agent that balances and publishes nothing
        # never loads libnftables' binding (issue 15).
        import nftables  # type: ignore[import-untyped]

        self.ctx = nftables.Nftables()
        self.ctx.set_json_output(True)
        self.ctx.set_handle_output(True)

    def run(self, commands: list[dict[str, Any]]) -> dict[str, Any]:
        rc, output, error = self.ctx.json_cmd({"nftables": commands})
        if rc != 0:
            raise NftError(f"nftables refused the transaction: {str(error).strip()}")
        return output if isinstance(output, dict) else {}

    def list_table(self, family: str, table: str) -> list[dict[str, Any]]:
        """The table's objects as installed ([] when it does not exist)."""
        rc, output, _ = self.ctx.json_cmd(
            {"nftables": [{"list": {"table": {"family": family, "name": table}}}]}
        )
        if rc != 0 or not isinstance(output, dict):
            return []
        return [o for o in output.get("nftables", []) if "metainfo" not in o]

    def text(self, family: str, table: str) -> str:
        """The table in nft's own syntax, as `nft list table` prints it."""
        self.ctx.set_json_output(False)
        try:
            rc, output, _ = self.ctx.cmd(f"list table {family} {table}")
        finally:
            self.ctx.set_json_output(True)
        return str(output) if rc == 0 else ""


# ----- JSON building blocks (libnftables-json(5)) -----


def _table(name: str) -> dict[str, Any]:
    return {"family": "ip", "name": name}


def _chain(table: str, name: str, **hook: Any) -> dict[str, Any]:
    return {"chain": {"family": "ip", "table": table, "name": name, **hook}}


def _nat_hook(hook: str, prio: int) -> dict[str, Any]:
    return {"type": "nat", "hook": hook, "prio": prio, "policy": "accept"}


def _rule(table: str, chain: str, expr: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"rule": {"family": "ip", "table": table, "chain": chain, "expr": expr, **extra}}


def _match(left: dict[str, Any], right: Any) -> dict[str, Any]:
    return {"match": {"op": "==", "left": left, "right": right}}


def _ct_mark_set(mark: int) -> dict[str, Any]:
    return {"mangle": {"key": {"ct": {"key": "mark"}}, "value": mark}}


_DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
_L4PROTO = {"meta": {"key": "l4proto"}}
_DPORT = {"payload": {"protocol": "th", "field": "dport"}}


def _vmap(keys: list[dict[str, Any]], data: str) -> dict[str, Any]:
    return {"vmap": {"key": {"concat": keys}, "data": data}}


def _ct_mark_is(mark: int) -> dict[str, Any]:
    return _match({"ct": {"key": "mark"}}, mark)


def _fresh_table(name: str, body: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Create the table empty whether or not it existed: add (a no-op when present), delete,
    then build; one transaction, so no moment without it."""
    return [
        {"add": {"table": _table(name)}},
        {"delete": {"table": _table(name)}},
        {"add": {"table": _table(name)}},
        *({"add": item} for item in body),
    ]


# ----- the VIP load balancer -----


def _check_port(port: int | None, what: str) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"invalid {what} port {port}")


def _port_text(port: int | None) -> str:
    return "any" if port is None else str(port)


@dataclass(frozen=True)
class Backend:
    """A task behind a VIP; `port` None keeps the port the client asked for."""

    addr: str
    port: int | None = None

    def __post_init__(self) -> None:
        IPv4Address(self.addr)
        _check_port(self.port, "backend")

    @property
    def sort_key(self) -> tuple[int, int]:
        return (int(IPv4Address(self.addr)), self.port or 0)

    def __str__(self) -> str:
        return self.addr if self.port is None else f"{self.addr}:{self.port}"


@dataclass(frozen=True)
class VipKey:
    """A VIP's port and protocol; `port` None balances every port of that protocol, as
    Docker's VIP does for a service that publishes nothing (clients use the task's ports)."""

    vip: str
    port: int | None = None
    protocol: str = "tcp"

    def __post_init__(self) -> None:
        IPv4Address(self.vip)
        if self.protocol not in _IPPROTO:
            raise ValueError(f"invalid protocol {self.protocol!r}: use tcp or udp")
        _check_port(self.port, "VIP")

    @property
    def sort_key(self) -> tuple[int, str, int]:
        return (int(IPv4Address(self.vip)), self.protocol, self.port or 0)

    @property
    def chain(self) -> str:
        return f"v_{self.vip.replace('.', '_')}_{self.protocol}_{_port_text(self.port)}"

    def backend_chain(self, backend: Backend) -> str:
        return f"b_{self.chain[2:]}_{backend.addr.replace('.', '_')}_{_port_text(backend.port)}"

    def __str__(self) -> str:
        return f"{self.vip}:{'*' if self.port is None else self.port}/{self.protocol}"


@dataclass(frozen=True)
class BackendView:
    backend: Backend
    # New connections sent to it (nat chains see a connection's first packet only).
    connections: int
    # Its connections conntrack holds now (open, or closing and not yet expired).
    active: int = 0


@dataclass(frozen=True)
class VipView:
    key: VipKey
    backends: tuple[BackendView, ...]


@dataclass(frozen=True)
class LbView:
    """What is installed: per VIP its backends and their counters, and the table as text."""

    vips: tuple[VipView, ...]
    rules: str


class VipBalancer:
    """The VIPs of one load-balancer namespace. Not thread-safe: one owner calls it."""

    def __init__(self, netns: str, lb_addr: str, *, table: str = LB_TABLE) -> None:
        self.lb_addr = str(IPv4Address(lb_addr))
        self.table = table
        self._thread = NamespaceThread(netns)
        self._nft: _Nft = self._thread.call(_Nft)
        self._vips: dict[VipKey, tuple[Backend, ...]] = {}
        try:
            self._thread.call(self._install)
        except BaseException:
            self._thread.close()
            raise

    def _install(self) -> None:
        t = self.table
        # The LB namespace forwards between the VIP's clients and the backends.
        _write_sysctl("net/ipv4/ip_forward", "1")
        # It sends a DNATed packet back out the port it came in on (clients and tasks share
        # the network): no ICMP redirects. The kernel ORs `all` with each link's setting.
        for link in os.listdir("/proc/sys/net/ipv4/conf"):
            _write_sysctl(f"net/ipv4/conf/{link}/send_redirects", "0")
        cmds = _fresh_table(
            t,
            [
                {
                    "map": {
                        "family": "ip",
                        "table": t,
                        "name": "vips",
                        "type": ["ipv4_addr", "inet_proto", "inet_service"],
                        "map": "verdict",
                    }
                },
                {
                    "map": {
                        "family": "ip",
                        "table": t,
                        "name": "vips_any_port",
                        "type": ["ipv4_addr", "inet_proto"],
                        "map": "verdict",
                    }
                },
                _chain(t, "prerouting", **_nat_hook("prerouting", DSTNAT_PRIORITY)),
                _chain(t, "postrouting", **_nat_hook("postrouting", SRCNAT_PRIORITY)),
                # A VIP:port of its own first, then the VIP's every-port entry.
                _rule(t, "prerouting", [_vmap([_DADDR, _L4PROTO, _DPORT], "@vips")]),
                _rule(t, "prerouting", [_vmap([_DADDR, _L4PROTO], "@vips_any_port")]),
                _rule(t, "postrouting", [_ct_mark_is(LB_MARK), {"snat": {"addr": self.lb_addr}}]),
            ],
        )
        self._nft.run(cmds)

    def _vip_rules(self, key: VipKey, backends: Sequence[Backend]) -> list[dict[str, Any]]:
        """Backend i of n is taken with probability 1/(n-i) by rule i, so each gets 1/n (the
        last rule takes what is left): kube-proxy's iptables `statistic` chain, as rules only.

        Why not `numgen random mod n vmap { 0 : jump …, … }`: replacing that rule replaces its
        anonymous map, and a set lookup reads the generation anew, so a packet that entered
        the chain just before the commit can look the old map up with the new generation and
        match nothing: measured 2-3 SYNs in 15 000 connections left un-NATed while the set was
        swapped every millisecond (the client saw ENETUNREACH). Rules are read from one
        generation for the whole traversal, so swapping rules is atomic for every packet.
        """
        if not backends:
            # No task to send to: refuse at once rather than let the client time out.
            reject: dict[str, Any] = {"type": "tcp reset"}
            if key.protocol != "tcp":
                reject = {"type": "icmp", "expr": "port-unreachable"}
            proto = _match({"meta": {"key": "l4proto"}}, key.protocol)
            return [_rule(self.table, key.chain, [proto, {"reject": reject}])]
        rules = []
        n = len(backends)
        for i, backend in enumerate(backends):
            to = {"goto": {"target": key.backend_chain(backend)}}
            if i == n - 1:
                rules.append(_rule(self.table, key.chain, [to]))
            else:
                pick = _match({"numgen": {"mode": "random", "mod": n - i, "offset": 0}}, 0)
                rules.append(_rule(self.table, key.chain, [pick, to]))
        return rules

    def _backend_rule(self, key: VipKey, backend: Backend) -> dict[str, Any]:
        return _rule(
            self.table,
            key.backend_chain(backend),
            [
                _match({"meta": {"key": "l4proto"}}, key.protocol),
                _ct_mark_set(LB_MARK),
                {"counter": {"packets": 0, "bytes": 0}},
                {"dnat": _dnat_to(backend.addr, backend.port)},
            ],
        )

    def _element(self, key: VipKey) -> dict[str, Any]:
        match: list[str | int]
        if key.port is None:
            name, match = "vips_any_port", [key.vip, key.protocol]
        else:
            name, match = "vips", [key.vip, key.protocol, key.port]
        return {
            "element": {
                "family": "ip",
                "table": self.table,
                "name": name,
                "elem": [[{"concat": match}, {"goto": {"target": key.chain}}]],
            }
        }

    def set_backends(
        self, key: VipKey, backends: Sequence[Backend], *, cut_removed: bool = True
    ) -> None:
        """Make `backends` the VIP's whole set, in one atomic transaction. The connections of
        backends that left are then cut (their conntrack entries deleted) unless `cut_removed`
        is False: a task leaving on purpose (a rolling update) may finish what it serves."""
        new = tuple(sorted(set(backends), key=lambda b: b.sort_key))
        old = self._vips.get(key)
        cmds: list[dict[str, Any]] = []
        if old is None:
            cmds.append({"add": _chain(self.table, key.chain)})
        else:
            cmds.append({"flush": _chain(self.table, key.chain)})
        for b in new:
            if old is None or b not in old:
                cmds.append({"add": _chain(self.table, key.backend_chain(b))})
                cmds.append({"add": self._backend_rule(key, b)})
        cmds += [{"add": r} for r in self._vip_rules(key, new)]
        gone = [b for b in old or () if b not in new]
        for b in gone:
            cmds.append({"delete": _chain(self.table, key.backend_chain(b))})
        if old is None:
            cmds.append({"add": self._element(key)})
        self._thread.call(lambda: self._nft.run(cmds))
        self._vips[key] = new
        if gone and cut_removed:
            self._thread.call(lambda: _delete_conntrack(key, gone))

    def remove_vip(self, key: VipKey) -> None:
        """Stop answering the VIP: its map entry and chains go in one transaction; its
        backends' connections are cut."""
        old = self._vips.pop(key, None)
        if old is None:
            return
        cmds: list[dict[str, Any]] = [
            {"delete": self._element(key)},
            {"delete": _chain(self.table, key.chain)},
        ]
        cmds += [{"delete": _chain(self.table, key.backend_chain(b))} for b in old]
        self._thread.call(lambda: self._nft.run(cmds))
        if old:
            self._thread.call(lambda: _delete_conntrack(key, list(old)))

    def view(self) -> LbView:
        """Per VIP its backends with their connection counts, read back from the kernel."""
        objects = self._thread.call(lambda: self._nft.list_table("ip", self.table))
        counters: dict[str, int] = {}
        for obj in objects:
            rule = obj.get("rule")
            if rule is None:
                continue
            for expr in rule.get("expr", []):
                if "counter" in expr:
                    counters[rule["chain"]] = int(expr["counter"].get("packets", 0))
        active = self._thread.call(_conntrack_counts)
        vips = tuple(
            VipView(
                key,
                tuple(
                    BackendView(
                        b,
                        counters.get(key.backend_chain(b), 0),
                        _active(active, key, b),
                    )
                    for b in backends
                ),
            )
            for key, backends in sorted(self._vips.items(), key=lambda kv: kv[0].sort_key)
        )
        text = self._thread.call(lambda: self._nft.text("ip", self.table))
        return LbView(vips, text)

    def idle_timeout(self) -> int:
        """Seconds an idle established TCP connection keeps its conntrack entry (so its NAT
        binding) in this namespace: nf_conntrack_tcp_timeout_established, as the kernel has it."""
        return self._thread.call(lambda: int(_read_sysctl(IDLE_TIMEOUT_SYSCTL)))

    def set_idle_timeout(self, seconds: int) -> None:
        """Set it for this namespace (every VIP here; entries already idle keep their clock)."""
        if seconds < 1:
            raise NftError(f"idle timeout {seconds} s: at least 1 s")
        self._thread.call(lambda: _write_sysctl(IDLE_TIMEOUT_SYSCTL, str(seconds)))

    def close(self, *, remove: bool = True) -> None:
        """Stop the namespace thread; with `remove`, delete the table first."""
        try:
            if remove:
                self._thread.call(lambda: _delete_table(self._nft, self.table))
        finally:
            self._thread.close()

    def __enter__(self) -> VipBalancer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _dnat_to(addr: str, port: int | None) -> dict[str, Any]:
    return {"addr": addr} if port is None else {"addr": addr, "port": port}


def _write_sysctl(key: str, value: str) -> None:
    """Write /proc/sys/KEY; from a namespace thread, that namespace's value."""
    with open(f"/proc/sys/{key}", "w") as f:
        f.write(value)


def _read_sysctl(key: str) -> str:
    """Read /proc/sys/KEY; from a namespace thread, that namespace's value."""
    with open(f"/proc/sys/{key}") as f:
        return f.read().strip()


def _delete_table(nft: _Nft, table: str) -> None:
    with contextlib.suppress(NftError):
        nft.run([{"delete": {"table": _table(table)}}])


def _delete_conntrack(key: VipKey, backends: Sequence[Backend]) -> int:
    """Delete the conntrack entries of this VIP's connections NATed to these backends (in this
    thread's namespace): sent to the VIP (and port), answered from the backend. A backend
    that also serves another VIP keeps those connections."""
    deleted = 0
    proto = _IPPROTO[key.protocol]
    orig = NFCTAttrTuple(daddr=key.vip, dport=key.port, proto=proto, family=socket.AF_INET)
    with _conntrack() as ct:
        for b in backends:
            reply = NFCTAttrTuple(saddr=b.addr, sport=b.port, proto=proto, family=socket.AF_INET)
            for entry in list(ct.dump_entries(tuple_orig=orig, tuple_reply=reply)):
                # Gone already (it timed out meanwhile) is as good as deleted.
                with contextlib.suppress(Exception):
                    ct.delete(entry)
                    deleted += 1
    return deleted


# (protocol number, original destination, its port, replying address, its port) -> entries
_FlowCounts = Counter[tuple[int, str, int, str, int]]


def _conntrack_counts() -> _FlowCounts:
    """Every conntrack entry of this thread's namespace, counted by where it was sent and who
    answers it (one dump, however many VIPs)."""
    counts: _FlowCounts = Counter()
    with _conntrack() as ct:
        for entry in ct.dump_entries():
            o, r = entry.tuple_orig, entry.tuple_reply
            counts[(o.proto, o.daddr, o.dport or 0, r.saddr, r.sport or 0)] += 1
    return counts


def _active(counts: _FlowCounts, key: VipKey, backend: Backend) -> int:
    proto = _IPPROTO[key.protocol]
    return sum(
        n
        for (p, daddr, dport, saddr, sport), n in counts.items()
        if p == proto
        and daddr == key.vip
        and (key.port is None or dport == key.port)
        and saddr == backend.addr
        and (backend.port is None or sport == backend.port)
    )


@contextlib.contextmanager
def _conntrack() -> Iterator[Any]:
    ct = Conntrack()
    try:
        yield ct
    finally:
        ct.close()


# ----- published ports -----


@dataclass(frozen=True, order=True)
class PortMapping:
    """A host's `published`/`protocol` port DNATed to `target_addr:target_port`."""

    published: int
    protocol: str
    target_addr: str
    target_port: int
    # Rewrite the source to this host's address: needed when the target would answer the
    # client directly (same subnet, or the ingress sandbox); off for `run -p` on a bridge,
    # whose containers route back through the host, so they see the client's own address.
    masquerade: bool = False

    def __post_init__(self) -> None:
        IPv4Address(self.target_addr)
        if self.protocol not in _IPPROTO:
            raise ValueError(f"invalid protocol {self.protocol!r}: use tcp or udp")
        for port in (self.published, self.target_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"invalid port {port}")

    @property
    def comment(self) -> str:
        return f"{self.protocol}/{self.published}"

    def __str__(self) -> str:
        return f"{self.published}/{self.protocol} -> {self.target_addr}:{self.target_port}"


class PublishedPorts:
    """The published ports of one host namespace (None: the caller's own)."""

    def __init__(self, netns: str | None, *, table: str = PORTS_TABLE) -> None:
        if not table.startswith("onet"):
            raise ValueError(f"table {table!r}: the project's tables are named onet…")
        self.table = table
        self._thread = NamespaceThread(netns)
        self._nft: _Nft = self._thread.call(_Nft)
        self._ports: dict[tuple[int, str], PortMapping] = {}
        try:
            self._thread.call(self._install)
        except BaseException:
            self._thread.close()
            raise

    def _install(self) -> None:
        if self._thread.netns is not None:
            # DNAT to another namespace means forwarding. Only in a namespace we were given:
            # the caller's own (a real host's root) keeps the forwarding its owner set.
            _write_sysctl("net/ipv4/ip_forward", "1")
        t = self.table
        cmds = _fresh_table(
            t,
            [
                _chain(t, "prerouting", **_nat_hook("prerouting", DSTNAT_PRIORITY)),
                # Connections this host makes to its own published ports.
                _chain(t, "output", **_nat_hook("output", DSTNAT_PRIORITY)),
                _chain(t, "postrouting", **_nat_hook("postrouting", SRCNAT_PRIORITY)),
                _rule(t, "postrouting", [_ct_mark_is(PORTS_MARK), {"masquerade": None}]),
            ],
        )
        self._nft.run(cmds)

    def _rules(self, m: PortMapping) -> list[dict[str, Any]]:
        expr: list[dict[str, Any]] = [
            _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
            _match({"payload": {"protocol": m.protocol, "field": "dport"}}, m.published),
        ]
        if m.masquerade:
            expr.append(_ct_mark_set(PORTS_MARK))
        expr += [
            {"counter": {"packets": 0, "bytes": 0}},
            {"dnat": {"addr": m.target_addr, "port": m.target_port}},
        ]
        return [_rule(self.table, c, expr, comment=m.comment) for c in ("prerouting", "output")]

    def add(self, mapping: PortMapping) -> None:
        """Publish a port (replacing what that port did before, in one transaction)."""
        key = (mapping.published, mapping.protocol)
        cmds = self._thread.call(lambda: self._delete_commands(mapping.comment))
        cmds += [{"add": r} for r in self._rules(mapping)]
        self._thread.call(lambda: self._nft.run(cmds))
        self._ports[key] = mapping

    def remove(self, published: int, protocol: str = "tcp") -> None:
        self._ports.pop((published, protocol), None)
        comment = f"{protocol}/{published}"
        cmds = self._thread.call(lambda: self._delete_commands(comment))
        if cmds:
            self._thread.call(lambda: self._nft.run(cmds))

    def _delete_commands(self, comment: str) -> list[dict[str, Any]]:
        out = []
        for obj in self._nft.list_table("ip", self.table):
            rule = obj.get("rule")
            if rule is not None and rule.get("comment") == comment:
                out.append(
                    {
                        "delete": {
                            "rule": {
                                "family": "ip",
                                "table": self.table,
                                "chain": rule["chain"],
                                "handle": rule["handle"],
                            }
                        }
                    }
                )
        return out

    def mappings(self) -> list[PortMapping]:
        return sorted(self._ports.values())

    def rules(self) -> str:
        return self._thread.call(lambda: self._nft.text("ip", self.table))

    def close(self, *, remove: bool = True) -> None:
        try:
            if remove:
                self._thread.call(lambda: _delete_table(self._nft, self.table))
        finally:
            self._thread.close()

    def __enter__(self) -> PublishedPorts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def table_exists(netns: str | None, table: str) -> bool:
    """Whether `table` (family ip) is installed in `netns` (for cleanup checks)."""
    thread = NamespaceThread(netns)
    try:
        return bool(thread.call(lambda: _Nft().list_table("ip", table)))
    finally:
        thread.close()
