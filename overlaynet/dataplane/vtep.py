"""The per-host VTEP: the public face of the data plane that the agent (or `vtep_main`) drives.

Unconnected UDP sockets on 4789 receive from any source port (kernel VTEPs send from hashed
ports); a small pool of sending sockets bound inside 49152-65535 gives each inner flow a stable
outer source port. Frames move in `hotpath.HotLoop`, in a thread of its own.

On the wire (default, batch mode), RFC 7348 toward any peer: standard VXLAN datagrams of at most
the underlay MTU (1500), flags 0x08, inner frames as the kernel would finish them (valid
checksums). While the C egress drain serves a plain network (`fastegress`), its TAP hands over
TCP super-frames and partial checksums (TSO4 + CSUM: one read per 64 KB instead of ~45) and C
cuts and finishes them exactly as `segment` does; otherwise the TAP has no offloads (the loop
switches them: `HotLoop._tso_wanted`). Runs of equal-size frames of one flow leave in one UDP-GSO
sendmsg; the kernel (or the NIC) cuts them into those datagrams and, because UDP GSO requires
it, fills in the outer UDP checksum. RFC 7348 section 5 says the checksum SHOULD be zero and
that a non-zero one MUST be correct, which the kernel guarantees; receivers, a Linux vxlan
device included, verify and accept it (the kernel-interop integration tests run both ways in
this mode). Lone frames (pings, ARP, pure ACKs) keep checksum 0. `batch=False` is the naive
loop: one system call per frame, checksum 0 everywhere.

Offload mode (per network, `add_network(offload=True)`, never the default): the TAP hands over
TCP super-frames; toward peers that advertised offload (`set_offload_peers`) they cross whole as
chunk datagrams on `wire.chunks.OFFLOAD_PORT` (not VXLAN: a kernel VTEP never decapsulates them),
toward every other peer they are segmented and checksummed here (`segment`), RFC 7348 as above.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict
from types import TracebackType
from typing import Any

import trio

from overlaynet.dataplane import fastingress, fastoffload
from overlaynet.dataplane.fastegress import ACCEL_DRAIN_BUDGET, FastEgress
from overlaynet.dataplane.fdb import (
    LEARNED_LIMIT,
    LEARNED_MAX_AGE,
    ForwardingDatabase,
    RemoteEndpoint,
    as_ipv4,
    as_mac,
)
from overlaynet.dataplane.hotpath import (
    DRAIN_BUDGET,
    IP_RECVERR,
    LOOP_NICE,
    SOL_UDP,
    UDP_GRO,
    HotLoop,
)
from overlaynet.dataplane.impair import Impairment, ImpairModel
from overlaynet.dataplane.lane import LANE_MODES
from overlaynet.dataplane.offload import (
    SO_ATTACH_REUSEPORT_CBPF,
    SO_REUSEPORT,
    SockFprog,
    checksum_sorter_program,
)
from overlaynet.dataplane.seal import DataKey, Sealer
from overlaynet.dataplane.switching import DEFAULT_MTU, Network
from overlaynet.dataplane.tap import has_vnet_hdr, open_tap_queues
from overlaynet.dataplane.tracing import TraceMatch, Tracer
from overlaynet.wire import chunks, vxlan
from overlaynet.wire.ethernet import mac_to_str

#: 4 MiB socket buffers stopped receive drops and gained ~20 % (FASTPATH.md); FORCE variants
#: because net.core.rmem_max is usually far lower and the agent runs as root.
SOCKET_BUFFER = 4 * 1024 * 1024
#: Sending sockets in the source-port pool: enough spread for ECMP hashing on the underlay,
#: few enough that the fds and buffers cost nothing.
SOURCE_SOCKETS = 16
#: `Vtep(accel=...)`: "auto" uses the C egress drain when it builds and loads, "on" fails
#: without it, "off" keeps the Python drain (`fastegress`).
ACCEL_CHOICES = ("auto", "on", "off")
#: SO_NO_CHECK from <asm-generic/socket.h>: send UDP checksum 0, as RFC 7348 section 5 says it
#: SHOULD be over IPv4 (a Linux vxlan device does so with `noudpcsum`; `ip -d link` on this
#: kernel/iproute2 shows `udpcsum` for one made without either flag).
SO_NO_CHECK = 11
#: From <linux/in.h>: always set DF and fail with EMSGSIZE rather than fragment (RFC 7348 4.3).
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DO = 2
SO_SNDBUFFORCE = 32
#: TAP queues in batch mode: one the kernel fills with TCP flows, one with everything else
#: (`switching.Network`), so a ping under a TCP load does not wait behind the bulk.
TAP_QUEUES = 2
SO_RCVBUFFORCE = 33
#: From <linux/in.h>: let the kernel fragment (offload chunks above the underlay MTU).
IP_PMTUDISC_DONT = 0


#: The offload socket's buffers: one lost chunk loses a whole 64 KB super-frame (~44 TCP
#: segments at once), and 4 MiB (64 super-frames) overflowed while the loop waited for a CPU
#: on a loaded machine (udp RcvbufErrors in the e2e benchmark).
OFFLOAD_SOCKET_BUFFER = 32 * 1024 * 1024
#: Outer IPv4 (no options) and UDP headers: a path MTU minus these is a datagram's payload.
OUTER_IPV4_UDP = 28
#: From <linux/in.h>: the path MTU of a connected socket.
IP_MTU = 14


def _path_mtu(local_ip: str, host: str) -> int:
    """The MTU of the route toward `host` (0: unknown), so offload chunks need no fragments."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((local_ip, 0))
            probe.connect((host, chunks.OFFLOAD_PORT))
            mtu: int = probe.getsockopt(socket.IPPROTO_IP, IP_MTU)
            return mtu
    except OSError:
        return 0


