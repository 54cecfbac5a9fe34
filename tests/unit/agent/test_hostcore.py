"""The pure host core: records in, decisions and the desired kernel picture out (no root)."""

from __future__ import annotations

import contextlib
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.agent import hostcore
from overlaynet.agent.records import BadEndpointRecord, EndpointRecord
from overlaynet.agent.requests import NetworkCreate
from overlaynet.dataplane.fdb import RemoteEndpoint
from overlaynet.dns.records import RecordKind
from overlaynet.errors import Conflict, InvalidArgument
from overlaynet.model import Container, Driver, Endpoint, Network, Status
from overlaynet.names import KernelNames

NAMES = KernelNames("onet-lab-node1-")
T0 = "2026-01-01T00:00:00.000000Z"


def bridge_net(nid: str = "b" * 64, name: str = "front", subnet: str = "172.18.0.0/16") -> Network:
    gateway = str(next(iter(IPv4Network(subnet).hosts())))
    return Network(nid, name, Driver.BRIDGE, T0, subnet=subnet, gateway=gateway)


def overlay_net(nid: str = "o" * 64, scope: str = "swarm", vni: int = 4097) -> Network:
    return Network(
        nid,
        "ov",
        Driver.OVERLAY,
        T0,
        scope=scope,
        subnet="10.0.1.0/24",
        gateway="10.0.1.1",
        mtu=1450,
        vni=vni,
    )


def container(
    cid: str, *eps: Endpoint, status: Status = Status.RUNNING, mode: str = "x"
) -> Container:
    return Container(cid, f"c{cid[:3]}", "alpine", ["sh"], T0, list(eps), mode, status=status)


def ep(eid: str, net: Network, ip: str | None, ifname: str = "eth0") -> Endpoint:
    mac = None if ip is None else "02:42:" + ":".join(f"{int(o):02x}" for o in ip.split("."))
    return Endpoint(eid, net.id, ifname, ip, mac)


# ---- the picture ----------------------------------------------------------------------------


def test_a_bridge_network_gets_its_bridge_with_the_gateway_address() -> None:
    net = bridge_net()
    pic = hostcore.picture({net.id: net}, [], NAMES)
    (spec,) = pic.bridges.values()
    assert spec.ifname == KernelNames.bridge(net.id)
    assert spec.address == IPv4Interface("172.18.0.1/16")
    assert pic.taps == {} and pic.endpoints == {} and pic.namespaces == frozenset()


def test_an_overlay_bridge_has_no_address_and_a_tap_on_it() -> None:
    net = overlay_net()
    pic = hostcore.picture({net.id: net}, [], NAMES)
    (spec,) = pic.bridges.values()
    assert spec.address is None and spec.mtu == 1450
    (tap,) = pic.taps.values()
    assert tap.ifname == KernelNames.tap(net.id) and tap.bridge == spec.ifname


def test_host_and_null_networks_have_no_kernel_objects() -> None:
    nets = {n: Network(n, n, d, T0) for n, d in (("h", Driver.HOST), ("n", Driver.NULL))}
    assert hostcore.picture(nets, [], NAMES).links() == set()


def test_a_container_gets_its_namespace_and_one_veth_per_endpoint() -> None:
    front, back = bridge_net(), bridge_net("c" * 64, "back", "172.19.0.0/16")
    c = container(
        "1" * 64, ep("e" * 64, front, "172.18.0.2"), ep("f" * 64, back, "172.19.0.2", "eth1")
    )
    pic = hostcore.picture({front.id: front, back.id: back}, [c], NAMES)
    assert pic.namespaces == {NAMES.container_netns(c.id)}
    first = pic.endpoints[KernelNames.veth_host("e" * 64)]
    second = pic.endpoints[KernelNames.veth_host("f" * 64)]
    assert first.gateway == "172.18.0.1"  # the first endpoint carries the default route
    assert second.gateway is None
    assert first.address == IPv4Interface("172.18.0.2/16") and second.ifname == "eth1"
    assert first.mac == "02:42:ac:12:00:02"


def test_internal_bridges_and_overlays_give_no_default_route() -> None:
    internal = bridge_net()
    internal.internal = True
    ov = overlay_net()
    for net, ip in ((internal, "172.18.0.2"), (ov, "10.0.1.2")):
        c = container("2" * 64, ep("e" * 64, net, ip))
        (plan,) = hostcore.picture({net.id: net}, [c], NAMES).endpoints.values()
        assert plan.gateway is None


def test_host_mode_containers_use_the_hosts_namespace() -> None:
    c = container("3" * 64, mode="host")
    assert hostcore.picture({}, [c], NAMES).namespaces == frozenset()


