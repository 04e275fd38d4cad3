"""Retention: undelivered evidence past retention_days leaves the device and the
queued event says so; younger evidence and the events themselves stay."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

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


# -- nothing kept aside outlives retention --------------------------------------------------


def jpeg(n: int) -> bytes:
    return b"\xff\xd8\xff\xe0" + f"EVIDENCE-IMAGE-{n:03d}".encode() * 500


def images_in(path: Path, n: int) -> set[int]:
    """Which of the images 1..n can still be read in the bytes of a database and its side files."""
    data = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())
    return {i for i in range(1, n + 1) if f"EVIDENCE-IMAGE-{i:03d}".encode() in data}


def outbox(state: Path, wall: Wall) -> Outbox:
    return Outbox(
        state, max_bytes=10**8, max_messages=10**4, max_age_days=20, evidence_max_age_days=20, wall_clock=wall
    )


def test_a_damaged_outbox_set_aside_with_its_images_goes_once_retention_has_passed(tmp_path: Path) -> None:
    """A failing SD card: the outbox is moved aside (outbox.sqlite3.corrupt-<t>, for a
    technician's inspection) and what can be read is queued again. The copy set aside holds
    the same images: the daily purge deletes it once they are past retention_days (counted
    from when they were queued, not from when the file was set aside), and an audit trail
    set aside likewise; the loss counted at the time stays counted."""
    wall = Wall()
    box = outbox(tmp_path, wall)
    for n in range(1, 21):
        box.put_event({"event_id": f"e{n}", "type": "phone_use"}, jpeg(n))
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    audit_aside = tmp_path / f"audit.sqlite3.corrupt-{int(wall.t)}"
    audit_aside.write_bytes(b"an audit trail set aside, findings in it")
    os.utime(audit_aside, (wall.t, wall.t))
    wall.t += 10 * DAY  # ten days on, a few pages go bad
    path = tmp_path / "outbox.sqlite3"
    with open(path, "r+b") as f:
        f.seek((path.stat().st_size // 2 // 4096) * 4096)
        f.write(b"\x00" * 4096 * 4)
    os.utime(path, (wall.t, wall.t))
    box = outbox(tmp_path, wall)
    audit = AuditLog(tmp_path / "audit.sqlite3", keep_days=20)
    try:
        (aside,) = tmp_path.glob("outbox.sqlite3.corrupt-*[0-9]")
        assert images_in(aside, 20)
        lost = box.stats()["lost"]
        wall.t += 9 * DAY  # the images are 19 days old: kept for inspection
        purge_expired(20, datetime.fromtimestamp(wall.t, UTC), outbox=box, audit=audit)
        assert aside.exists() and audit_aside.exists()
        wall.t += 2 * DAY  # 21 days old, set aside 11 days ago
        report = purge_expired(20, datetime.fromtimestamp(wall.t, UTC), outbox=box, audit=audit)
        assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name) == []
        assert report.set_aside_deleted >= 2
        assert box.stats()["lost"] == lost
        assert images_in(path, 20) == set()  # and those queued again have expired from the queue
    finally:
        box.close()
        audit.close()


def test_an_image_damaged_on_the_card_is_not_kept_and_the_damaged_rows_expire(tmp_path: Path) -> None:
    """A message damaged on the card is taken out of the queue into the 'damaged' table for
    inspection: an image's bytes are no use there and are not kept (its size and event id
    are), and the purge deletes damaged rows past retention like everything else."""
    wall = Wall()
    box = outbox(tmp_path, wall)
    try:
        box.put_event({"event_id": "e1", "type": "phone_use"}, jpeg(1))
        box.put_event({"event_id": "e2", "type": "phone_use"})
        box._db.execute("UPDATE messages SET topic = 'evidencf/e1' WHERE kind = 'evidence'")  # a bit flips
        box._db.execute("UPDATE messages SET payload = CAST('z' || substr(payload, 2) AS BLOB) WHERE event_id = 'e2'")
        box.pending()  # the publisher's read takes them out
        rows = box._db.execute("SELECT kind, event_id, payload IS NULL, why FROM damaged ORDER BY id").fetchall()
        assert [(k, e, gone) for k, e, gone, _ in rows] == [("evidence", "e1", 1), ("event", "e2", 0)]
        assert "bytes" in rows[0][3]
        assert box.stats()["lost"]["events"] == 1
        wall.t += 21 * DAY
        report = purge_expired(20, datetime.fromtimestamp(wall.t, UTC), outbox=box)
        assert box._db.execute("SELECT COUNT(*) FROM damaged").fetchone()[0] == 0
        assert report.set_aside_deleted == 2
        assert box.stats()["lost"]["events"] == 1  # still counted
    finally:
        box.close()


def test_purged_images_are_overwritten_not_just_unlinked_from_the_queue(tmp_path: Path) -> None:
    """SQLite leaves a deleted row's bytes in free pages and in its write-ahead log: the
    outbox overwrites them, so an image past retention cannot be read back from the card."""
    wall = Wall()
    box = outbox(tmp_path, wall)
    try:
        for n in range(1, 11):
            box.put_event({"event_id": f"e{n}", "type": "phone_use"}, jpeg(n))
        wall.t += 10 * DAY
        box.put_event({"event_id": "e11", "type": "phone_use"}, jpeg(11))
        wall.t += 11 * DAY  # e1-e10 are 21 days old, e11 11 days
        assert purge_expired(20, datetime.fromtimestamp(wall.t, UTC), outbox=box).evidence_deleted == 10
        assert images_in(tmp_path / "outbox.sqlite3", 11) == {11}
    finally:
        box.close()


def test_a_time_read_from_a_zeroed_page_does_not_date_an_outbox_set_aside_back_to_1970(tmp_path: Path) -> None:
    """A queued image's time is stored after its bytes, on its last overflow page: a failing card
    that zeroes that page leaves the row readable with the time 0.0. The outbox set aside was dated
    back to that time (1 January 1970) and the next daily purge deleted the copy kept for a
    technician's inspection at once, instead of once its content is past retention."""
    from deskwatch_contract.sqlite import move_aside

    wall = Wall()
    box = outbox(tmp_path, wall)
    for n in range(1, 4):
        box.put_event({"event_id": f"e{n}", "type": "phone_use"}, jpeg(n))
    box._db.execute("UPDATE messages SET created = 0.0 WHERE kind = 'evidence' AND event_id = 'e2'")
    box._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    box.close()
    wall.t += DAY
    aside = move_aside(tmp_path / "outbox.sqlite3", wall.t)
    os.utime(aside, (wall.t, wall.t))  # set aside a day after its images were queued
    box = outbox(tmp_path, wall)
    audit = AuditLog(tmp_path / "audit.sqlite3", keep_days=20)
    try:
        box._recover_from(aside, "pages zeroed")
        assert aside.stat().st_mtime == Wall().t  # the oldest sound time read from it
        wall.t += 18 * DAY  # its content is 19 days old: kept for inspection
        purge_expired(20, datetime.fromtimestamp(wall.t, UTC), outbox=box, audit=audit)
        assert aside.exists()
        wall.t += 2 * DAY
        purge_expired(20, datetime.fromtimestamp(wall.t, UTC), outbox=box, audit=audit)
        assert not aside.exists()
    finally:
        box.close()
        audit.close()
