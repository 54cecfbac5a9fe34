"""The managers' Raft engine: one PySyncObj (0.3.17) object per manager, in its own thread,
bridged to trio.

Why PySyncObj and not etcd (issue 14's two candidates): it is a Python library the agent runs
in-process, so a manager needs no second daemon to start, supervise and clean up inside every
host's namespace, and ≥ 0.3.16 persists currentTerm/votedFor in its journal. Its wire format is
pickle, so it never runs without a password: PySyncObj then seals every message with Fernet under
a key derived from it, and the password is derived from the swarm's root key, which only
managers hold (`raft_password`). It binds the manager's underlay address only (RAFT_PORT).

The log carries only JSON text (replication.Entry). PySyncObj's thread applies committed
entries by calling `_ReplicatedLog.append`; this module hands each one to trio with
`run_sync_soon` (FIFO, so log order is kept) and never blocks trio's loop: the object is built in
a worker thread (its key derivation and journal load take a while), every later call into it
only queues.

PySyncObj (~8 MiB and 50 modules with the `cryptography` it pulls in, issue 15) is imported when
a manager starts its Raft member (`RaftLog.start`): the PySyncObj classes live in `raft_syncobj`,
and every agent imports this module, managers or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from overlaynet.cluster.replication import RaftStatus, status_from_pysyncobj
from overlaynet.paths import PRIVATE_FILE_MODE, write_private

if TYPE_CHECKING:
    # Re-exported (`__getattr__` below at run time): tests build read-only nodes with it.
    from overlaynet.cluster.raft_syncobj import _ReplicatedLog as _ReplicatedLog

log = logging.getLogger(__name__)

# Raft timing. Heartbeats every 50 ms; a follower that hears nothing for 0.3-0.7 s stands for
# election (Raft §5.2 randomises it; etcd's default is 10 heartbeats, 100 ms / 1 s): a killed
# leader is replaced in about a second, well under issue 14's 5 s, and a lone manager (no
# partners) elects itself within 0.7 s of starting.
HEARTBEAT = 0.05
ELECTION_MIN = 0.3
ELECTION_MAX = 0.7
# PySyncObj's thread wakes at least this often while the manager has partners (its timers:
# elections, heartbeats); socket events and submitted entries wake it sooner. Its default, and
# HEARTBEAT: a heartbeat leaves at most 2 x 50 ms after the last, well inside ELECTION_MIN, and
# a follower notices a silent leader at most 50 ms late. (20 ms before: 50 wake-ups/s of an idle
# manager, ~2.5 % of a core on a 3-host lab, issue 15.)
TICK = 0.05
# A lone manager (the common lab case: no partners) has no heartbeat to send and no election to
# watch: submitted entries, membership changes and `close` wake its thread (pipe notifier), so it
# wakes on its own only this often (PySyncObj's once-a-second journal meta save runs then).
LONE_TICK = 1.0
# A connection that carried nothing this long is dead (must be ≥ ELECTION_MAX, PySyncObj checks).
CONNECTION_TIMEOUT = 2.0
# How soon a lost connection to a partner is tried again (PySyncObj's default is 5 s, which
# would leave a restarted manager out of the cluster that long).
CONNECTION_RETRY = 0.5
# A leader that hears from no quorum this long steps down, so writes fail fast with the quorum
# message instead of waiting on a leader that cannot commit (PySyncObj's default: 30 s).
LEADER_FALLBACK = 2.0
# PySyncObj's thread ends at its next tick after `destroy`; a busy 2-core machine may delay it.
CLOSE_TIMEOUT = 5.0
# Log compaction serialises the PySyncObj object (pickle of its attributes); the state lives in
# each manager's SQLite store instead, so compaction stays off and the journal keeps every entry
# (a new member is sent the whole log, genesis first). Bounded compaction is left for later.
NO_COMPACTION = 2**62
# The label the Raft password is derived under (HMAC-SHA256 of the swarm's root key): a key of
# its own, so it is neither a token secret nor the gossip key.
_PASSWORD_LABEL = b"overlaynet raft password v1"

OnEntry = Callable[[int, str], None]
OnDone = Callable[[bool, str], None]


def raft_password(root_key_hex: str, epoch: int = 0) -> str:
    """PySyncObj's password for a swarm: only holders of the root key (managers) know it.
    `epoch` (Cluster.raft_epoch) is bumped by `swarm init --force-new-cluster`: the members of
    the Raft cluster before it keep the old password, so they cannot talk (or vote) in the new
    one. Epoch 0 is the first cluster's, derived as before epochs existed."""
    label = _PASSWORD_LABEL if epoch == 0 else _PASSWORD_LABEL + b" epoch %d" % epoch
    return hmac.new(bytes.fromhex(root_key_hex), label, hashlib.sha256).hexdigest()


