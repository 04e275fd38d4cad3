"""On-device retention: undelivered evidence older than ``evidence.retention_days``
(at most 20, enforced by config validation) is deleted, and the queued event is
rewritten to say so (``evidence: null``, ``evidence_reason: "evicted"``). What the
stores keep for inspection goes too: damaged messages taken out of the queue, and an
outbox or audit trail moved aside as unreadable (``*.corrupt-*``: it holds what the
live file held), once older than retention.

Evidence lives only in the delivery stage's outbox until the broker acknowledges it;
the thumbnails are never written anywhere else. The outbox is built with
``evidence_max_age_days = min(outbox.max_age_days, evidence.retention_days)`` and
enforces that age on every write; this module is the explicit purge the daemon runs
at start and daily (so evidence also expires on a device that stopped producing
findings), plus the audit trail's pruning. It reaches both through the small
protocols below, never their internals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)


class _Outbox(Protocol):
    def expire_evidence(self, max_age_s: float) -> dict[str, int]: ...

    def expire_set_aside(self, max_age_s: float) -> int: ...


class _Audit(Protocol):
    def prune(self, now: datetime) -> int: ...

    def expire_set_aside(self, now: datetime) -> int: ...


@dataclass
class PurgeReport:
    evidence_deleted: int = 0
    other_evicted: dict[str, int] = field(default_factory=dict)
    audit_rows_deleted: int = 0
    set_aside_deleted: int = 0  # damaged messages and files moved aside, kept for inspection

    def to_json(self) -> dict[str, Any]:
        return {
            "evidence_deleted": self.evidence_deleted,
            "other_evicted": dict(self.other_evicted),
            "audit_rows_deleted": self.audit_rows_deleted,
            "set_aside_deleted": self.set_aside_deleted,
        }


def purge_expired(
    retention_days: int, now: datetime, *, outbox: _Outbox | None = None, audit: _Audit | None = None
) -> PurgeReport:
    """Delete undelivered evidence past ``retention_days`` (through the outbox, which
    marks the events), audit rows past retention, and what either keeps for inspection
    past retention. Call at start and once a day."""
    report = PurgeReport()
    if outbox is not None:
        evicted = dict(outbox.expire_evidence(retention_days * 86400.0))
        report.evidence_deleted = int(evicted.pop("evidence", 0))
        report.other_evicted = evicted
        report.set_aside_deleted += outbox.expire_set_aside(retention_days * 86400.0)
    if audit is not None:
        report.audit_rows_deleted = audit.prune(now)
        report.set_aside_deleted += audit.expire_set_aside(now)
    if report.evidence_deleted or report.audit_rows_deleted or report.set_aside_deleted:
        log.info(
            "retention: deleted %d undelivered evidence image(s) older than %d days, %d audit row(s) and %d "
            "damaged message(s) or unreadable file(s) kept for inspection",
            report.evidence_deleted,
            retention_days,
            report.audit_rows_deleted,
            report.set_aside_deleted,
            extra={"journal": {"EVIDENCE_PURGED": report.evidence_deleted}},
        )
    return report
