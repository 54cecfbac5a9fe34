"""Sealing for encrypted overlays (`network create -d overlay --opt encrypted`), sans-IO: the
inner frame of a VXLAN datagram under AES-GCM, the VXLAN header left in clear.

On the wire, between agents only (a kernel VTEP cannot read it)::

    VXLAN header (8, flags 0x08, VNI; octet 7, reserved in RFC 7348, carries the key id)
    nonce (12: a random prefix of 6 per sender and key, then a counter of 6)
    AES-GCM ciphertext of the inner Ethernet frame, then its 16-octet tag

As with Docker's ESP overlay the outer headers and the VNI stay visible. The associated data is
the VXLAN header (key id included) and the outer IPv4 source address, so a datagram replayed
from, or forged with, another member's source address does not authenticate. The nonce prefix
is drawn anew with every keyring change (and every process start), so a restarted sender never
reuses a (key, nonce) pair by counting from zero again; 48 random bits keep two senders of one
key apart (collision odds ~ n^2 / 2^49: 2e-9 for 1000 hosts) and the 48-bit counter outlasts any
key period (2^48 frames at 10^7 frames/s is 325 days; keys rotate every 12 h).

`cryptography` (~7 MiB and 22 modules in every agent, issue 15) is imported by the first
`Sealer`, i.e. when a network is encrypted: an agent whose networks are all plain never loads it.
"""

from __future__ import annotations

import itertools
import secrets
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from overlaynet.aead import load_aesgcm

#: AES-GCM's standard 96-bit nonce (NIST SP 800-38D section 8.2: the deterministic
#: construction, a fixed field and an invocation counter).
NONCE_LEN = 12
_PREFIX_LEN = 6
_COUNTER_LEN = NONCE_LEN - _PREFIX_LEN
#: The full 128-bit tag (SP 800-38D allows shorter ones; nothing here needs the octets).
TAG_LEN = 16
#: Octets a sealed datagram carries beyond a plain one: the MTU of an encrypted overlay is the
#: plain one minus this (Docker lowers its encrypted overlays' MTU for the ESP overhead too).
SEAL_OVERHEAD = NONCE_LEN + TAG_LEN
#: AES-128 and AES-256 keys.
KEY_SIZES = frozenset((16, 32))
#: Where the key id sits: VXLAN's last reserved octet (RFC 7348 section 5, "Reserved").
KEY_ID_OFFSET = 7
_VXLAN_LEN = 8


class SealError(ValueError):
    """A keyring that cannot be used (bad key size or id, primary not in the ring)."""


@dataclass(frozen=True)
class DataKey:
    """One data key of a network: its id (1..255, on the wire) and its secret."""

    key_id: int
    secret: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.key_id <= 255:
            raise SealError(f"key id {self.key_id} is not in 1..255")
        if len(self.secret) not in KEY_SIZES:
            raise SealError(f"a data key has 16 or 32 octets, not {len(self.secret)}")

    def __repr__(self) -> str:  # never the secret, also not in logs or tracebacks
        return f"DataKey(key_id={self.key_id})"


