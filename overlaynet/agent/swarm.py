"""This host's place in a swarm: its credentials, its way to the managers, and on a manager
the cluster management server itself (overlaynet/cluster/ holds the cores).

What a joined host keeps is in `swarm.json` beside the agent's state, so a restart rejoins the
swarm without a token; a manager's desired state is in `cluster.db` (ClusterStore) and its
Raft journal (currentTerm, votedFor, the log) in `raft.journal` (cluster/raft.py).

The manager's server (cluster/manager.py and what only it uses, ~1 MiB) is imported when this
host becomes a manager (`init`, a promotion, a restart as one): a worker never loads it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from overlaynet.cluster.client import JoinResult, ManagerClient, split_addr
from overlaynet.cluster.raft import OnEntry, RaftLog, raft_password
from overlaynet.cluster.replication import raft_addr
from overlaynet.cluster.state import MANAGER_PORT, ClusterError, Role
from overlaynet.cluster.store import ClusterStore
from overlaynet.errors import ApiError, Conflict, InvalidArgument, error_for
from overlaynet.paths import write_private

if TYPE_CHECKING:
    from overlaynet.cluster.manager import ManagerServer
    from overlaynet.cluster.raft_replica import RaftReplica

log = logging.getLogger(__name__)


NOT_IN_SWARM = (
    "This node is not a swarm manager. Use `overlaynet swarm init` or `overlaynet swarm join` "
    "to connect this node to a swarm and try again."
)


def api_error(e: ClusterError) -> ApiError:
    return error_for(str(e.kind), str(e.message))


class SwarmMember:
    """Joined or not; `call` reaches the cluster state from any node that is in the swarm."""

    def __init__(self, state_dir: Path, hostname: str) -> None:
        self.state_dir = state_dir
        self.hostname = hostname
        self.joined: JoinResult | None = None
        self.advertise_addr: str | None = None
        self.server: ManagerServer | None = None
        self.node_status: Callable[[str], str] = lambda node_id: "Ready"
        self._server_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        # The client of the current membership: its connections to the managers stay open
        # between requests (cluster/client.py), so it is kept, and rebuilt only when the
        # node's identity or its managers change.
        self._client: ManagerClient | None = None
        self._client_for: tuple[str, bytes, tuple[str, ...]] | None = None
        # The managers' last state.snapshot for this worker (monotonic time, answer): the role
        # check and the data-key poll run back to back every few seconds and need one between
        # them (`snapshot(max_age=...)`).
        self._fetched: tuple[float, dict[str, Any]] | None = None
        self._load()

    @property
    def _file(self) -> Path:
        return self.state_dir / "swarm.json"

    @property
    def _store_path(self) -> Path:
        return self.state_dir / "cluster.db"

    @property
    def _journal_path(self) -> Path:
        return self.state_dir / "raft.journal"

    def _forget_manager_state(self) -> None:
        """The store and the Raft journal go together: a manager again starts from both empty
        and receives the whole log."""
        self._store_path.unlink(missing_ok=True)
        for path in RaftLog.files(self._journal_path):
            path.unlink(missing_ok=True)

    def _load(self) -> None:
        try:
            doc = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return
        self.joined = JoinResult.from_doc(doc["join"])
        self.advertise_addr = doc["advertise_addr"]

    def _save(self) -> None:
        assert self.joined is not None
        doc = {"join": self.joined.to_doc(), "advertise_addr": self.advertise_addr}
        # The credential and the gossip key are secrets.
        write_private(self._file, json.dumps(doc, indent=2))

    @property
    def in_swarm(self) -> bool:
        return self.joined is not None

    @property
    def is_manager(self) -> bool:
        return self.server is not None

    def client(self) -> ManagerClient:
        assert self.joined is not None
        who = (self.joined.node_id, self.joined.credential, self.joined.managers)
        if self._client is None or self._client_for != who:
            if self._client is not None:
                self._client.close()
            self._client = ManagerClient(
                list(self.joined.managers), self.joined.node_id, self.joined.credential
            )
            self._client_for = who
        return self._client

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = self._client_for = None

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery) -> None:
        """On agent start: serve as a manager again if this node is one."""
        self._nursery = nursery
        if self.joined is not None and self._store_path.exists():
            await self._start_server()

    async def _raft_join(
        self, store: ClusterStore, snap: dict[str, Any] | None
    ) -> tuple[str, list[str]] | None:
        """The Raft password and the Raft members to start with.

        A manager with a copy of the swarm derives the password and knows the members it last
        saw (RaftLog.remember_members; none at all: the `swarm init` node, alone). A new one
        asks the managers, who give both to managers only: its first members must be the
        Raft cluster's as it stands, never the state's managers, or two new managers that
        both list each other (promoted back to back) could elect one another on empty logs.
        """
        cluster = store.load().cluster
        remembered = RaftLog.remembered_members(self._journal_path)
        assert self.joined is not None
        # Only the node that ran `swarm init` starts a Raft cluster of its own; any other
        # manager without members of its own to go by (a new one, or one whose copy predates
        # Raft) asks, or it would lead a cluster of one beside the real one.
        founder = cluster is not None and cluster.leader_id == self.joined.node_id
        if snap is None and remembered is None and not founder:
            try:
                snap = await self.client().call("state.snapshot")
            except (ClusterError, OSError) as e:
                log.warning("cannot get the Raft key from the managers: %s", e)
                return None
        if snap is not None and snap.get("raft_key"):
            members = [str(m) for m in snap.get("raft_members") or []]
            return str(snap["raft_key"]), remembered if remembered is not None else members
        if cluster is None or (remembered is None and not founder):
            return None
        return raft_password(cluster.root_key, cluster.raft_epoch), remembered or []

    async def _start_server(self, snap: dict[str, Any] | None = None) -> None:
        assert self._nursery is not None and self.joined is not None
        assert self.advertise_addr is not None
        from overlaynet.cluster.manager import ManagerServer
        from overlaynet.cluster.raft_replica import RaftReplica

        store = ClusterStore(self._store_path)
        joining = await self._raft_join(store, snap)
        if joining is None:
            store.close()
            return  # follow_role tries again
        password, members = joining
        port = MANAGER_PORT
        for addr in self.joined.managers:
            host, their_port = split_addr(addr)
            if host == self.advertise_addr:
                port = their_port
        me = raft_addr(self.advertise_addr)
        partners = [m for m in members if m != me]
        journal = self._journal_path

        def make_log(on_entry: OnEntry) -> RaftLog:
            return RaftLog(me, partners, password, journal, on_entry)

        def make_replica(server: ManagerServer) -> RaftReplica:
            return RaftReplica(
                store,
                lambda: server.state,
                server.set_state,
                lambda: secrets.token_hex(8),
                make_log,
                server.stats,
            )

        self.server = ManagerServer(
            store,
            self.advertise_addr,
            port,
            node_status=lambda node_id: self.node_status(node_id),
            # Only this node's identity: Raft says whom writes are forwarded to.
            upstream=self.client(),
            replica=make_replica,
        )
        scope = trio.CancelScope()
        self._server_scope = scope
        server = self.server

        async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await server.run(task_status=task_status)

        await self._nursery.start(serve)

    async def follow_role(self) -> None:
        """Become a (follower) manager when promoted, a worker again when demoted: the role
        lives in the cluster state, so each node reads its own there."""
        if self.joined is None or (self.server is not None and self.server.is_leader):
            return  # the leader is never demoted
        try:
            # Ask the managers, not a follower's own copy: a demoted follower is no longer
            # sent the leader's changes, so its copy would keep saying "manager".
            snap = await self.client().call("state.snapshot")
        except (ClusterError, OSError):
            return  # no manager reachable: keep the current role
        if self.server is None:
            self._fetched = (time.monotonic(), snap)
        role = snap.get("node", {}).get("role")
        if role == Role.MANAGER.value and self.server is None:
            log.info("promoted: serving as a manager")
            self._forget_manager_state()
            managers = tuple(snap.get("managers") or self.joined.managers)
            self.joined = dataclasses.replace(self.joined, role=Role.MANAGER, managers=managers)
            self._save()
            await self._start_server(snap)
        elif role == Role.WORKER.value and self.server is not None and not self.server.is_leader:
            log.info("demoted: serving as a worker")
            await self._stop_server()
            self._forget_manager_state()
            self.joined = dataclasses.replace(self.joined, role=Role.WORKER)
            self._save()

    async def _stop_server(self) -> None:
        if self._server_scope is not None:
            self._server_scope.cancel()
        self.server = None
        self._server_scope = None

    async def init(
        self, advertise_addr: str, port: int, ingress_subnet: str | None = None
    ) -> dict[str, Any]:
        if self.joined is not None:
            raise Conflict(
                "This node is already part of a swarm. Use `overlaynet swarm leave` to leave this "
                "swarm and join another one."
            )
        from overlaynet.cluster.manager import init_swarm

        self._forget_manager_state()
        store = ClusterStore(self._store_path)
        try:
            result = init_swarm(
                store,
                hostname=self.hostname,
                advertise_addr=advertise_addr,
                port=port,
                ingress_subnet=ingress_subnet,
            )
        except ClusterError as e:
            raise api_error(e) from None
        finally:
            store.close()
        self.joined = result.as_join_result()
        self.advertise_addr = advertise_addr
        self._save()
        await self._start_server()
        return {
            "node_id": result.node_id,
            "worker_token": result.worker_token,
            "manager_addr": result.manager_addr,
        }

    async def force_new_cluster(self) -> dict[str, Any]:
        """`swarm init --force-new-cluster` (issue 14), on a manager that lost its quorum for
        good: it keeps its committed state and becomes a Raft cluster of one, as Docker's.

        The state (cluster.db) gets a new Raft epoch (a new Raft password: the old members
        cannot vote in the new cluster), this node as leader and the other managers as workers
        (ClusterState.force_new_cluster), written straight to the store: there is no quorum to
        commit it through. The old journal goes; the store forgets its place in the old log,
        so the new leader's first entry is a genesis of the whole state, which every manager
        promoted or joined later receives."""
        if self.joined is None or self.server is None:
            raise InvalidArgument(
                "--force-new-cluster recovers a swarm on one of its managers: this node is not "
                "a manager of a swarm"
            )
        node_id = self.joined.node_id
        me = self.server.state.nodes.get(node_id)
        if me is None or me.role is not Role.MANAGER:
            # Checked before the server stops: a demoted manager's server runs until it notices.
            raise Conflict("this node is no longer a manager of its swarm")
        replica = self.server.replica
        await self._stop_server()
        if replica is not None and not await replica.raft.wait_closed():
            log.warning("force-new-cluster: the old Raft engine has not stopped yet")
        store = ClusterStore(self._store_path)
        try:
            state = store.load()
            try:
                demoted = state.force_new_cluster(node_id, now=time.time())
            except ClusterError as e:
                raise api_error(e) from None
            store.save(state)
            store.forget_raft()
            for path in RaftLog.files(self._journal_path):
                path.unlink(missing_ok=True)
            cluster = state.require_cluster()
            me = state.nodes[node_id]
        finally:
            store.close()
        log.warning(
            "force-new-cluster: a new Raft cluster of one (epoch %d); managers made workers: %s",
            cluster.raft_epoch,
            ", ".join(n.hostname for n in demoted) or "none",
        )
        self.joined = dataclasses.replace(self.joined, managers=(str(me.manager_addr),))
        self._save()
        await self._start_server()
        return {
            "node_id": node_id,
            "worker_token": cluster.token(Role.WORKER),
            "manager_addr": me.manager_addr,
            "demoted": sorted(n.hostname for n in demoted),
        }

    async def join(self, token: str, remote: str, advertise_addr: str) -> dict[str, Any]:
        if self.joined is not None:
            raise Conflict(
                "This node is already part of a swarm. Use `overlaynet swarm leave` to leave this "
                "swarm and join another one."
            )
        try:
            result = await ManagerClient.join(remote, token, self.hostname, advertise_addr)
        except ClusterError as e:
            raise api_error(e) from None
        self.joined = result
        self.advertise_addr = advertise_addr
        self._save()
        if result.role == Role.MANAGER:
            # A manager starts from an empty store and receives the state through Raft.
            self._forget_manager_state()
            await self._start_server()
        return {"node_id": result.node_id, "role": result.role.value}

    async def leave(self, force: bool) -> None:
        if self.joined is None:
            raise InvalidArgument("This node is not part of a swarm")
        if self.is_manager and not force:
            raise Conflict(
                "You are attempting to leave the swarm on a node that is participating as a "
                "manager. Removing this node leaves the swarm without its state here. Use "
                "`--force` to suppress this message."
            )
        if not (self.server is not None and self.server.is_leader):
            try:
                await self.call("leave", force=force)
            except ApiError:
                if not force:
                    raise
        await self._stop_server()
        self._forget_manager_state()
        self._file.unlink(missing_ok=True)
        self.joined = None
        self._fetched = None
        self._drop_client()

    # ---- requests -----------------------------------------------------------------------

    async def call(self, op: str, **args: Any) -> Any:
        """A cluster request: served here on a manager, sent to the managers from a worker."""
        if self.joined is None:
            raise InvalidArgument(NOT_IN_SWARM)
        try:
            if self.server is not None:
                return await self.server.call_local(self.joined.node_id, op, **args)
            return await self.client().call(op, **args)
        except ClusterError as e:
            raise api_error(e) from None

    def gossip_seeds(self) -> list[str]:
        """Where gossip can join: the hosts known at join time and every manager."""
        if self.joined is None:
            return []
        managers = [split_addr(m)[0] for m in self.joined.managers]
        # A manager knows every node: after a restart it can rejoin through any of them.
        known = [n.addr for n in self.server.state.nodes.values()] if self.server else []
        return list(dict.fromkeys([*self.joined.peers, *managers, *known]))

    def remember_gossip_key(self, key: bytes) -> None:
        """The primary gossip key after a rotation step: a restarted agent gossips with it."""
        if self.joined is not None and self.joined.gossip_key != key:
            self.joined = dataclasses.replace(self.joined, gossip_key=key)
            self._save()

    async def snapshot(self, max_age: float = 0.0) -> dict[str, Any]:
        """The managers' state.snapshot for this node; on a worker, one fetched at most
        `max_age` seconds ago serves (periodic polls that need not be fresher than that)."""
        fetched = self._fetched
        if (
            max_age > 0
            and self.server is None
            and fetched is not None
            and time.monotonic() - fetched[0] <= max_age
        ):
            result: dict[str, Any] = fetched[1]
        else:
            result = await self.call("state.snapshot")
            if self.server is None:
                self._fetched = (time.monotonic(), result)
        if self.joined is not None and result.get("managers"):
            managers = tuple(result["managers"])
            if managers != self.joined.managers:
                self.joined = dataclasses.replace(self.joined, managers=managers)
                self._save()
        return result