def _offload_sockets(
    local_ip: str, port: int, buffer: int, chunk: int
) -> tuple[socket.socket, socket.socket]:
    """The socket offload datagrams arrive on (`port`, UDP GRO) and the one they leave from
    (checksummed: UDP GSO needs it, and the checksum is what protects the frame whole; DF set
    for MTU-sized chunks, cleared when chunks are meant to be IP-fragmented)."""
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        _tune(rx, buffer, zero_checksum=False)
        rx.setsockopt(SOL_UDP, UDP_GRO, 1)
        rx.setblocking(False)
        rx.bind((local_ip, port))
        _tune(tx, buffer, zero_checksum=False)
        if chunk + chunks.HEADER_LEN > chunks.GSO_CHUNK_LIMIT:
            tx.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
        tx.bind((local_ip, 0))
        tx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        # A peer without offload answers "port unreachable": queued, read by the loop, and
        # that peer gets RFC 7348 for a while (`hotpath.OFFLOAD_REFUSED_FOR`).
        tx.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
        tx.setblocking(False)
    except BaseException:
        rx.close()
        tx.close()
        raise
    return rx, tx


def _tune(sock: socket.socket, buffer: int, *, zero_checksum: bool = True) -> None:
    """Big buffers, UDP checksum 0 (unless the socket sends GSO batches: the kernel refuses UDP
    GSO without checksums), never fragment."""
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, buffer)
        except PermissionError:  # not root: the kernel caps the plain option at *mem_max
            sock.setsockopt(socket.SOL_SOCKET, plain, buffer)
    sock.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, int(zero_checksum))
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)


