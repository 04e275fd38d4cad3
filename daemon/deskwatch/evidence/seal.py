"""Evidence sealed to the collector: the device encrypts each thumbnail to the collector's
public key (libsodium's sealed box: X25519 + XSalsa20-Poly1305, an ephemeral key per
message), so the broker, its operator and any subscriber hold only ciphertext, and so
does the device's own outbox on its SD card. Only the collector's private key opens it.

The event keeps describing the *thumbnail* (``evidence.sha256``, ``bytes``,
``content_type``); ``evidence.sealed`` says the message on ``evidence/{event_id}`` is
sealed, to which key (``key_id``, so a collector holding an old and a new key during a
rotation picks the right one) and how long the ciphertext is. A consumer that ignores
``sealed`` fails closed: the bytes it gets do not hash to ``sha256``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from nacl.public import PublicKey, SealedBox

from deskwatch_contract.ca import seal_key_id

ALGORITHM = "x25519-xsalsa20poly1305-sealedbox"
OVERHEAD = 48  # ephemeral public key (32) + MAC (16)


def public_key_from_text(text: str) -> bytes:
    """The 32-byte key from its base64 text; ValueError with what is wrong."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("must be the collector's public key in base64 (deskwatch-ca evidence-key prints it)") from None
    if len(raw) != 32:
        raise ValueError(f"a public key is 32 bytes; this one is {len(raw)}")
    return raw


@dataclass(frozen=True)
class Sealer:
    public_key: bytes

    @classmethod
    def from_text(cls, text: str) -> Sealer:
        return cls(public_key_from_text(text))

    @property
    def key_id(self) -> str:
        return seal_key_id(self.public_key)

    def seal(self, thumbnail: bytes) -> tuple[bytes, dict[str, Any]]:
        """(ciphertext, the event's ``evidence.sealed`` object)."""
        box = SealedBox(PublicKey(self.public_key)).encrypt(thumbnail)
        return bytes(box), {"alg": ALGORITHM, "key_id": self.key_id, "bytes": len(box)}
