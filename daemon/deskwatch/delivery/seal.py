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

from dataclasses import dataclass
from typing import Any

from nacl.public import PublicKey, SealedBox

from deskwatch_contract import sealing


@dataclass(frozen=True)
class Sealer:
    public_key: bytes

    @classmethod
    def from_text(cls, text: str) -> Sealer:
        return cls(sealing.key_from_text(text))

    @property
    def key_id(self) -> str:
        return sealing.key_id(self.public_key)

    def seal(self, thumbnail: bytes) -> tuple[bytes, dict[str, Any]]:
        """(ciphertext, the event's ``evidence.sealed`` object)."""
        box = SealedBox(PublicKey(self.public_key)).encrypt(thumbnail)
        return bytes(box), {"alg": sealing.ALGORITHM, "key_id": self.key_id, "bytes": len(box)}