def test_an_endpoint_on_an_unknown_network_is_left_out() -> None:
    net = bridge_net()
    c = container("4" * 64, ep("e" * 64, net, "172.18.0.2"))
    assert hostcore.picture({}, [c], NAMES).endpoints == {}


# ---- decisions ------------------------------------------------------------------------------


def test_address_choice_takes_the_lowest_free_after_the_gateway() -> None:
    net = bridge_net()
    used = [container(str(i) * 64, ep(str(i) * 64, net, f"172.18.0.{i}")) for i in (2, 3, 5)]
    assert hostcore.choose_address(net, used, None) == ("172.18.0.4", "02:42:ac:12:00:04")


def test_address_choice_honours_the_ip_asked_for_and_refuses_a_taken_one() -> None:
    net = bridge_net()
    used = [container("2" * 64, ep("2" * 64, net, "172.18.0.2"))]
    assert hostcore.choose_address(net, used, "172.18.0.9")[0] == "172.18.0.9"
    with pytest.raises(InvalidArgument):
        hostcore.choose_address(net, used, "172.18.0.2")
    with pytest.raises(InvalidArgument):
        hostcore.choose_address(net, used, "10.9.9.9")


def test_address_choice_ignores_other_networks_addresses() -> None:
    net, other = bridge_net(), bridge_net("c" * 64, "o", "172.18.0.0/16")
    used = [container("2" * 64, ep("2" * 64, other, "172.18.0.2"))]
    assert hostcore.choose_address(net, used, None)[0] == "172.18.0.2"


def test_address_choice_stays_inside_the_ip_range() -> None:
    net = bridge_net()
    net.ip_range = "172.18.5.0/24"
    assert hostcore.choose_address(net, [], None)[0] == "172.18.5.0"


@given(st.sets(st.integers(2, 30), max_size=28))
def test_a_chosen_address_is_never_one_in_use(taken: set[int]) -> None:
    net = bridge_net(subnet="172.18.0.0/27")
    used = [container(f"{i:064d}", ep(f"{i:064d}", net, f"172.18.0.{i}")) for i in taken]
    try:
        ip, mac = hostcore.choose_address(net, used, None)
    except InvalidArgument:
        assert len(taken) == 29  # 30 hosts in a /27, less the gateway: the pool is full
        return
    assert int(ip.rsplit(".", 1)[1]) not in taken | {1}
    assert IPv4Address(ip) in IPv4Network("172.18.0.0/27")
    assert mac.endswith(":" + f"{int(ip.rsplit('.', 1)[1]):02x}")


def test_predefined_networks_cannot_be_removed() -> None:
    for name in ("bridge", "host", "none"):
        with pytest.raises(Conflict, match="pre-defined"):
            hostcore.check_removable(Network("x" * 64, name, Driver.BRIDGE, T0), [])


def test_a_network_with_endpoints_cannot_be_removed_and_names_its_users() -> None:
    net = bridge_net()
    users = [container("1" * 64, ep("1" * 64, net, "172.18.0.2"), status=Status.EXITED)]
    with pytest.raises(Conflict, match=r"has active endpoints \(c111\)"):
        hostcore.check_removable(net, users)
    hostcore.check_removable(net, [])


def test_unused_swarm_networks_retire_and_local_ones_stay() -> None:
    used_ov, idle_ov = overlay_net("a" * 64), overlay_net("d" * 64)
    local_ov = overlay_net("e" * 64, scope="local")
    nets = {n.id: n for n in (used_ov, idle_ov, local_ov, bridge_net())}
    cs = [container("1" * 64, ep("1" * 64, used_ov, "10.0.1.2"), status=Status.EXITED)]
    assert hostcore.retired(nets, cs) == [idle_ov]


@pytest.mark.parametrize(
    ("status", "alive", "ended", "relaunch"),
    [
        (Status.RUNNING, False, False, True),  # killed with the agent or the host
        (Status.RUNNING, False, True, False),  # exited on its own while the agent was down
        (Status.RUNNING, True, False, False),  # still running
        (Status.EXITED, False, False, False),
        (Status.CREATED, False, False, False),
    ],
)
def test_relaunch_only_what_died_with_the_agent(
    status: Status, alive: bool, ended: bool, relaunch: bool
) -> None:
    c = container("1" * 64, status=status)
    assert hostcore.needs_relaunch(c, alive, ended) is relaunch


# ---- endpoint table -> planes -----------------------------------------------------------------


def test_local_records_are_running_containers_on_swarm_networks_only() -> None:
    ov, br = overlay_net(), bridge_net()
    running = container("1" * 64, ep("a" * 64, ov, "10.0.1.2"), ep("b" * 64, br, "172.18.0.2"))
    stopped = container("2" * 64, ep("c" * 64, ov, "10.0.1.3"), status=Status.EXITED)
    out = hostcore.local_records([running, stopped], {ov.id: ov, br.id: br}, "192.168.0.11")
    assert out == {
        (ov.id, "a" * 64): EndpointRecord(
            "c111", "1" * 64, "10.0.1.2", "02:42:0a:00:01:02", "192.168.0.11"
        )
    }


