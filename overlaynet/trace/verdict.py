"""Per-stage records in, hops and a stopping reason out (pure): the reading of a trace.

The path is walked in order, as `ovs-appctl ofproto/trace` walks its tables: each stage either
shows the probe passing (a hop, with what it decided) or is where it stopped, and the first
stage without a sign of the probe is named with the most specific reason its records give.
"""

from __future__ import annotations

import errno
from typing import Any

from overlaynet.trace.model import (
    Capture,
    Hop,
    PeerReport,
    Resolution,
    SourceReport,
    Stop,
    Trace,
)

#: send(2) errors that mean "no route out of the container toward that address".
_NO_ROUTE = {errno.errorcode[e] for e in (errno.ENETUNREACH, errno.EHOSTUNREACH)}


def explain(
    source: SourceReport | None,
    peers: list[PeerReport],
    resolution: Resolution | None = None,
    host: str = "",
) -> Trace:
    """The trace of one probe from the records of the source host and of every other host
    (`host`: the source host's name, for a trace that stopped before it sent anything)."""
    hops: list[Hop] = []
    if resolution is not None:
        if resolution.address is None:
            where = f" on network {resolution.network}" if resolution.network else ""
            why = f"name {resolution.name} not resolvable{where}"
            why += f" ({resolution.server} answered {resolution.rcode})"
            host = source.host if source is not None else host
            return Trace([], False, Stop(host, "dns", why), resolution)
        hops.append(
            Hop(
                source.host if source else "",
                "dns",
                f"resolver {resolution.server}",
                f"{resolution.record or resolution.name + ' A ' + resolution.address}",
            )
        )
    if source is None:
        return Trace(hops, False, Stop("", "container", "the probe was not sent"), resolution)
    walk = _Walk(source, peers, hops)
    stop = walk.run()
    if stop is None:
        stop = _filtered(source)
    outcome = _outcome(source) if stop is None else ""
    return Trace(hops, stop is None, stop, resolution, outcome)


def _filtered(s: SourceReport) -> Stop | None:
    """The stop when the answer came from a load balancer's rule, not from a task: a VIP
    with no running task is rejected in its sandbox's nft table (`host.nft.VipBalancer`)."""
    lb = s.lb
    if not lb or lb.get("rule") != "reject" or not s.reply:
        return None
    service = f" of service {lb['service']}" if lb.get("service") else ""
    why = (
        f"filtered by a service rule: VIP {lb.get('key', s.dst_ip)}{service} has no running "
        f"task, and table ip {lb.get('table', 'onet_lb')} in {lb.get('sandbox', 'its sandbox')} "
        f"rejects it ({s.reply})"
    )
    return Stop(s.host, "destination", why)


def _outcome(s: SourceReport) -> str:
    """What the answer says about the destination's port (a closed port's RST is an answer:
    the path works, nothing listens there)."""
    port = s.proto.replace(":", "/")
    who = s.dst_container or s.dst_ip
    if "RST" in s.reply:
        return f"reset by the destination {who}: nothing listens on {port}"
    if "port unreachable" in s.reply:
        return f"refused by the destination {who}: nothing listens on {port}"
    if "SYN-ACK" in s.reply:
        return f"{who} listens on {port}"
    if s.lb and s.lb.get("backend"):
        return f"through VIP {s.lb.get('key')} by {s.lb['backend']}"
    return f"{s.reply or 'a reply'} from {who}"


