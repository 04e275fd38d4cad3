"""The ``evidence`` config section."""

from __future__ import annotations

from dataclasses import dataclass

from deskwatch_contract.configfile import setting


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
        doc="Undelivered evidence older than this is deleted on the device (the event says so). At most 20.",
        minimum=1,
        maximum=20,
    )