def test_remote_records_become_fdb_arp_entries_and_names() -> None:
    ov = overlay_net()
    rec = EndpointRecord("web", "9" * 64, "10.0.1.7", "02:42:0a:00:01:07", "192.168.0.12", ("w",))
    planes = hostcore.translate(ov, [rec])
    assert planes.endpoints == {
        RemoteEndpoint(4097, "02:42:0a:00:01:07", "10.0.1.7", "192.168.0.12")
    }
    kinds = {(n.name, n.kind) for n in planes.names}
    assert kinds == {
        ("web", RecordKind.CONTAINER),
        ("9" * 12, RecordKind.SHORT_ID),
        ("w", RecordKind.ALIAS),
    }
    assert all(n.network_id == ov.id for n in planes.names)


@pytest.mark.parametrize(
    "data",
    [
        b"{}",
        b"[]",
        b"not json",
        b'{"name":"a","container":"b","ip":"10.0.0.300","mac":"02:42:0a:00:00:02","host":"1.2.3.4"}',
        b'{"name":"a","container":"b","ip":"10.0.0.3","mac":"02:42:0a:00:00","host":"1.2.3.4"}',
        b'{"name":"a","container":"b","ip":"10.0.0.3","mac":"zz:42:0a:00:00:02","host":"1.2.3.4"}',
        b'{"name":"a","container":"b","ip":"10.0.0.3","mac":7,"host":"1.2.3.4"}',
    ],
)
def test_a_bad_endpoint_record_is_one_error_type(data: bytes) -> None:
    with pytest.raises(BadEndpointRecord):
        EndpointRecord.from_bytes(data)


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_bad_endpoint_record(data: bytes) -> None:
    with contextlib.suppress(BadEndpointRecord):
        EndpointRecord.from_bytes(data)


def test_endpoint_record_round_trips_and_normalises_the_mac() -> None:
    rec = EndpointRecord("a", "b", "10.0.0.3", "02:42:0A:00:00:03", "1.2.3.4", ("x",))
    back = EndpointRecord.from_bytes(rec.to_bytes())
    assert back.mac == "02:42:0a:00:00:03" and back.aliases == ("x",)


# ---- network create -------------------------------------------------------------------------


def _decide(
    req: NetworkCreate, nets: dict[str, Network] | None = None, host: list[str] | None = None
) -> Network:
    used = [("interface eth0", IPv4Network(s)) for s in host or []]
    return hostcore.decide_network(req, nets or {}, used, "n" * 64, T0)


def test_a_bridge_network_takes_the_first_free_pool_avoiding_the_hosts_subnets() -> None:
    net = _decide(NetworkCreate("front"), host=["172.18.0.0/24"])
    assert (net.subnet, net.gateway, net.mtu) == ("172.19.0.0/16", "172.19.0.1", 1500)
    assert net.driver == Driver.BRIDGE and net.vni is None


def test_an_overlay_gets_the_first_vni_from_4096_a_10_0_x_subnet_and_mtu_1450() -> None:
    net = _decide(NetworkCreate("ov", driver="overlay"))
    assert (net.vni, net.subnet, net.mtu) == (4096, "10.0.0.0/24", 1450)
    other = _decide(NetworkCreate("ov2", driver="overlay"), {net.id: net})
    assert other.vni == 4097 and other.subnet == "10.0.1.0/24"


