"""Evidence retention: photos are kept for ``retention_days`` (20 at most), then deleted.

Age counts from when the photo was taken (the event's ``detected_at``), not from when it
reached the collector, so an appliance that replays a week-old outbox does not extend
the 20 days. Every deletion leaves a row in ``evidence_deletions`` (event, device, sha256,
size, capture time, deletion time, reason). Evidence whose event never arrived is deleted
after ``ORPHAN_SECONDS``. Events and scan records themselves (no images) are kept.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from deskwatch_collector import MAX_RETENTION_DAYS
from deskwatch_collector.store import Store

logger = logging.getLogger(__name__)

DAY = 86400.0
ORPHAN_SECONDS = DAY


def check_retention_days(days: float) -> float:
    if not 0 < days <= MAX_RETENTION_DAYS:
        raise ValueError(f"evidence retention must be more than 0 and at most {MAX_RETENTION_DAYS} days, not {days}")
    return float(days)


@dataclass(frozen=True)
class PurgeResult:
    expired: int
    orphaned: int


def purge_evidence(store: Store, days: float, now: float) -> PurgeResult:
    """Delete evidence older than ``days`` (and orphans); record each deletion. Idempotent."""
    days = check_retention_days(days)
    cutoff = now - days * DAY
    orphan_cutoff = now - ORPHAN_SECONDS
    with store.transaction() as tx:
        expired = tx.execute(
            "INSERT INTO evidence_deletions (event_id, site, device_id, sha256, bytes, captured_ts, deleted_at, reason)"
            " SELECT event_id, site, device_id, sha256, bytes, captured_ts, ?, 'retention' FROM evidence"
            " WHERE captured_ts < ?",
            (now, cutoff),
        )
        tx.execute("DELETE FROM evidence WHERE captured_ts < ?", (cutoff,))
        orphaned = tx.execute(
            "INSERT INTO evidence_deletions (event_id, site, device_id, sha256, bytes, captured_ts, deleted_at, reason)"
            " SELECT event_id, site, device_id, sha256, bytes, captured_ts, ?, 'orphan' FROM evidence"
            " WHERE state = 'pending' AND received_at < ?",
            (now, orphan_cutoff),
        )
        tx.execute("DELETE FROM evidence WHERE state = 'pending' AND received_at < ?", (orphan_cutoff,))
        tx.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
        tx.execute("DELETE FROM rejects WHERE received_at < ?", (cutoff,))
    if expired or orphaned:
        logger.info(
            "evidence purge: %d past %.4g days, %d orphaned (recorded in evidence_deletions)", expired, days, orphaned
        )
    return PurgeResult(max(expired, 0), max(orphaned, 0))


class RetentionThread(threading.Thread):
    """Runs :func:`purge_evidence` at start and then every ``every_seconds``."""

    def __init__(self, store: Store, days: float, every_seconds: float) -> None:
        super().__init__(name="collector-retention", daemon=True)
        self.store = store
        self.days = check_retention_days(days)
        self.every = every_seconds
        self._time = time.time
        self.stop_event = threading.Event()

    def run(self) -> None:
        while True:
            try:
                purge_evidence(self.store, self.days, self._time())
            except Exception:
                logger.exception("evidence purge failed; retrying in %.0f s", self.every)
            if self.stop_event.wait(self.every):
                return