class _Walk:
    """One walk along the path, appending hops; `run` returns the stop (None: answered)."""

    def __init__(self, source: SourceReport, peers: list[PeerReport], hops: list[Hop]) -> None:
        self.s = source
        self.peers = peers
        self.hops = hops
        self.by_ip = {p.ip: p for p in peers}

    def _seen(self, stage: str, kind: str, port: str | None = None) -> Capture | None:
        for c in self.s.captures:
            if c.stage == stage and c.kind == kind and (port is None or c.port == port):
                return c
        return None

    def _hop(self, stage: str, where: str, decision: str, t: float | None, host: str = "") -> None:
        self.hops.append(Hop(host or self.s.host, stage, where, decision, t))

    def run(self) -> Stop | None:
        s = self.s
        host = s.host
        what = f"{s.proto} {s.src_ip} > {s.dst_ip} id {s.ip_id} len {s.size} DF"
        if s.send_error is not None:
            if s.send_error == "EMSGSIZE":
                why = f"too big for the MTU {s.mtu} with DF ({s.size} bytes)"
                return Stop(host, "container", f"{s.container} {s.ifname}: {why}")
            if s.send_error in _NO_ROUTE or s.network is None:
                nets = ", ".join(s.networks) or "none"
                why = f"no route: {s.dst_ip} is not on a network of {s.container} ({nets})"
                return Stop(host, "container", why)
            return Stop(host, "container", f"{s.container} could not send: {s.send_error}")
        if s.network is None:
            nets = ", ".join(s.networks) or "none"
            self._hop(
                "container", f"{s.container} {s.ifname}", f"sent {what} (default route)", s.sent_at
            )
            why = f"no route: {s.dst_ip} is not on a network of {s.container} ({nets})"
            return Stop(host, "container", why)
        out = self._seen("container", "probe")
        asked = self._seen("container", "arp-request") is not None
        if out is None and asked and self._seen("container", "arp-reply") is None:
            why = (
                f"ARP for {s.dst_ip} unanswered: {s.container} asked who-has and nobody "
                f"on {s.network} answered, so the probe never left"
            )
            return Stop(host, "container", why)
        veth = self._seen("veth", "probe")
        if out is None and veth is None:
            # Sent, yet seen on no port: the kernel still held it (a neighbour entry not
            # resolved within the wait), so it is the container, not the veth, that kept it.
            why = (
                f"the probe never left {s.container} {s.ifname}: no ARP answer for {s.dst_ip} "
                "came within the wait"
            )
            return Stop(host, "container", why)
        self._hop(
            "container",
            f"{s.container} {s.ifname}",
            f"sent {what} on {s.network}",
            out.t if out else s.sent_at,
        )
        if veth is None:
            return Stop(host, "veth", f"never reached the host end of {s.container}'s veth")
        self._hop("veth", veth.port, f"{veth.src_mac} > {veth.dst_mac}", veth.t)
        learned = s.bridge_fdb.get(veth.dst_mac)
        fdb = f"MAC {veth.dst_mac} learned on {learned}" if learned else "MAC not learned: flooded"
        port = self._seen("port", "probe", s.tap)
        if port is None:
            if s.same_host:
                why = f"{s.bridge} forwarded it to no port of {s.dst_container or s.dst_ip} ({fdb})"
            else:
                why = (
                    f"{s.bridge} did not forward it to the TAP {s.tap} ({fdb}; "
                    "is the destination's ARP answered on this network?)"
                )
            return Stop(host, "bridge", why)
        self._hop("bridge", s.bridge, f"to port {port.port} ({fdb})", port.t)
        if s.same_host:
            return self._answer_local(port)
        return self._remote()

    def _answer_local(self, port: Capture) -> Stop | None:
        s = self.s
        if s.reply_at is None:
            why = f"{s.dst_container or s.dst_ip} received it and did not answer"
            return Stop(s.host, "destination", why)
        self._hop("destination", s.dst_container or s.dst_ip, "received", port.t)
        self._reply_hops()
        return None

    def _remote(self) -> Stop | None:
        s = self.s
        out = _first(s.vtep, "vtep.egress", "probe")
        if out is None:
            return Stop(s.host, "vtep", f"the VTEP never read it from {s.tap}")
        decision = str(out["decision"])
        vni = out["vni"]
        if decision == "drop_no_fdb_no_peers":
            why = (
                f"no FDB entry for {out['inner_dst_mac']} on VNI {vni} and no peers to flood "
                "to: dropped (tx_drop_no_peers)"
            )
            return Stop(s.host, "vtep", self._gone() + why)
        if decision == "drop_too_big":
            why = f"frame of {out['length']} octets too big for the MTU {out['mtu']}"
            return Stop(s.host, "vtep", why)
        targets = [str(t) for t in out.get("targets", [])]
        how = "FDB hit" if decision == "fdb_hit" else "no FDB entry: flooded"
        sealed = f", sealed with key {out.get('key_id')}" if out.get("encrypted") else ""
        self._hop(
            "vtep",
            f"VTEP {out['outer_src']}",
            f"{how} {out['inner_dst_mac']} -> {', '.join(targets)}, VNI {vni}{sealed}",
            float(out["t"]),
        )
        self._hop(
            "underlay",
            "eth0",
            f"UDP {out['outer_src']}:{out['source_port']} > {', '.join(targets)}:4789 VXLAN "
            f"vni {vni}" + (" (AES-GCM sealed)" if sealed else ""),
            float(out["t"]),
        )
        delivered: tuple[PeerReport, dict[str, Any]] | None = None
        stops: list[Stop] = []
        for target in targets:
            peer = self.by_ip.get(target)
            if peer is None:
                stops.append(Stop(target, "peer-vtep", f"{target} is no host this trace asked"))
                continue
            if peer.down is not None:
                why = f"peer VTEP never received it; host {peer.host} is Down ({peer.down})"
                stops.append(Stop(peer.host, "peer-vtep", why))
                continue
            got = _first(peer.vtep, "vtep.ingress", "probe")
            if got is None:
                stops.append(Stop(peer.host, "peer-vtep", self._not_received(peer)))
                continue
            decision = str(got["decision"])
            if decision != "to_tap":
                why = {
                    "drop_not_member": f"dropped: {got['outer_src']} is not a member host",
                    "drop_unknown_vni": f"dropped: unknown VNI {got['vni']}",
                    "drop_too_big": "dropped: frame too big for the network's MTU",
                }.get(decision, decision)
                stops.append(Stop(peer.host, "peer-vtep", why))
                continue
            opened = f", opened with key {got.get('key_id')}" if got.get("encrypted") else ""
            self._hop(
                "peer-vtep",
                f"VTEP {peer.ip}",
                f"member {got['outer_src']}, VNI {got['vni']}{opened}: to the TAP",
                float(got["t"]),
                peer.host,
            )
            delivered = (peer, got)
            break
        if delivered is None:
            return stops[0] if stops else Stop(s.host, "underlay", "sent to no host")
        peer, _ = delivered
        back = _first(peer.vtep, "vtep.egress", "reply")
        if back is None:
            if s.reply_at is not None:
                self._reply_hops()
                return None
            why = f"{s.dst_ip} on {peer.host} did not answer (nothing came back to its VTEP)"
            return Stop(peer.host, "destination", why)
        self._hop("destination", s.dst_ip, "answered", float(back["t"]), peer.host)
        self._hop(
            "reply",
            f"VTEP {peer.ip}",
            f"{back['decision'].replace('_', ' ')} -> {', '.join(back.get('targets', []))}",
            float(back["t"]),
            peer.host,
        )
        home = _first(s.vtep, "vtep.ingress", "reply")
        if home is None:
            return Stop(s.host, "reply", "the reply never reached this host's VTEP")
        if home["decision"] != "to_tap":
            return Stop(s.host, "reply", f"reply dropped by this VTEP: {home['decision']}")
        self._hop("reply", f"VTEP {s.local_ip}", "to the TAP", float(home["t"]))
        if s.reply_at is None:
            return Stop(s.host, "reply", f"the reply never reached {s.container}")
        self._reply_hops()
        return None

    def _gone(self) -> str:
        """Why the source VTEP may have lost its entries: hosts its gossip has Down take their
        endpoints and their peer entry with them (so the VTEP has nowhere to send)."""
        s = self.s
        dead = [p for p in self.peers if p.gossip == "dead"]
        if not dead:
            return ""
        names = []
        for p in dead:
            cut = f", partitioned from {s.host} ({p.partitioned})" if p.partitioned else ""
            names.append(f"host {p.host} is Down (gossip on {s.host}{cut})")
        return "; ".join(names) + ", its endpoints left this VTEP: "

    def _not_received(self, peer: PeerReport) -> str:
        """Why a live peer's VTEP has no record of the probe: what gossip and the lab's
        partition rules say, else the underlay in general."""
        s = self.s
        cut = f"{peer.host} is partitioned from {s.host}"
        if peer.gossip == "dead":
            why = f"peer VTEP never received it; host {peer.host} is Down (gossip on {s.host})"
            return why + (f": {cut} ({peer.partitioned})" if peer.partitioned else "")
        if peer.partitioned:
            return f"peer VTEP never received it; {cut} ({peer.partitioned})"
        return (
            f"peer VTEP never received it: nothing from {s.local_ip or 'the source'} on "
            f"{peer.host} (underlay loss or partition)"
        )

    def _reply_hops(self) -> None:
        s = self.s
        veth = self._seen("veth", "reply")
        if veth is not None:
            self._hop("reply", veth.port, f"{veth.src_mac} > {veth.dst_mac}", veth.t)
        self._hop("reply", f"{s.container} {s.ifname}", f"received {s.reply}", s.reply_at)


def _first(records: list[dict[str, Any]], stage: str, kind: str) -> dict[str, Any] | None:
    for r in records:
        if r.get("stage") == stage and r.get("kind") == kind:
            return r
    return None


def table(trace: Trace) -> str:
    """The hops as a table (time relative to the first hop), then the verdict."""
    first = next((h.t for h in trace.hops if h.t is not None), None)
    rows = []
    for i, hop in enumerate(trace.hops, 1):
        when = "" if hop.t is None or first is None else f"{(hop.t - first) * 1000:.3f}"
        rows.append([str(i), when, hop.host, hop.stage, hop.where, hop.decision])
    head = ["#", "T(ms)", "HOST", "STAGE", "WHERE", "DECISION"]
    widths = [max(len(r[c]) for r in [head, *rows]) for c in range(len(head))]
    lines = [
        "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    ]
    if trace.reached:
        lines.append("Result: answered" + (f": {trace.outcome}" if trace.outcome else ""))
    elif trace.stop is not None:
        at = f" on {trace.stop.host}" if trace.stop.host else ""
        lines.append(f"Result: stopped at {trace.stop.where}{at}: {trace.stop.why}")
    return "\n".join(lines)
