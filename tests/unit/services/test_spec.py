"""Service specs: the --publish and --constraint forms, Docker's defaults, and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cluster.services import (
    Constraint,
    EndpointMode,
    FailureAction,
    HealthCheck,
    NodeFacts,
    PortConfig,
    Protocol,
    PublishMode,
    RestartCondition,
    RestartPolicy,
    ServiceMode,
    ServiceSpec,
    UpdateConfig,
    UpdateOrder,
    assign_ingress_ports,
    parse_constraint,
    parse_publish,
    spec_doc,
    spec_from_doc,
)
from overlaynet.cluster.state import ClusterError, ErrorKind, Role


def test_publish_long_form_of_the_tutorial_database() -> None:
    # `--publish mode=host,target=1433`: published on the task's node at the target port.
    assert parse_publish("mode=host,target=1433") == PortConfig(
        target=1433, published=1433, protocol=Protocol.TCP, mode=PublishMode.HOST
    )


def test_publish_long_form_with_every_field() -> None:
    assert parse_publish("mode=host,published=5353,target=53,protocol=udp") == PortConfig(
        target=53, published=5353, protocol=Protocol.UDP, mode=PublishMode.HOST
    )
    assert parse_publish("published=8080,target=80") == PortConfig(80, 8080)


def test_publish_short_forms() -> None:
    assert parse_publish("8080:8080") == PortConfig(8080, 8080)
    assert parse_publish("53:5353/udp") == PortConfig(5353, 53, Protocol.UDP)
    # Target only: ingress picks the published port when the service is created.
    assert parse_publish("80") == PortConfig(80, None)


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("", "give published:target"),
        ("8080:", "target port '' is not a number"),
        ("x:80", "published port 'x' is not a number"),
        ("70000:80", "invalid published port 70000"),
        ("0:80", "invalid published port 0"),
        ("1.2.3.4:80:80", "a host address cannot be given"),
        ("80/sctp", "invalid protocol 'sctp': use tcp, udp"),
        ("published=80", "missing target=PORT"),
        ("mode=bridge,target=80", "invalid publish mode 'bridge': use ingress, host"),
        ("target=80,target=81", "target is given twice"),
        ("target=80,color=red", "unknown field 'color'"),
        ("target=80,published", "'published' is not key=value"),
    ],
)
def test_publish_errors_say_what_is_wrong(flag: str, says: str) -> None:
    with pytest.raises(ClusterError) as e:
        parse_publish(flag)
    assert e.value.kind is ErrorKind.INVALID
    assert says in e.value.message


def test_port_shows_as_docker_lists_it() -> None:
    assert str(parse_publish("8080:80")) == "*:8080->80/tcp"


NODE = NodeFacts(id="n1", hostname="node1", role=Role.MANAGER, labels={"zone": "a"})


@pytest.mark.parametrize(
    ("flag", "matches"),
    [
        ("node.hostname==node1", True),
        ("node.hostname!=node1", False),
        ("node.hostname == node2", False),
        ("node.role==manager", True),
        ("node.role!=worker", True),
        ("node.id==n1", True),
        ("node.labels.zone==a", True),
        ("node.labels.zone!=a", False),
        # A label the node lacks equals nothing, so != matches (swarmkit's rule).
        ("node.labels.disk==ssd", False),
        ("node.labels.disk!=ssd", True),
    ],
)
def test_constraints_match_nodes(flag: str, matches: bool) -> None:
    assert parse_constraint(flag).matches(NODE) is matches


@pytest.mark.parametrize(
    ("flag", "says"),
    [
        ("node.hostname=node1", "use KEY==VALUE or KEY!=VALUE"),
        ("node.hostname==", "use KEY==VALUE"),
        ("engine.labels.x==y", "invalid constraint key 'engine.labels.x'"),
        ("node.labels.==y", "invalid constraint key"),
        ("node.role==boss", "invalid node.role 'boss': use manager or worker"),
    ],
)
def test_constraint_errors(flag: str, says: str) -> None:
    with pytest.raises(ClusterError, match=says.replace(".", r"\.").replace("(", r"\(")):
        parse_constraint(flag)


def test_defaults_are_dockers() -> None:
    spec = ServiceSpec(name="web", image="nginx")
    assert spec.replicas == 1
    assert spec.mode is ServiceMode.REPLICATED
    assert spec.endpoint_mode is EndpointMode.VIP
    assert spec.restart == RestartPolicy(RestartCondition.ANY, 5.0, 0)
    for update in (spec.update, spec.rollback):
        assert update == UpdateConfig(
            parallelism=1,
            delay=0.0,
            failure_action=FailureAction.PAUSE,
            monitor=5.0,
            max_failure_ratio=0.0,
            order=UpdateOrder.STOP_FIRST,
        )
    health = HealthCheck(test=("CMD-SHELL", "true"))
    assert (health.interval, health.timeout, health.retries, health.start_period) == (
        30.0,
        30.0,
        3,
        0.0,
    )
    assert HealthCheck(test=("NONE",)).disabled


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"name": "web.1"}, "invalid service name 'web.1'"),
        ({"name": "-web"}, "invalid service name"),
        ({"name": "a" * 64}, "invalid service name"),
        ({"image": ""}, "invalid image"),
        ({"replicas": -1}, "invalid replicas -1"),
        ({"replicas": 10001}, "at most 10000"),
        ({"mode": "global", "replicas": 2}, "replicas can only be used with replicated mode"),
        ({"mode": "daemon"}, "invalid mode 'daemon'"),
        ({"env": ("NOVALUE",)}, "invalid --env 'NOVALUE': use NAME=VALUE"),
        ({"networks": ("a", "a")}, "a network is given twice"),
        ({"endpoint_mode": "dns"}, "invalid endpoint mode 'dns'"),
        (
            {"endpoint_mode": "dnsrr", "ports": (PortConfig(80, 8080),)},
            "needs a VIP: use --endpoint-mode vip, or publish with mode=host",
        ),
        (
            {"ports": (PortConfig(80, 8080), PortConfig(81, 8080))},
            "published port 8080/tcp is given twice",
        ),
    ],
)
def test_bad_specs_are_refused(fields: dict[str, object], says: str) -> None:
    base: dict[str, object] = {"name": "web", "image": "nginx"}
    with pytest.raises(ClusterError) as e:
        ServiceSpec(**{**base, **fields})  # type: ignore[arg-type]
    assert e.value.kind is ErrorKind.INVALID
    assert says in e.value.message


@pytest.mark.parametrize(
    "make",
    [
        lambda: UpdateConfig(parallelism=-1),
        lambda: UpdateConfig(max_failure_ratio=1.5),
        lambda: UpdateConfig(failure_action="explode"),  # type: ignore[arg-type]
        lambda: UpdateConfig(order="random"),  # type: ignore[arg-type]
        lambda: UpdateConfig(monitor=-1),
        lambda: RestartPolicy(delay=-1),
        lambda: RestartPolicy(condition="sometimes"),  # type: ignore[arg-type]
        lambda: RestartPolicy(max_attempts=-2),
        lambda: HealthCheck(test=()),
        lambda: HealthCheck(test=("CMD-SHELL", "true"), interval=0),
        lambda: HealthCheck(test=("CMD-SHELL", "true"), retries=0),
        lambda: HealthCheck(test=("NONE", "x")),
    ],
)
def test_bad_policies_are_refused(make: object) -> None:
    with pytest.raises(ClusterError):
        make()  # type: ignore[operator]


def test_dnsrr_may_publish_in_host_mode() -> None:
    spec = ServiceSpec(
        name="database",
        image="db",
        endpoint_mode=EndpointMode.DNSRR,
        ports=(parse_publish("mode=host,target=1433"),),
    )
    assert spec.host_ports == frozenset({(1433, Protocol.TCP)})


def test_ingress_ports_get_a_free_dynamic_port() -> None:
    spec = ServiceSpec(name="web", image="nginx", ports=(PortConfig(80), PortConfig(443, 8443)))
    out = assign_ingress_ports(spec, {(30000, Protocol.TCP)})
    assert [p.published for p in out.ports] == [30001, 8443]


def test_a_published_port_taken_by_another_service_is_a_conflict() -> None:
    spec = ServiceSpec(name="web", image="nginx", ports=(PortConfig(80, 8080),))
    with pytest.raises(ClusterError) as e:
        assign_ingress_ports(spec, {(8080, Protocol.TCP)})
    assert e.value.kind is ErrorKind.CONFLICT


def test_a_malformed_document_is_refused() -> None:
    with pytest.raises(ClusterError, match="malformed service spec"):
        spec_from_doc({"image": "x"})


SPECS = st.builds(
    ServiceSpec,
    name=st.sampled_from(["web", "db", "a_b-c"]),
    image=st.sampled_from(["nginx", "busybox:1.36"]),
    command=st.lists(st.text(min_size=1, max_size=5), max_size=3).map(tuple),
    env=st.lists(st.sampled_from(["A=1", "B=", "C_D=x=y"]), max_size=3).map(tuple),
    replicas=st.integers(0, 20),
    networks=st.lists(st.sampled_from(["n1", "n2", "n3"]), unique=True).map(tuple),
    ports=st.lists(
        st.builds(
            PortConfig,
            target=st.integers(1, 65535),
            published=st.none() | st.integers(1, 65535),
            protocol=st.sampled_from(list(Protocol)),
            mode=st.sampled_from(list(PublishMode)),
        ),
        max_size=3,
        unique_by=lambda p: (p.published or -p.target, p.protocol),
    ).map(tuple),
    constraints=st.lists(
        st.sampled_from(
            [
                Constraint("node.hostname", "==", "node1"),  # type: ignore[arg-type]
                parse_constraint("node.labels.zone!=b"),
                parse_constraint("node.role==worker"),
            ]
        ),
        max_size=2,
    ).map(tuple),
    healthcheck=st.none() | st.just(HealthCheck(test=("CMD", "true"), retries=2)),
)


@given(SPECS)
def test_a_spec_survives_its_document(spec: ServiceSpec) -> None:
    import json

    assert spec_from_doc(json.loads(json.dumps(spec_doc(spec)))) == spec


def test_global_mode_needs_no_replicas() -> None:
    assert ServiceSpec(name="mon", image="x", mode=ServiceMode.GLOBAL).replicas is None
    assert ServiceSpec(name="web", image="x").replicas == 1