def _source_sockets(
    local_ip: str, bucket: int, buckets: int, buffer: int, *, gso: bool
) -> tuple[socket.socket, socket.socket | None]:
    """Sending sockets bound to a free port in this bucket's slice of 49152-65535: one with
    UDP checksum 0 and, with `gso`, a twin on the same port (SO_REUSEPORT) for GSO batches, so
    one flow keeps one outer source port whichever of the two sends a datagram."""
    span = (vxlan.SOURCE_PORT_MAX - vxlan.SOURCE_PORT_MIN + 1) // buckets
    first = vxlan.SOURCE_PORT_MIN + bucket * span
    for port in range(first, first + span):
        pair: list[socket.socket] = []
        try:
            for zero_checksum in (True, False) if gso else (True,):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                pair.append(sock)
                if gso:
                    sock.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
                sock.bind((local_ip, port))
                _tune(sock, buffer, zero_checksum=zero_checksum)
                # Small receive buffer: nobody should send to these ports; replies go to 4789.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        except OSError:
            for sock in pair:
                sock.close()
            continue
        return pair[0], pair[1] if gso else None
    raise OSError(f"no free UDP port in {first}..{first + span - 1} on {local_ip}")


def _receive_sockets(
    local_ip: str, port: int, buffer: int, *, gro: bool
) -> tuple[socket.socket, socket.socket | None]:
    """The receiving socket on `port` and, with `gro`, its twin that the kernel gives exactly
    the datagrams with a non-zero UDP checksum (a reuseport BPF program, `offload`): only those
    are merged into super-frames. Without BPF support the twin is None and nothing merges."""
    if gro:
        # SO_REUSEPORT would let a second VTEP on this address share the port silently and
        # split the traffic; a plain bind first makes "already in use" fail loudly instead.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((local_ip, port))
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    checked: socket.socket | None = None
    try:
        _tune(rx, buffer)
        rx.setblocking(False)
        if not gro:
            rx.bind((local_ip, port))
            return rx, None
        rx.setsockopt(SOL_UDP, UDP_GRO, 1)
        rx.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
        program = SockFprog(checksum_sorter_program())
        try:
            # Before the twin joins the group, so no datagram is ever sorted without it.
            rx.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, program.value)
        except OSError:
            rx.bind((local_ip, port))
            return rx, None
        rx.bind((local_ip, port))
        checked = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _tune(checked, buffer)
        checked.setblocking(False)
        checked.setsockopt(SOL_UDP, UDP_GRO, 1)
        checked.setsockopt(socket.SOL_SOCKET, SO_REUSEPORT, 1)
        checked.bind((local_ip, port))
        return rx, checked
    except BaseException:
        rx.close()
        if checked is not None:
            checked.close()
        raise


