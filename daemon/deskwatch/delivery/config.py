"""The ``outbox`` config section: the durable queue between a scan and the broker."""

from __future__ import annotations

from dataclasses import dataclass

from deskwatch_contract.configfile import setting


@dataclass(frozen=True)
class OutboxConfig:
    """Caps on what waits on the device while the broker is unreachable."""

    max_bytes: int = setting(
        64 * 1024 * 1024,
        doc="Largest total size of queued messages; past it the oldest evidence, then health, then scan records, and events last, are evicted and counted.",
        minimum=64 * 1024,
        maximum=4 * 1024**3,
    )
    max_messages: int = setting(50_000, doc="Largest number of queued messages.", minimum=100, maximum=10_000_000)
    max_age_days: int = setting(
        20,
        doc="Queued messages older than this are evicted (evidence follows evidence.retention_days).",
        minimum=1,
        maximum=20,
    )
