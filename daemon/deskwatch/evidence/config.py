"""The ``evidence`` config section."""

from __future__ import annotations

from dataclasses import dataclass

from deskwatch_contract import sealing
from deskwatch_contract.configfile import Report, setting


@dataclass(frozen=True)
class EvidenceConfig:
    """Evidence thumbnails: one small JPEG per finding, bystanders blurred first."""

    enabled: bool = setting(
        True, doc="Attach a thumbnail to findings whose rule allows it (never for idle_input or the minimal profile)."
    )
    max_width: int = setting(320, doc="Largest thumbnail width in pixels.", minimum=64, maximum=1280)
    max_height: int = setting(240, doc="Largest thumbnail height in pixels.", minimum=48, maximum=960)
    max_bytes: int = setting(
        40_000,
        doc="Hard cap on a thumbnail's size; JPEG quality steps down until it fits, else no evidence is sent.",
        minimum=4_000,
        maximum=200_000,
    )
    retention_days: int = setting(
        20,
        doc="Undelivered evidence older than this is deleted on the device (the event says so), and so are the audit trail's rows, damaged messages and unreadable outbox or audit files kept for inspection (overwritten, not only unlinked). At most 20.",
        minimum=1,
        maximum=20,
    )
    seal_to: str | None = setting(
        None,
        doc="The collector's public key (base64, from 'deskwatch-ca evidence-key'): each thumbnail is sealed to it "
        "on the device, so the broker and anyone subscribed see only ciphertext. Needed whenever the broker is not on "
        "this machine. To rotate, the collector first holds both keys; then devices get the new one here.",
        example="aTpCbsrX+0GOYg8G/Pl0J9ONgqExwb3r52f3xThyOIg=",
    )
    allow_unsealed: bool = setting(
        False,
        doc="Send thumbnails unsealed to a broker off this machine (a lab only: whoever runs the broker can see them).",
    )

    def validate(self, report: Report) -> None:
        if self.seal_to is not None:
            try:
                key = sealing.key_from_text(self.seal_to)
            except ValueError as exc:
                report("seal_to", str(exc))
                return
            from nacl.exceptions import CryptoError
            from nacl.public import PublicKey, SealedBox

            try:
                SealedBox(PublicKey(key)).encrypt(b"probe")
            except CryptoError:  # e.g. all zeros: libsodium refuses a key no private key matches
                report("seal_to", "is not a usable X25519 public key: make one with deskwatch-ca evidence-key")
