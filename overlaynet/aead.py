"""cryptography's AES-GCM and HKDF, imported on first use (issue 15: the package is ~7 MiB and 22
modules, and an agent that seals nothing never loads it).

Every user names what it needs the package for, so that a machine without it fails at the first
key saying what is missing and why, not with a bare ModuleNotFoundError deep in a handler."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def load_aesgcm(purpose: str) -> tuple[type[AESGCM], type[Exception]]:
    """The AES-GCM class and the error its `decrypt` raises on a bad tag. Without the package:
    ImportError "the 'cryptography' package is needed for <purpose>"."""
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as error:
        raise _missing(purpose, error) from error
    return AESGCM, InvalidTag


def hkdf_sha256(purpose: str, ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    """A 32-octet key from RFC 5869 HKDF with SHA-256."""
    try:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    except ImportError as error:
        raise _missing(purpose, error) from error
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def _missing(purpose: str, error: ImportError) -> ImportError:
    return ImportError(f"the 'cryptography' package is needed for {purpose}: {error}")
