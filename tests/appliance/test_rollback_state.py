"""An update rolled back: this code on the data partition a newer deskwatch wrote.

The A/B slots share /var/lib/deskwatch. When the new slot fails its health check the
firmware starts the old one again, and its code meets the outbox, the audit trail and
the templates as the new code left them. The newer files are checked-in SQL dumps
(tests/data/rollback, made by make_fixtures.py there): a change a newer version may make
and older code can live with must not stop it; one it cannot must be refused in words a
technician can act on, with nothing deleted."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from deskwatch.audit import AuditLog, audit_path
from deskwatch.domain import CheckOutcome, PauseInfo, ScanRecord
from deskwatch_contract.reviews import ReviewedFinding, Reviews
from tests.support.common import REPO

FIXTURES = REPO / "tests" / "data" / "rollback"
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def load(fixture: str, path: Path) -> Path:
    """The checked-in dump ``fixture`` as the file ``path`` (as the newer version left it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript((FIXTURES / fixture).read_text(encoding="utf-8"))
    finally:
        db.close()
    return path


def test_the_audit_trail_of_a_newer_version_with_added_columns_takes_scans_pauses_and_reviews(
    tmp_path: Path,
) -> None:
    """A later version added a column to each table of the trail (NULLable or with a default),
    the most harmless change there is. This code wrote its rows with ``INSERT ... VALUES``
    without naming the columns: after a rollback every scan's first row failed ("table scans has
    12 columns but 11 values were supplied"), so no scan was taken again, and no pause was kept."""
    load("audit-newer-additive.sql", audit_path(str(tmp_path)))
    trail = AuditLog.for_state_dir(str(tmp_path))
    try:
        # what the newer version wrote is read
        pause = trail.load_pause()
        assert pause is not None and pause.reason == "fetch water"
        scan = ScanRecord("s-after-rollback", "schedule", NOW, None, frames=3)
        trail.begin_scan(scan)
        scan.finished_at = NOW
        scan.checks = [CheckOutcome("phone_use", "pass")]
        trail.record_scan(scan)
        trail.save_pause(PauseInfo("lunch", 30, NOW))
        assert trail.load_pause() == PauseInfo("lunch", 30, NOW)
        trail.record_event("resume", NOW, {"reason": "back"})
        trail.save_collector_view(
            Reviews("site", "dev", "2026-11-30T10:00:00Z", 20, [ReviewedFinding("e-1", "open", False, "kept")])
        )
        view, at = trail.collector_view()
        assert set(view) == {"e-1"} and at == "2026-11-30T10:00:00Z"
        entries = trail.recent(10)
        scans = {e.data["scan_id"]: e.data for e in entries if e.kind == "scan"}
        assert set(scans) == {"scan-by-newer", "s-after-rollback"}
        assert scans["s-after-rollback"]["outcome"] == "clear"
        assert {e.kind for e in entries} >= {"pause", "resume"}
        # the newer version's columns are kept, filled by their defaults
        db = sqlite3.connect(audit_path(str(tmp_path)))
        try:
            row = db.execute("SELECT model_sha256 FROM scans WHERE scan_id = 'scan-by-newer'").fetchone()
            assert row == ("0" * 64,)
            assert db.execute("SELECT source FROM events WHERE kind = 'resume'").fetchone() == ("daemon",)
        finally:
            db.close()
        assert trail.read_back_note() is None  # nothing was taken for damage
    finally:
        trail.close()
