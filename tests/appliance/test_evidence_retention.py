"""Retention: undelivered evidence past retention_days leaves the device and the
queued event says so; younger evidence and the events themselves stay."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from deskwatch.audit import AuditLog
from deskwatch.config import ConfigError
from deskwatch.delivery.outbox import Outbox
from deskwatch.domain import ScanRecord
from deskwatch.evidence.retention import purge_expired
from tests.support.policy import make_config

DAY = 86400.0


class Wall:
    def __init__(self) -> None:
        self.t = 1_800_000_000.0

    def __call__(self) -> float:
        return self.t


def event(event_id: str) -> dict[str, object]:
    return {"event_id": event_id, "type": "phone_use", "evidence": {"sha256": "x"}, "evidence_reason": None}


def queued(outbox: Outbox) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for m in outbox.pending(limit=1000):
        out[f"{m.kind}:{m.event_id}"] = json.loads(m.payload) if m.kind == "event" else {"bytes": len(m.payload)}
    return out


@pytest.mark.parametrize("days", [3, 12])
def test_undelivered_evidence_older_than_retention_is_deleted_and_the_event_says_so(tmp_path, days):
    cfg = make_config(f"evidence: {{retention_days: {days}}}", state_dir=str(tmp_path))
    wall = Wall()
    # An outbox built WITHOUT the evidence bound: the purge must still apply retention_days.
    ob = Outbox(tmp_path, max_bytes=10**8, max_messages=10**5, max_age_days=20, wall_clock=wall)
    try:
        ob.put_event(event("old"), b"\xff\xd8old-jpeg")
        wall.t += (days - 1) * DAY
        ob.put_event(event("young"), b"\xff\xd8young-jpeg")
        assert (
            purge_expired(cfg.evidence.retention_days, datetime.now(UTC), outbox=ob).evidence_deleted == 0
        )  # old is days-1 old
        wall.t += 1.5 * DAY  # old: days + 0.5 days; young: 1.5 days
        report = purge_expired(cfg.evidence.retention_days, datetime.now(UTC), outbox=ob)
        assert report.evidence_deleted == 1
        q = queued(ob)
        assert "evidence:old" not in q and "evidence:young" in q
        assert q["event:old"]["evidence"] is None and q["event:old"]["evidence_reason"] == "evicted"
        assert q["event:young"]["evidence"] == {"sha256": "x"}
    finally:
        ob.close()


def test_retention_above_20_days_is_refused_by_config_validation():
    with pytest.raises(ConfigError, match="retention_days"):
        make_config("evidence: {retention_days: 21}")


def test_audit_trail_is_pruned_with_the_same_bound(tmp_path):
    cfg = make_config("evidence: {retention_days: 5}")
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    audit = AuditLog(tmp_path / "audit.sqlite3", keep_days=cfg.evidence.retention_days)
    try:
        audit.record_scan(ScanRecord("old", "schedule", now - timedelta(days=6)))
        audit.record_scan(ScanRecord("new", "schedule", now - timedelta(days=4)))
        audit.record_event("pause", now - timedelta(days=7), {"reason": "x"})
        report = purge_expired(cfg.evidence.retention_days, now, audit=audit)
        assert report.audit_rows_deleted == 2
        assert [e.data.get("scan_id") for e in audit.recent(10)] == ["new"]
    finally:
        audit.close()
