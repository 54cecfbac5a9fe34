"""DNS cookies (RFC 7873), server side: echo the client's cookie with one of ours.

A container's resolver never requires cookies (it answers only its own namespace's loopback),
but a client that sends one gets a well-formed server cookie back, so it can tell an answer
from us from an off-path forgery. The layout is RFC 9018's: version, reserved, timestamp,
then a keyed hash of the client cookie and those fields.
"""

from __future__ import annotations

import hashlib
import struct

from overlaynet.dns.message import MalformedDns

#: RFC 7873 §4: the client cookie is 8 octets; a server cookie 8 to 32, so the option is
#: exactly 8 (client only) or 16 to 40 octets long.
CLIENT_COOKIE_LEN = 8
MIN_SERVER_COOKIE_LEN = 8
MAX_SERVER_COOKIE_LEN = 32
#: RFC 9018 §4.2: version 1 of the interoperable server cookie.
SERVER_COOKIE_VERSION = 1
#: RFC 9018 §4.4 uses an 8-octet hash (SipHash-2-4); a keyed BLAKE2b cut to 8 octets does the
#: same job for a cookie only this process ever checks.
HASH_LEN = 8
_VERSION_RESERVED_TIMESTAMP = struct.Struct("!B3xI")


def client_cookie(option: bytes) -> bytes:
    """The client cookie in a COOKIE option; `MalformedDns` when its length is not valid
    (RFC 7873 §5.2.2: the server answers FORMERR)."""
    length = len(option)
    server_part = length - CLIENT_COOKIE_LEN
    if server_part != 0 and not MIN_SERVER_COOKIE_LEN <= server_part <= MAX_SERVER_COOKIE_LEN:
        raise MalformedDns("dns_bad_cookie", f"{length} octets")
    return option[:CLIENT_COOKIE_LEN]


def server_cookie(client: bytes, secret: bytes, now: float) -> bytes:
    """Our cookie for `client` at time `now` (seconds since the epoch, RFC 9018 §4.3)."""
    fields = _VERSION_RESERVED_TIMESTAMP.pack(SERVER_COOKIE_VERSION, int(now) & 0xFFFFFFFF)
    digest = hashlib.blake2b(client + fields, key=secret, digest_size=HASH_LEN).digest()
    return fields + digest


def cookie_option(option: bytes, secret: bytes, now: float) -> bytes:
    """The COOKIE option value of our answer: the client cookie, then a fresh server cookie."""
    client = client_cookie(option)
    return client + server_cookie(client, secret, now)
