"""Sealed evidence (contract 1.1): what device and collector agree on about the keys.

The device seals each thumbnail to the collector's X25519 public key with libsodium's
sealed box; the event names the key by :func:`key_id` and the algorithm by
:data:`ALGORITHM`. Keys travel as one line of base64 (``deskwatch-ca evidence-key``).
The cryptography itself lives with each side (PyNaCl on the device and the collector),
so this package needs none.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

ALGORITHM = "x25519-xsalsa20poly1305-sealedbox"
OVERHEAD = 48  # the ephemeral public key (32) and the MAC (16)
KEY_BYTES = 32


def key_from_text(text: str, what: str = "public key") -> bytes:
    """The 32 key bytes from their base64 line; ValueError saying what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"must be the collector's {what} in base64 (deskwatch-ca evidence-key writes it)") from None
    if len(raw) != KEY_BYTES:
        raise ValueError(f"a {what} is {KEY_BYTES} bytes; this one is {len(raw)}")
    return raw


def key_id(public_key: bytes) -> str:
    """The short name of a public key carried in every sealed event: ``evidence.sealed.key_id``."""
    return hashlib.sha256(public_key).hexdigest()[:16]
