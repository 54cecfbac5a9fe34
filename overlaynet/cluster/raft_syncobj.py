"""The PySyncObj classes behind `raft.RaftLog`: its transport, which answers members only, and
the replicated object. Imported by `RaftLog.start`, so only an agent that runs a manager's Raft
member loads PySyncObj (and the `cryptography` its Fernet pulls in), issue 15.
"""

from __future__ import annotations

import _socket
import logging
import socket
from typing import Any

from pysyncobj import SyncObj, replicated  # type: ignore[import-untyped]
from pysyncobj.transport import TCPTransport  # type: ignore[import-untyped]

from overlaynet.cluster.raft import OnEntry

# pysyncobj/win_inet_pton.py (imported with pysyncobj) replaces socket.inet_ntop on EVERY platform
# with a Windows-only function (its `if os.name == 'nt'` guards only inet_pton), which breaks
# scapy's import and every inet_ntop in the process: put the C implementation back.
socket.inet_ntop = _socket.inet_ntop

# The Raft engine's logger, as before this module was split from it.
log = logging.getLogger("overlaynet.cluster.raft")


class _MembersOnly(TCPTransport):  # type: ignore[misc]
    """PySyncObj's TCP transport, answering the Raft cluster's members only.

    Stock, it also serves anyone who holds the password: a "readonly" node is sent every
    entry the leader appends, and admin commands (syncobj_admin's add, remove, transfer,
    set_version, status) change the membership. A manager that was demoted or removed keeps
    its copy of the root key, so it could derive the password and go on reading the swarm's
    secrets, or add itself back: here a connection must name a current member after the
    password handshake, or it is closed."""

    def setOnUtilityMessageCallback(self, message: str, callback: Any) -> None:
        return  # no admin commands at all: the manager changes membership itself

    def _onIncomingMessageReceived(self, conn: Any, message: Any) -> None:
        if self._syncObj.encryptor and not conn.sendRandKey:
            super()._onIncomingMessageReceived(conn, message)  # the password handshake
            return
        if not isinstance(message, str) or message not in self._nodeAddrToNode:
            # A list is an admin command; "readonly" or an address that is not a member.
            log.warning("raft: refused a connection that is not from a member (%.40r)", message)
            conn.disconnect()
            self._unknownConnections.discard(conn)
            return
        super()._onIncomingMessageReceived(conn, message)


class _ReplicatedLog(SyncObj):  # type: ignore[misc]
    """The PySyncObj object: its only replicated method hands an entry to the manager."""

    def __init__(
        self, self_addr: str | None, partners: list[str], conf: Any, deliver: OnEntry
    ) -> None:
        # self_addr None: PySyncObj's read-only node (tests: what a non-member is sent).
        # Set before SyncObj starts its thread, which may apply journal entries at once.
        self._deliver = deliver
        super().__init__(self_addr, partners, conf, transportClass=_MembersOnly)

    @replicated  # type: ignore[untyped-decorator]
    def append(self, text: str) -> None:
        # Called in PySyncObj's thread while it applies the entry: raftLastApplied is the index
        # before it (PySyncObj counts it up after the call).
        self._deliver(int(self.raftLastApplied) + 1, text)