@pytest.mark.parametrize(
    ("req", "error", "says"),
    [
        (NetworkCreate("bad name!"), InvalidArgument, "network"),
        (NetworkCreate("x", driver="macvlan"), InvalidArgument, "not available"),
        (NetworkCreate("x", gateway="10.1.0.1"), InvalidArgument, "need --subnet"),
        (NetworkCreate("x", subnet="10.1.0.0/33"), InvalidArgument, "invalid subnet"),
        (NetworkCreate("x", subnet="192.168.0.0/24"), InvalidArgument, "overlap"),
        (
            NetworkCreate("x", driver="overlay", options={"learning": "maybe"}),
            InvalidArgument,
            "expected on or off",
        ),
        (
            NetworkCreate("x", options={"com.docker.network.driver.mtu": "9"}),
            InvalidArgument,
            "MTU",
        ),
        (
            NetworkCreate("x", options={"com.docker.network.bridge.name": "br0"}),
            InvalidArgument,
            "on-",
        ),
        (
            NetworkCreate("x", driver="overlay", options={"vni": "16777216"}),
            InvalidArgument,
            "24 bits",
        ),
        (NetworkCreate("x", driver="overlay", options={"vni": "ten"}), InvalidArgument, "number"),
    ],
)
def test_network_create_refusals(req: NetworkCreate, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        _decide(req, host=["192.168.0.0/24"])


def test_names_vnis_and_bridge_names_are_unique_on_a_host() -> None:
    first = _decide(
        NetworkCreate(
            "a", driver="overlay", options={"vni": "5000", "com.docker.network.bridge.name": "on-x"}
        )
    )
    nets = {first.id: first}
    with pytest.raises(Conflict, match="already exists"):
        _decide(NetworkCreate("a"), nets)
    with pytest.raises(Conflict, match="VNI 5000"):
        _decide(NetworkCreate("b", driver="overlay", options={"vni": "5000"}), nets)
    with pytest.raises(Conflict, match="bridge name on-x"):
        _decide(NetworkCreate("c", options={"com.docker.network.bridge.name": "on-x"}), nets)
    assert (
        _decide(NetworkCreate("d", driver="overlay", options={hostcore.VNI_OPTION: "7"})).vni == 7
    )


@pytest.mark.parametrize(
    ("text", "mac"),
    [("02:42:0A:00:00:02", "02:42:0a:00:00:02"), ("02-42-0a-00-00-03", "02:42:0a:00:00:03")],
)
def test_macs_given_by_hand_are_normalised(text: str, mac: str) -> None:
    assert hostcore.check_mac(text) == mac


@pytest.mark.parametrize("text", ["01:00:5e:00:00:01", "ff:ff:ff:ff:ff:ff", "02:42:0a", "zz"])
def test_group_and_malformed_macs_are_refused(text: str) -> None:
    with pytest.raises(InvalidArgument, match="MAC"):
        hostcore.check_mac(text)


def test_ps_rows_are_newest_first_and_stopped_ones_only_with_all() -> None:
    from overlaynet.agent import views

    old = container("1" * 64)
    new = container("2" * 64, status=Status.EXITED)
    new.created = "2026-01-01T00:00:05.000000Z"
    now = hostcore.epoch_from_iso("2026-01-01T00:01:00.000000Z")
    assert [r["id"] for r in views.container_rows([old, new], True, now)] == [new.id, old.id]
    (row,) = views.container_rows([old, new], False, now)
    assert row["id"] == old.id and row["created"] == "About a minute ago"


# ---- a container's files ---------------------------------------------------------------------


def test_hosts_file_names_the_short_id_at_each_address() -> None:
    net = bridge_net()
    c = container("ab" * 32, ep("e" * 64, net, "172.18.0.2"), ep("f" * 64, net, None, "eth1"))
    assert hostcore.hosts_file(c, c.uts_name).splitlines()[2:] == ["172.18.0.2\tababababab" + "ab"]


def test_hosts_file_names_the_given_hostname_at_each_address() -> None:
    net = bridge_net()
    c = container("ab" * 32, ep("e" * 64, net, "172.18.0.2"), ep("f" * 64, net, "172.18.0.3"))
    c.hostname = "web"
    lines = hostcore.hosts_file(c, c.uts_name).splitlines()
    assert lines[2:] == ["172.18.0.2\tweb", "172.18.0.3\tweb"]
    assert "abababab" not in "".join(lines)


@pytest.mark.parametrize("name", ["web", "a", "web-1.example.org", "x" * 63])
def test_a_valid_hostname_passes(name: str) -> None:
    hostcore.check_hostname(name)


@pytest.mark.parametrize("name", ["", "-web", "web-", "a..b", "we_b", "x" * 64, "a." * 33])
def test_a_bad_hostname_is_refused_with_the_rule(name: str) -> None:
    with pytest.raises(InvalidArgument, match="RFC 1123"):
        hostcore.check_hostname(name)


def test_resolv_conf_points_at_the_embedded_dns_only_where_names_resolve() -> None:
    user, default = bridge_net(), bridge_net("d" * 64, "bridge", "172.17.0.0/16")
    nets = {user.id: user, default.id: default}
    host = "search lan\nnameserver 127.0.0.53\nnameserver 9.9.9.9\n"
    on_user = container("1" * 64, ep("e" * 64, user, "172.18.0.2"))
    on_default = container("2" * 64, ep("f" * 64, default, "172.17.0.2"))
    assert hostcore.resolv_conf(on_user, nets, host) == "nameserver 127.0.0.11\noptions ndots:0\n"
    # On the default bridge: the host's resolvers, less its loopback one (Docker's copy).
    assert hostcore.resolv_conf(on_default, nets, host) == "search lan\nnameserver 9.9.9.9\n"
    assert hostcore.resolv_conf(on_default, nets, None).startswith("# lab host")