class Sealer:
    """Seals a network's egress with its primary key and opens ingress sealed with any key of
    its keyring (the primary and, during a rotation's grace period, the previous one).

    Immutable once built apart from its nonce counter: a keyring change builds a new Sealer,
    which the control side swaps in whole while the hot loop runs.
    """

    __slots__ = (
        "_aad",
        "_count",
        "_header_of",
        "_invalid_tag",
        "_local",
        "_prefix",
        "_ring",
        "_seal",
        "primary",
    )

    def __init__(
        self,
        keys: Iterable[DataKey],
        primary: int,
        local_ip: str,
        *,
        rand: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        ring = {key.key_id: key for key in keys}
        if primary not in ring:
            raise SealError(f"primary key id {primary} is not in the keyring {sorted(ring)}")
        self.primary = primary
        aesgcm, self._invalid_tag = load_aesgcm("encrypted overlays")
        self._ring = {key_id: aesgcm(key.secret) for key_id, key in ring.items()}
        self._seal = self._ring[primary].encrypt
        self._local = socket.inet_aton(local_ip)
        self._prefix = rand(_PREFIX_LEN)
        self._count = itertools.count(1)
        # VXLAN header → (sealed header, associated data): few networks, one entry each.
        self._header_of: dict[bytes, tuple[bytes, bytes]] = {}
        self._aad: dict[str, bytes] = {}  # sender address → packed, for opening

    @property
    def key_ids(self) -> list[int]:
        """The ids in the keyring, primary first (what `network inspect` shows)."""
        return [self.primary, *sorted(k for k in self._ring if k != self.primary)]

    def _sealed_header(self, header: bytes) -> tuple[bytes, bytes]:
        found = self._header_of.get(header)
        if found is None:
            sealed = header[:KEY_ID_OFFSET] + bytes((self.primary,))
            found = self._header_of[header] = (sealed, sealed + self._local)
        return found

    def seal(self, header: bytes, frame: bytes) -> tuple[bytes, bytes]:
        """One datagram in two parts: the sealed VXLAN header with its nonce, and the sealed
        frame (ciphertext and tag)."""
        sealed, aad = self._sealed_header(header)
        nonce = self._prefix + next(self._count).to_bytes(_COUNTER_LEN, "big")
        return sealed + nonce, self._seal(nonce, frame, aad)

    def seal_parts(self, parts: list[bytes]) -> list[bytes]:
        """A batch (header, frame, header, frame, ...; one network, so one header) sealed
        segment by segment, keeping the batch: every segment grows by SEAL_OVERHEAD, so equal
        sizes stay equal and the GSO train stays one sendmsg."""
        sealed, aad = self._sealed_header(parts[0])
        encrypt, prefix, count = self._seal, self._prefix, self._count
        out: list[bytes] = []
        for frame in parts[1::2]:
            nonce = prefix + next(count).to_bytes(_COUNTER_LEN, "big")
            out += (sealed + nonce, encrypt(nonce, frame, aad))
        return out

    def _sender(self, sender: str) -> bytes | None:
        packed = self._aad.get(sender)
        if packed is None:
            try:
                packed = socket.inet_aton(sender)
            except OSError:
                return None
            if len(self._aad) < 4096:  # bounded: members are few, forgers many
                self._aad[sender] = packed
        return packed

    def open_run(self, data: bytes, seg: int, sender: str) -> tuple[list[bytes], int] | None:
        """Open a receive buffer of `seg`-octet datagrams (the last may be shorter) that all
        carry this network's VNI: the plain datagrams as parts (header, inner, header, ...)
        and how many did not authenticate; None if a datagram has another VNI (the caller
        then opens them one by one). No copies but the plaintexts (memoryview slices)."""
        packed = self._sender(sender)
        size = len(data)
        if packed is None:
            return [], -(-size // seg)
        view = memoryview(data)
        vni = data[4:7]
        ring, invalid_tag = self._ring, self._invalid_tag
        shortest = _VXLAN_LEN + SEAL_OVERHEAD
        out: list[bytes] = []
        bad = 0
        last = plain = b""
        for s in range(0, size, seg):
            e = s + seg if s + seg < size else size
            if view[s + 4 : s + 7] != vni:
                return None
            aead = ring.get(data[s + KEY_ID_OFFSET])
            if aead is None or e - s < shortest:
                bad += 1
                continue
            header = data[s : s + _VXLAN_LEN]
            try:
                inner = aead.decrypt(view[s + 8 : s + 20], view[s + 20 : e], header + packed)
            except invalid_tag:
                bad += 1
                continue
            if header != last:
                last, plain = header, header[:KEY_ID_OFFSET] + b"\x00"
            out += (plain, inner)
        return out, bad

    def open(self, datagram: bytes, sender: str) -> bytes | None:
        """The plain datagram (VXLAN header with its key id octet cleared, inner frame), or None
        if it does not authenticate: unknown key id, too short, tampered, or sealed by
        someone else than `sender` (the outer source address is associated data)."""
        if len(datagram) < _VXLAN_LEN + SEAL_OVERHEAD:
            return None
        aead = self._ring.get(datagram[KEY_ID_OFFSET])
        packed = self._sender(sender)
        if aead is None or packed is None:
            return None
        header = datagram[:_VXLAN_LEN]
        try:
            inner = aead.decrypt(
                datagram[_VXLAN_LEN : _VXLAN_LEN + NONCE_LEN],
                datagram[_VXLAN_LEN + NONCE_LEN :],
                header + packed,
            )
        except self._invalid_tag:
            return None
        return header[:KEY_ID_OFFSET] + b"\x00" + inner


def parse_key(text: str) -> DataKey:
    """`ID=HEX` (vtep_main's --key): a key id and a 16- or 32-octet key in hex."""
    key_id, sep, secret = text.partition("=")
    if not sep:
        raise SealError(f"expected ID=HEX, got {text.split('=')[0]!r}…")
    try:
        return DataKey(int(key_id), bytes.fromhex(secret))
    except ValueError as error:
        raise SealError(f"bad data key {key_id!r}: {error}") from None