def fail_reason(code: int) -> str:
    # raft_syncobj puts back the socket.inet_ntop that importing pysyncobj replaces.
    from pysyncobj import FAIL_REASON  # type: ignore[import-untyped]

    from overlaynet.cluster import raft_syncobj  # noqa: F401

    names = {v: str(k) for k, v in vars(FAIL_REASON).items() if isinstance(v, int)}
    return names.get(code, str(code)).lower()


def __getattr__(name: str) -> Any:
    """`raft._ReplicatedLog` (tests build read-only nodes with it), imported on first use."""
    if name == "_ReplicatedLog":
        from overlaynet.cluster import raft_syncobj

        return raft_syncobj._ReplicatedLog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RaftLog:
    """One manager's member of the Raft cluster, seen from trio."""

    def __init__(
        self,
        self_addr: str,
        partners: Iterable[str],
        password: str,
        journal: Path,
        on_entry: OnEntry,
    ) -> None:
        self.self_addr = self_addr
        self.partners = sorted(set(partners) - {self_addr})
        self._password = password
        self.journal = journal
        self._on_entry = on_entry
        self._obj: _ReplicatedLog | None = None
        self._conf: Any = None
        self._closing: _ReplicatedLog | None = None
        self._remembered: list[str] | None = None
        self._token: trio.lowlevel.TrioToken | None = None

    async def start(self) -> None:
        """Build the PySyncObj object (in a worker thread) and start its own thread."""
        from pysyncobj import SyncObjConf

        from overlaynet.cluster.raft_syncobj import _ReplicatedLog

        self._token = trio.lowlevel.current_trio_token()
        conf = SyncObjConf(
            password=self._password,
            bindAddress=self.self_addr,
            journalFile=str(self.journal),
            fullDumpFile=str(self.journal.with_suffix(".dump")),
            dynamicMembershipChange=True,
            # Serialising by fork() would fork the multi-threaded agent (see host/netns.py).
            useFork=False,
            appendEntriesPeriod=HEARTBEAT,
            raftMinTimeout=ELECTION_MIN,
            raftMaxTimeout=ELECTION_MAX,
            connectionTimeout=CONNECTION_TIMEOUT,
            connectionRetryTime=CONNECTION_RETRY,
            leaderFallbackTimeout=LEADER_FALLBACK,
            logCompactionMinEntries=NO_COMPACTION,
            logCompactionMinTime=NO_COMPACTION,
            # A write without a leader fails at once; the manager says why (quorum).
            commandsWaitLeader=False,
            # Unbatched, a submitted entry wakes PySyncObj's thread at once (its pipe notifier)
            # and is sent to the followers at once, instead of at the next tick.
            appendEntriesUseBatch=False,
            autoTickPeriod=TICK if self.partners else LONE_TICK,
        )
        self._conf = conf
        self._obj = await trio.to_thread.run_sync(
            _ReplicatedLog, self.self_addr, self.partners, conf, self._deliver
        )
        # PySyncObj's tick thread ends as soon as the thread that built the object has ended
        # (its `__mainThread`, meant as the program's main thread). Built in trio's worker
        # thread, that is a thread trio's cache ends after 10 s idle (trio/_core/_thread_cache
        # IDLE_TIMEOUT): Raft then stopped for good ~10 s into a manager's life once no other
        # worker job came, and every later write timed out ("not committed in time": the 64th
        # to 95th join of a 100-host lab, issue 15). The thread running trio lives as long as
        # this RaftLog is used.
        self._obj._SyncObj__mainThread = threading.current_thread()
        if not self.partners:
            # A lone manager (`swarm init`, the common lab case) has nobody to wait for: it
            # stands for election at its next tick rather than after ELECTION_MIN-MAX, so a
            # one-manager swarm serves writes as soon after its start as before Raft.
            self._obj._SyncObj__raftElectionDeadline = 0
        self._obj.addOnTickCallback(self._hurry)
        self.keep_private()

    def keep_private(self) -> None:
        """The journal holds the swarm's whole history (credentials included): owner only.
        PySyncObj rewrites its `.meta` (term, vote) through a new file under the process's
        umask, so this runs again after it may have."""
        for path in self.files(self.journal):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(path.stat().st_mode) & ~PRIVATE_FILE_MODE:
                    os.chmod(path, PRIVATE_FILE_MODE)

    @staticmethod
    def files(journal: Path) -> list[Path]:
        """Every file kept for the journal `journal` (PySyncObj's and `remember_members`')."""
        return [
            journal,
            journal.with_name(journal.name + ".meta"),
            journal.with_suffix(".dump"),
            journal.with_suffix(".members"),
        ]

    def remember_members(self) -> None:
        """Keep the Raft members this node sees, to start with them after a restart: PySyncObj
        replays membership changes from its journal on top of the members it starts with, so
        those must be the Raft cluster's, not the cluster state's managers."""
        members = self.status().members
        if self._obj is None or members == self._remembered:
            return
        write_private(self.journal.with_suffix(".members"), json.dumps(members))
        self._remembered = members

    @staticmethod
    def remembered_members(journal: Path) -> list[str] | None:
        try:
            doc = json.loads(journal.with_suffix(".members").read_text())
        except (OSError, ValueError):
            return None
        return [str(m) for m in doc] if isinstance(doc, list) else None

    def close(self) -> None:
        """Stop PySyncObj's thread and close its sockets (returns at once)."""
        if self._obj is not None:
            self._obj.destroy()
            # Its thread ends at its next tick: now, not LONE_TICK later. (A full pipe is
            # already a wake-up.)
            with contextlib.suppress(OSError):
                self._obj._SyncObj__pipeNotifier.notify()
            self._closing = self._obj
            self._obj = None

    async def wait_closed(self, seconds: float = CLOSE_TIMEOUT) -> bool:
        """Wait (at most `seconds`) until `close` ran and PySyncObj's thread has ended, i.e.
        its port and journal are free; whether it has."""
        with trio.move_on_after(seconds):
            while self._obj is not None or (
                self._closing is not None and self._closing.tick_thread_alive()
            ):
                await trio.sleep(TICK)
            return True
        return False

    def _hurry(self) -> None:
        """PySyncObj's thread, at the end of each tick: the tick period for the members as they
        are now (PySyncObj reads it from its conf before each wait), and a lone leader commits
        an entry at the tick after the one that appended it: wake that tick now instead of a
        tick later (with partners, their answers wake it). Keeps a one-manager swarm's writes
        ~1 ms."""
        obj = self._obj
        if obj is None:
            return
        self._conf.autoTickPeriod = TICK if obj.otherNodes else LONE_TICK
        if obj.otherNodes or not obj._isLeader():
            return
        if obj.raftCommitIndex < obj._getRaftLogSize():
            obj._SyncObj__pipeNotifier.notify()

    def _deliver(self, raft_index: int, text: str) -> None:
        """PySyncObj's thread: queue the entry for trio, in log order."""
        if self._token is None:
            return
        # On trio.RunFinishedError the agent is shutting down; the journal keeps the entry.
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._on_entry, raft_index, text)

    def _call_back(self, done: OnDone) -> Callable[[Any, int], None]:
        from pysyncobj import FAIL_REASON

        token = self._token

        def callback(result: Any, error: int) -> None:
            if token is None:
                return
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done, error == FAIL_REASON.SUCCESS, fail_reason(error))

        return callback

    def submit(self, text: str, done: OnDone) -> None:
        """Append an entry (on the leader); `done(ok, reason)` runs in trio once PySyncObj
        knows (committed and applied, or failed)."""
        if self._obj is None:
            done(False, "stopped")
            return
        self._obj.append(text, callback=self._call_back(done))

    def add_member(self, addr: str, done: OnDone) -> None:
        if self._obj is None:
            done(False, "stopped")
            return
        self._obj.addNodeToCluster(addr, callback=self._call_back(done))

    def remove_member(self, addr: str, done: OnDone) -> None:
        if self._obj is None:
            done(False, "stopped")
            return
        self._obj.removeNodeFromCluster(addr, callback=self._call_back(done))

    def hand_over(self) -> None:
        """Ask PySyncObj to make another caught-up member leader (before removing this one)."""
        if self._obj is not None:
            self._obj.transferLeadership()

    def status(self) -> RaftStatus:
        if self._obj is None:
            return RaftStatus(
                self.self_addr, 0, 0, 0, None, False, dict.fromkeys(self.partners, False)
            )
        for _ in range(3):
            try:
                return status_from_pysyncobj(self._obj.getStatus())
            except RuntimeError:
                # Its thread changed the member set while it was being read: read again.
                continue
        return RaftStatus(self.self_addr, 0, 0, 0, None, False, {})

    @property
    def is_leader(self) -> bool:
        return self._obj is not None and bool(self._obj._isLeader())
