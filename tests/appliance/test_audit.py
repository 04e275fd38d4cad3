"""The worker's audit trail on the device: as durable as the outbox, and a corrupt file
(a failing SD card) is kept aside, never deleted, while the trail starts afresh."""

from __future__ import annotations

import logging
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deskwatch.audit import AuditLog, audit_path
from deskwatch.domain import CheckOutcome, ScanRecord

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def record(scan_id: str) -> ScanRecord:
    return ScanRecord(scan_id, "schedule", NOW, NOW, frames=3, checks=[CheckOutcome("phone_use", "pass")])


def test_the_trail_commits_with_synchronous_full_and_is_private(tmp_path: Path) -> None:
    log = AuditLog.for_state_dir(str(tmp_path))
    try:
        log.record_scan(record("s-1"))
        assert log._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: fsync on every commit
        assert log._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        log.close()
    assert stat.S_IMODE(audit_path(str(tmp_path)).stat().st_mode) == 0o600
    reopened = AuditLog.for_state_dir(str(tmp_path))
    try:
        assert [e.data["scan_id"] for e in reopened.recent(10) if e.kind == "scan"] == ["s-1"]
    finally:
        reopened.close()


def test_a_corrupt_trail_is_moved_aside_and_a_new_one_works(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = audit_path(str(tmp_path))
    path.write_bytes(b"this is not a database, it is a failing SD card" * 100)
    with caplog.at_level(logging.ERROR, logger="deskwatch.audit"):
        log = AuditLog(path)
    try:
        aside = [p for p in tmp_path.glob("audit.sqlite3.corrupt-*") if p.name.split("-")[-1].isdigit()]
        assert log.recovered_from in aside  # the old bytes are kept, named with the time
        assert b"failing SD card" in log.recovered_from.read_bytes()
        assert any("unreadable" in r.getMessage() and "moved it to" in r.getMessage() for r in caplog.records)
        log.record_scan(record("s-2"))  # the daemon goes on writing its trail
        assert [e.data["scan_id"] for e in log.recent(10) if e.kind == "scan"] == ["s-2"]
    finally:
        log.close()
    with pytest.raises(sqlite3.DatabaseError):  # the kept file really is the corrupt one
        sqlite3.connect(str(log.recovered_from)).execute("SELECT 1 FROM scans").fetchall()