class Vtep:
    """The VXLAN tunnel endpoint of one host, for all its overlay networks.

    Hosts allowed to send to us are `members` plus every network's peers. `batch=True` (the
    default) sends UDP-GSO batches, receives UDP-GRO buffers and writes in-order TCP runs with
    a verified outer checksum into the TAP as one super-frame (module docstring, `offload`).
    Control methods may be called from any thread while the loop runs; `start()`/`stop()` run
    the loop in a thread, `await run()` does the same under a trio cancel scope.
    """

    def __init__(
        self,
        local_ip: str,
        port: int = vxlan.VXLAN_PORT,
        *,
        strict: bool = False,
        source_sockets: int = SOURCE_SOCKETS,
        socket_buffer: int = SOCKET_BUFFER,
        batch: bool = True,
        learned_max_age: float = LEARNED_MAX_AGE,
        nice: int = LOOP_NICE,
        nice_policy: str = "paced",
        bulk_nice: int = 0,
        drain_budget: int = DRAIN_BUDGET,
        offload_port: int = chunks.OFFLOAD_PORT,
        offload_chunk: int | None = None,
        accel: str = "auto",
        accel_budget: int = ACCEL_DRAIN_BUDGET,
        lane: str = "off",
        lane_nice: int | None = None,
    ) -> None:
        if accel not in ACCEL_CHOICES:
            raise ValueError(f"accel must be one of {', '.join(ACCEL_CHOICES)}, not {accel!r}")
        if lane not in LANE_MODES:
            raise ValueError(f"lane must be one of {', '.join(LANE_MODES)}, not {lane!r}")
        fast: FastEgress | None = None
        #: Why the egress runs in Python ("" when the C drain serves plain RFC networks).
        self.accel_reason = "--accel off" if accel == "off" else ""
        if accel != "off":
            fast, self.accel_reason = FastEgress.create(accel_budget)
            if fast is None and accel == "on":
                raise RuntimeError(f"--accel on: the C egress is unavailable: {self.accel_reason}")
            if accel == "on" and not fastingress.available():
                raise RuntimeError(
                    f"--accel on: the C ingress is unavailable: {fastingress.why_not()}"
                )
            if not batch:
                # The C drain sends GSO batches: the naive loop (one datagram per frame) has none.
                fast, self.accel_reason = None, "no batching"
        self.local_ip = as_ipv4(local_ip)
        self.offload_port = offload_port
        #: Chunk payload octets; None: from the path MTU toward the offload peers (the
        #: largest that needs no IP fragment: 1456 on a 1500 underlay, 8956 on a jumbo one).
        self.offload_chunk = offload_chunk
        self._off_rx: socket.socket | None = None
        self._off_tx: socket.socket | None = None
        self.port = port
        self.strict = strict
        self.fdb = ForwardingDatabase()
        self.counters: Counter[str] = Counter()
        self._networks: dict[int, Network] = {}
        self._owned_taps: dict[int, list[int]] = {}  # vni → queue fds we opened and must close
        self._tap_names: dict[int, str] = {}
        self._members: frozenset[str] = frozenset()
        self._lock = threading.Lock()  # serialises control-side writers, never the loop
        self._thread: threading.Thread | None = None
        self._tx: list[socket.socket] = []
        self._tx_gso: list[socket.socket] = []
        self._rx, self._rx_checked = _receive_sockets(self.local_ip, port, socket_buffer, gro=batch)
        try:
            for bucket in range(source_sockets):
                plain, gso = _source_sockets(
                    self.local_ip, bucket, source_sockets, socket_buffer, gso=batch
                )
                self._tx.append(plain)
                if gso is not None:
                    self._tx_gso.append(gso)
        except BaseException:
            self._close_sockets()
            raise
        self.batch = batch
        self._loop = HotLoop(
            self._rx,
            self._tx,
            port,
            self.counters,
            strict=strict,
            rx_checked=self._rx_checked,
            tx_gso=self._tx_gso if batch else None,
        )
        self._loop.learned_max_age = learned_max_age
        self._loop.nice = nice
        self._loop.nice_policy = nice_policy
        self._loop.bulk_nice = bulk_nice
        self._loop.drain_budget = drain_budget
        self._loop.fast_egress = fast
        # The urgent fds in a thread of their own (`lane`), before any network is added.
        self._loop.set_lane(lane, lane_nice)
        if accel == "off":
            fastingress.disable(self._loop)
            fastoffload.disable(self._loop)
        #: What `set_impairments` was last given (for views; the loop holds the models).
        self.impairments: dict[str, Impairment] = {}

    # -- networks -----------------------------------------------------------------------------

    def add_network(
        self,
        vni: int,
        tap: str | int,
        mtu: int = DEFAULT_MTU,
        *,
        vnet_hdr: bool | None = None,
        queues: tuple[int, ...] = (),
        offload: bool = False,
    ) -> None:
        """Serve overlay network `vni` through `tap`: a TAP name (opened here, closed by
        `remove_network`) or the fd of a TAP the caller opened with `tap.open_tap` (plus, in
        `queues`, the fds of its further queues, from `tap.open_tap_queues`).

        A TAP opened here has IFF_VNET_HDR and TAP_QUEUES queues in batch mode; for an fd,
        `vnet_hdr` says whether it has one (None: ask the kernel). Only with it can received
        TCP runs reach the TAP as one super-frame, so open it with `vnet_hdr=True` for full
        speed, and with two queues so that pings and DNS do not queue behind TCP bulk.

        `offload` (offload mode, batch mode only): the TAP hands over TCP super-frames, which
        cross whole to the peers named in `set_offload_peers` (`wire.chunks`) and are
        segmented for every other; a TAP given as an fd must have had `tap.set_offloads`."""
        vxlan.check_vni(vni)
        if offload and not self.batch:
            raise ValueError("offload mode needs batch mode (the TAP's virtio-net header)")
        with self._lock:
            if vni in self._networks:
                raise ValueError(f"VNI {vni} is already served by this VTEP")
            if offload and self._off_rx is None:
                self._off_rx, self._off_tx = _offload_sockets(
                    self.local_ip,
                    self.offload_port,
                    OFFLOAD_SOCKET_BUFFER,
                    self.offload_chunk or chunks.DEFAULT_CHUNK,
                )
                self._loop.set_offload(
                    self._off_rx,
                    self._off_tx,
                    self.offload_port,
                    self.offload_chunk or chunks.DEFAULT_CHUNK,
                )
            if isinstance(tap, str):
                count = TAP_QUEUES if self.batch else 1
                fd, *queues_list = open_tap_queues(
                    tap, count, mtu=mtu, vnet_hdr=self.batch, offload=offload
                )
                queues = tuple(queues_list)
                self._owned_taps[vni] = [fd, *queues]
                self._tap_names[vni] = tap
                vnet_hdr = self.batch
            else:
                fd = tap
                if vnet_hdr is None:
                    vnet_hdr = has_vnet_hdr(fd)
            net = Network(vni, fd, mtu, self.fdb.table(vni), vnet_hdr=vnet_hdr, queues=queues)
            net.offload = offload
            # The TAP was opened with offloads (here, or by the caller: see above).
            net.tap_tso = offload
            self._networks[vni] = net
            self._loop.add(net)
            self._refresh_members()

    def remove_network(self, vni: int) -> None:
        """Stop serving `vni` and forget its FDB and ARP entries."""
        with self._lock:
            net = self._networks.pop(vni)
            self._loop.remove(net)
            self.fdb.drop_vni(vni)
            self._tap_names.pop(vni, None)
            for fd in self._owned_taps.pop(vni, []):
                os.close(fd)
            self._refresh_members()

    def set_peers(self, vni: int, hosts: Iterable[str]) -> None:
        """The hosts that get a copy of broadcast and unknown-unicast frames on `vni`."""
        peers = tuple(sorted({as_ipv4(h) for h in hosts} - {self.local_ip}))
        with self._lock:
            self._networks[vni].peers = peers
            self._refresh_members()
            self._refresh_tso(self._networks[vni])

    def offload_mode(self, vni: int) -> bool:
        """Whether `vni` was added in offload mode."""
        return self._networks[vni].offload

    def set_offload_peers(self, vni: int, hosts: Iterable[str]) -> None:
        """The peers of `vni` that are sent super-frames whole (agents that advertised offload
        mode); only on a network added with `offload=True`, every other peer gets RFC 7348."""
        offload = frozenset(as_ipv4(h) for h in hosts) - {self.local_ip}
        with self._lock:
            net = self._networks[vni]
            if offload and not net.offload:
                raise ValueError(f"VNI {vni} is not in offload mode")
            net.offload_peers = offload
            self._refresh_tso(net)
            if self.offload_chunk is None:
                every = set().union(*(n.offload_peers for n in self._networks.values()))
                mtu = min((_path_mtu(self.local_ip, h) for h in every), default=0)
                if mtu:
                    chunk = min(mtu - OUTER_IPV4_UDP - chunks.HEADER_LEN, chunks.MAX_AUTO_CHUNK)
                    self._loop.set_offload_chunk(chunk, gso=True)

    def refresh_tap_offloads(self, vni: int) -> None:
        """Look again at whether every host `vni` sends to takes offload (after FDB entries
        were added directly to `fdb`); the endpoint and peer setters do it themselves."""
        with self._lock:
            net = self._networks.get(vni)
            if net is not None:
                self._refresh_tso(net)

    def _rfc_hosts(self, net: Network) -> list[str]:
        """The hosts `net` sends to (peers, given FDB entries) that take only RFC 7348."""
        hosts = set(net.peers)
        hosts.update(e.remote_ip for e in net.fdb.values() if not e.learned)
        return sorted(hosts - net.offload_peers)

    def _refresh_tso(self, net: Network) -> None:
        """An offload network's TAP keeps TSO only while no host it sends to needs RFC 7348
        (the loop switches it: `HotLoop._drain_tap`); with one, the kernel segments before
        the TAP, faster than Python segmentation toward that host."""
        if net.offload:
            allowed = not self._rfc_hosts(net)
            if allowed is not net.tso_allowed:
                net.tso_allowed = allowed
                self._loop.poke()

    def set_learning(self, vni: int, limit: int = LEARNED_LIMIT) -> None:
        """Learn source MACs of frames from member hosts on `vni` (at most `limit` entries,
        each forgotten after `learned_max_age` seconds without a frame), as a Linux vxlan
        device with `learning` does; `limit=0` turns it off and forgets what was learned.
        Off by default: a forged inner source MAC must not steer traffic (`fdb`). For a
        static-peer network toward a kernel VTEP whose endpoints nobody announces."""
        if limit < 0:
            raise ValueError("the learned entries limit is a count, >= 0")
        with self._lock:
            net = self._networks[vni]
            net.learn_limit = limit
            if not limit:
                for mac, entry in list(net.fdb.items()):
                    if entry.learned:
                        net.fdb.pop(mac, None)
                net.learned = 0

    @property
    def members(self) -> frozenset[str]:
        """Cluster hosts allowed to send VXLAN to us (besides every network's peers)."""
        return self._members

    @members.setter
    def members(self, hosts: Iterable[str]) -> None:
        with self._lock:
            self._members = frozenset(as_ipv4(h) for h in hosts)
            self._refresh_members()

    def _refresh_members(self) -> None:
        allowed = set(self._members)
        for net in self._networks.values():
            allowed.update(net.peers)
        self._loop.members = frozenset(allowed)

    def set_keys(self, vni: int, keys: Iterable[DataKey], primary: int | None = None) -> None:
        """Encrypt `vni` (`seal`): seal with the key `primary` (default: the first given),
        accept any key given (a rotation's previous key during its grace period). Every
        datagram of the network must then authenticate; none (an empty `keys`) makes it a
        plain network again. Only toward agents: a kernel VTEP cannot open sealed frames."""
        ring = list(keys)
        with self._lock:
            net = self._networks[vni]
            if not ring:
                net.seal = None
                self._loop.sealed = {k: s for k, s in self._loop.sealed.items() if k != net.vni_key}
                self._loop.poke()  # plain again: the C drain and the TAP's offloads may return
                return
            sealer = Sealer(ring, ring[0].key_id if primary is None else primary, self.local_ip)
            # Ingress first: our peers may already seal with the new key.
            self._loop.sealed = {**self._loop.sealed, net.vni_key: sealer}
            net.seal = sealer
        self._loop.poke()  # sealing takes the C drain, so the TAP's offloads, off

    def set_impairments(self, table: dict[str, Impairment]) -> None:
        """Impair the datagrams sent to each peer address in `table` (`impair.ALL_PEERS`:
        every peer not named), replacing what was set before; {} ends every impairment
        (datagrams already held still leave when due). Each model starts its seeded stream
        afresh, so setting the same table twice repeats the same experiment."""
        models = {as_ipv4(p) if p else p: ImpairModel(i) for p, i in table.items() if not i.empty}
        with self._lock:
            self.impairments = dict(table)
            self._loop.impaired = models
        self._loop.poke()  # TAP offloads follow at once (`HotLoop._tso_wanted`)

    # -- endpoints ----------------------------------------------------------------------------

    def add_arp(self, vni: int, ip: str, mac: str | bytes) -> None:
        """Answer ARP requests for `ip` on `vni` locally with `mac`."""
        key = ipaddress.IPv4Address(ip).packed
        self._networks[vni].arp[key] = as_mac(mac)

    def remove_arp(self, vni: int, ip: str) -> None:
        """Stop answering ARP for `ip` on `vni`."""
        self._networks[vni].arp.pop(ipaddress.IPv4Address(ip).packed, None)

    def endpoint_added(self, endpoint: RemoteEndpoint) -> None:
        """EndpointSink: FDB entry, and an ARP answer when the endpoint's IP is known."""
        self.fdb.add(endpoint.vni, endpoint.mac, endpoint.host_ip)
        if endpoint.ip is not None and endpoint.vni in self._networks:
            self.add_arp(endpoint.vni, endpoint.ip, endpoint.mac)
        self.refresh_tap_offloads(endpoint.vni)

    def endpoint_removed(self, endpoint: RemoteEndpoint) -> None:
        """EndpointSink: undo `endpoint_added`."""
        self.fdb.remove(endpoint.vni, endpoint.mac)
        if endpoint.ip is not None and endpoint.vni in self._networks:
            self.remove_arp(endpoint.vni, endpoint.ip)
        self.refresh_tap_offloads(endpoint.vni)

    # -- observing ----------------------------------------------------------------------------

    def inspect(self, vni: int) -> dict[str, Any]:
        """What `network inspect` shows about the data plane of one network."""
        net = self._networks[vni]
        return {
            "vni": vni,
            "vtep": f"{self.local_ip}:{self.port}",
            "tap": self._tap_names.get(vni, f"fd {net.tap_fd}"),
            "mtu": net.mtu,
            "peers": list(net.peers),
            "learning": {"limit": net.learn_limit, "learned": net.learned}
            if net.learn_limit
            else None,
            "arp": {str(ipaddress.IPv4Address(ip)): mac_to_str(mac) for ip, mac in net.arp.items()},
            "fdb": [asdict(r) for r in self.fdb.records(vni)],
            "counters": dict(net.counters),
            "encrypted": net.seal is not None,
            # The TAP hands over super-frames now (offload mode, or cut by the C drain).
            "tap_tso": net.tap_tso,
            "offload": {
                "enabled": net.offload,
                "port": self.offload_port,
                "chunk": self._loop.offload_chunk,
                "wire": {p: self._wire(net, p) for p in net.peers},
                "tap": self._tap_mode(net),
            }
            if net.offload
            else None,
            "key_ids": net.seal.key_ids if net.seal is not None else [],
            "accel": f"{self.accel_text(net)}; {fastingress.describe(self._loop)}"
            + (f"; {fastoffload.describe(self._loop)}" if net.offload else ""),
            "lane": self._lane_doc(),
        }

    def _lane_doc(self) -> dict[str, Any] | None:
        """The VTEP's lane (`lane.py`), host-wide: its mode ("nice" once SCHED_FIFO was
        refused) and how often it woke and was demoted; None without one."""
        lane = self._loop.lane
        if lane is None:
            return None
        counters = self.counters
        return {
            "mode": lane.mode,
            "wakeups": counters["lane_wakeups"],
            "demoted": counters["lane_demoted"],
            "fifo_refused": counters["lane_fifo_refused"],
        }

    def accel_text(self, net: Network) -> str:
        """Which egress drain serves `net` (`network vtep`'s "accel:" line, before the
        ingress's: `fastingress.describe`)."""
        if self._loop.fast_egress is None:
            return f"python ({self.accel_reason})"
        if net.offload or net.seal is not None:
            return "python (c egress serves plain rfc7348 networks only)"
        return "c egress"

    def _wire(self, net: Network, peer: str) -> str:
        """Which wire `peer` gets on `net`: offload, or RFC 7348 (and why, if offload was
        expected)."""
        if peer not in net.offload_peers or net.seal is not None:
            return "rfc7348"
        if peer in self._loop.refused:
            return "rfc7348 (offload refused)"
        return "rfc7348 (impaired)" if self._loop.impaired else "offload"

    def _tap_mode(self, net: Network) -> str:
        """What the offload network's TAP hands over: super-frames (every peer takes offload),
        or finished frames, the kernel segmenting, while some host needs RFC 7348."""
        if net.tap_tso:
            return "tso"
        refused = self._loop.refused
        rfc = self._rfc_hosts(net) or sorted(h for h in net.offload_peers if h in refused)
        reason = f" for rfc7348 peers {','.join(rfc)}" if rfc else ""
        return f"segmented by the kernel{reason}"

    def stats(self) -> dict[str, Any]:
        """All counters: host-wide (drops before a network is known) and per network."""
        return {
            "counters": dict(self.counters),
            "networks": {str(vni): self.inspect(vni) for vni in sorted(self._networks)},
            "source_ports": [s.getsockname()[1] for s in self._tx],
            "impairments": {p or "*": i.to_doc() for p, i in sorted(self.impairments.items())},
            "offload_reassembly": dict(self._loop.reassembler.counters),
        }

    def arm_trace(self, match: TraceMatch, seconds: float) -> None:
        """Record what the loop decides about `match`'s probe and reply for `seconds`
        (`tracing`); replaces a trace armed before."""
        ports = [s.getsockname()[1] for s in self._tx]
        self._loop.tracer = Tracer(match, self.local_ip, ports, seconds)
        # A traced frame is what the TAP hands over: its offloads go off now (the Python
        # drain, which traces, takes super-frames only as a backlog).
        self._loop.poke()

    def trace_records(self, *, disarm: bool = True) -> list[dict[str, Any]]:
        """The armed trace's records so far (none armed: none), and disarm it."""
        tracer = self._loop.tracer
        if disarm and tracer is not None:
            self._loop.tracer = None
            self._loop.poke()  # the TAP's offloads may come back
        return list(tracer.records) if tracer is not None else []

    # -- running ------------------------------------------------------------------------------

    def serve(self) -> None:
        """Run the hot loop in the calling thread until `stop()`."""
        self._loop.arm()
        self._loop.serve()

    def start(self) -> None:
        """Run the hot loop in a daemon thread of its own."""
        if self._thread is not None:
            raise RuntimeError("VTEP loop already running")
        self._loop.arm()
        self._thread = threading.Thread(target=self._loop.serve, name="vtep", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop and wait for its thread."""
        self._loop.stop()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    async def run(self) -> None:
        """Run the hot loop in a worker thread until the surrounding trio scope is cancelled."""
        self._loop.arm()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_in_thread)
            try:
                await trio.sleep_forever()
            finally:
                self._loop.stop()

    async def _serve_in_thread(self) -> None:
        # Not abandoned on cancel: run() waits for the thread, so no loop outlives its owner.
        await trio.to_thread.run_sync(self._loop.serve)

    def close(self) -> None:
        """Stop, then release every socket and owned TAP (owned TAPs disappear)."""
        self.stop()
        with self._lock:
            for vni in list(self._networks):
                net = self._networks.pop(vni)
                self._loop.remove(net)
            for fds in self._owned_taps.values():
                for fd in fds:
                    os.close(fd)
            self._owned_taps.clear()
        self._loop.close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in [
            self._rx,
            self._rx_checked,
            *self._tx,
            *self._tx_gso,
            self._off_rx,
            self._off_tx,
        ]:
            if sock is None:
                continue
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> Vtep:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
