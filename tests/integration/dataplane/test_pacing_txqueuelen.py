"""`vtep_main --txqueuelen` (issue 15: the sending TAP's queue, where UDP at 80 % of the sustained
rate lost datagrams with `--nice 0`): the TAP gets the given queue length, and without the
option it keeps `tap.DEFAULT_TXQUEUELEN`."""

from __future__ import annotations

import json

import pytest

from overlaynet.dataplane.tap import DEFAULT_TXQUEUELEN
from overlaynet.dataplane.vtep_main import parse_args
from overlaynet.lab.testbed import Testbed

TAP = "on-tap-tdp"  # `Testbed.start_vtep`'s TAP


@pytest.mark.parametrize("extra", [(), ("--txqueuelen", "20000")])
def test_the_tap_takes_the_queue_length_given(extra: tuple[str, ...]) -> None:
    with Testbed("onet-pq-") as tb:
        host, peer = tb.add_host("h1", 75), tb.add_host("h2", 76)
        tb.start_vtep(host, [peer], extra=extra)
        (link,) = json.loads(tb.exec(host.ns, "ip", "-j", "link", "show", TAP))
    assert link["txqlen"] == (int(extra[1]) if extra else DEFAULT_TXQUEUELEN)


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_a_queue_length_that_is_not_a_positive_number_is_refused_before_anything_is_built(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(
            ["--local-ip", "192.0.2.1", "--vni", "1", "--tap", "on-tap-x", "--txqueuelen", value]
        )
    assert exit_.value.code == 2
    assert "argument --txqueuelen" in capsys.readouterr().err
