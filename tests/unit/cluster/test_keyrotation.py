"""The gossip key rotation's stage machine (keyrotation.decide) and the state commands it
drives: each step only once every live node reports the previous one, and for SETTLE seconds."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlaynet.cluster.errors import ClusterError, ErrorKind, Role
from overlaynet.cluster.keyrotation import SETTLE, KeyStage, KeyStep, Rotation, Watch, decide
from overlaynet.cluster.state import Cluster, ClusterState
from overlaynet.gossip.keyring import fingerprint

from .helpers import seeded_rand

OLD, NEW = "11" * 32, "22" * 32
FP_OLD, FP_NEW = fingerprint(bytes.fromhex(OLD)), fingerprint(bytes.fromhex(NEW))
INSTALL = Rotation(KeyStage.INSTALL, primary=OLD, pending=NEW)
USE = Rotation(KeyStage.USE, primary=NEW)
LIVE = ["n1", "n2"]


def test_idle_waits_unless_a_rotation_was_queued() -> None:
    assert decide(Rotation(KeyStage.IDLE, OLD), LIVE, {}, Watch(), 0.0)[0] is KeyStep.WAIT
    again = Rotation(KeyStage.IDLE, OLD, again=True)
    assert decide(again, LIVE, {}, Watch(), 0.0)[0] is KeyStep.START


def test_install_waits_for_every_live_node_to_hold_the_staged_key() -> None:
    reports = {"n1": (FP_OLD, FP_NEW), "n2": (FP_OLD,)}
    step, watch = decide(INSTALL, LIVE, reports, Watch(), 0.0)
    assert step is KeyStep.WAIT and watch.since is None


def test_install_uses_the_key_once_all_have_held_it_for_settle_seconds() -> None:
    reports = {"n1": (FP_OLD, FP_NEW), "n2": (FP_OLD, FP_NEW)}
    step, watch = decide(INSTALL, LIVE, reports, Watch(), 100.0)
    assert step is KeyStep.WAIT and watch.since == 100.0
    step, watch = decide(INSTALL, LIVE, reports, watch, 100.0 + SETTLE / 2)
    assert step is KeyStep.WAIT
    step, watch = decide(INSTALL, LIVE, reports, watch, 100.0 + SETTLE)
    assert step is KeyStep.USE and watch == Watch()


def test_a_node_that_loses_the_key_restarts_the_settle_time() -> None:
    ready = {"n1": (FP_OLD, FP_NEW), "n2": (FP_OLD, FP_NEW)}
    _, watch = decide(INSTALL, LIVE, ready, Watch(), 0.0)
    _, watch = decide(INSTALL, LIVE, {**ready, "n2": (FP_OLD,)}, watch, 1.0)
    step, watch = decide(INSTALL, LIVE, ready, watch, SETTLE + 0.5)
    assert step is KeyStep.WAIT and watch.since == SETTLE + 0.5


def test_a_down_node_is_not_waited_for() -> None:
    reports = {"n1": (FP_OLD, FP_NEW)}
    _, watch = decide(INSTALL, ["n1"], reports, Watch(), 0.0)
    assert decide(INSTALL, ["n1"], reports, watch, SETTLE)[0] is KeyStep.USE


def test_use_retires_only_once_every_node_seals_with_the_new_key() -> None:
    holding = {"n1": (FP_NEW, FP_OLD), "n2": (FP_OLD, FP_NEW)}
    _, watch = decide(USE, LIVE, holding, Watch(), 0.0)
    assert decide(USE, LIVE, holding, watch, 10 * SETTLE)[0] is KeyStep.WAIT
    sealing = {"n1": (FP_NEW, FP_OLD), "n2": (FP_NEW, FP_OLD)}
    _, watch = decide(USE, LIVE, sealing, watch, 10 * SETTLE)
    assert decide(USE, LIVE, sealing, watch, 11 * SETTLE)[0] is KeyStep.RETIRE


fingerprints = st.lists(st.sampled_from([FP_OLD, FP_NEW, "000000000000"]), max_size=3)


@given(
    st.lists(
        st.tuples(
            st.dictionaries(st.sampled_from(LIVE), fingerprints.map(tuple)),
            st.floats(0, 5),
        ),
        max_size=20,
    )
)
def test_install_never_steps_before_all_held_the_key_for_settle(
    history: list[tuple[dict[str, tuple[str, ...]], float]],
) -> None:
    watch, now, held_since = Watch(), 0.0, None
    for reports, dt in history:
        now += dt
        all_hold = all(FP_NEW in reports.get(n, ()) for n in LIVE)
        held_since = (held_since if held_since is not None else now) if all_hold else None
        step, watch = decide(INSTALL, LIVE, reports, watch, now)
        if step is KeyStep.USE:
            assert held_since is not None and now - held_since >= SETTLE
            return
        assert step is KeyStep.WAIT


# ---- the state commands ------------------------------------------------------------------


@pytest.fixture
def state() -> ClusterState:
    state = ClusterState()
    rand = seeded_rand()
    state.init(hostname="node1", addr="192.168.0.11", now=0.0, rand=rand)
    state.join_node(hostname="node2", addr="192.168.0.12", role=Role.WORKER, now=0.0, rand=rand)
    state.take_changes()
    return state


def test_the_three_stages_change_the_keyring_nodes_are_given(state: ClusterState) -> None:
    first = state.require_cluster().gossip_key
    staged = state.stage_gossip_key(rand=seeded_rand(7))
    # Install: the new key is accepted everywhere, the old one still seals.
    assert staged.gossip_rotation is KeyStage.INSTALL
    assert staged.gossip_keyring == [first, staged.pending_gossip_key]
    used = state.use_staged_gossip_key()
    assert used.gossip_rotation is KeyStage.USE
    assert used.gossip_keyring == [staged.pending_gossip_key, first]
    done = state.finish_gossip_rotation()
    assert done.gossip_rotation is KeyStage.IDLE
    assert done.gossip_keyring == [staged.pending_gossip_key]
    # Every stage is a record change that followers and the disk replay.
    assert len(state.take_changes()) == 3
    assert ClusterState.from_records(state.records(), state.index).cluster == state.cluster


def test_a_removal_during_a_rotation_queues_another(state: ClusterState) -> None:
    staged = state.stage_gossip_key(rand=seeded_rand(7))
    again = state.stage_gossip_key(rand=seeded_rand(8))
    assert again.pending_gossip_key == staged.pending_gossip_key and again.gossip_rotation_again
    state.use_staged_gossip_key()
    state.finish_gossip_rotation()
    assert state.require_cluster().gossip_rotation_again
    restarted = state.stage_gossip_key(rand=seeded_rand(9))
    assert restarted.gossip_rotation is KeyStage.INSTALL and not restarted.gossip_rotation_again


def test_steps_out_of_order_and_hand_rotation_meanwhile_are_refused(state: ClusterState) -> None:
    with pytest.raises(ClusterError, match="no staged gossip key"):
        state.use_staged_gossip_key()
    with pytest.raises(ClusterError, match="no gossip key rotation to finish"):
        state.finish_gossip_rotation()
    state.stage_gossip_key(rand=seeded_rand(7))
    state.take_changes()
    before = state.require_cluster()
    commands: list[Callable[[], Cluster]] = [
        lambda: state.rotate_gossip_key(rand=seeded_rand(3)),
        state.retire_gossip_keys,
        state.finish_gossip_rotation,
    ]
    for command in commands:
        with pytest.raises(ClusterError) as info:
            command()
        assert info.value.kind is ErrorKind.CONFLICT
    assert state.require_cluster() == before and state.take_changes() == []


def test_staging_keeps_the_ring_within_three_keys(state: ClusterState) -> None:
    rand = seeded_rand(5)
    for _ in range(3):
        state.rotate_gossip_key(rand=rand)
    staged = state.stage_gossip_key(rand=rand)
    assert len(staged.gossip_keyring) == 3
    assert len(state.use_staged_gossip_key().gossip_keyring) == 3
