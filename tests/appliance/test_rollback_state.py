"""An update rolled back: this code on the data partition a newer deskwatch wrote.

The A/B slots share /var/lib/deskwatch. When the new slot fails its health check the
firmware starts the old one again, and its code meets the outbox, the audit trail and
the templates as the new code left them. The newer files are checked-in SQL dumps
(tests/data/rollback, made by make_fixtures.py there): a change a newer version may make
and older code can live with must not stop it; one it cannot must be refused in words a
technician can act on, with nothing deleted."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from deskwatch.audit import AuditLog, audit_path
from deskwatch.delivery.outbox import Outbox
from deskwatch.domain import CheckOutcome, PauseInfo, ScanRecord
from deskwatch.vision.identity import read_templates, template_path
from deskwatch_contract import exitcodes
from deskwatch_contract.reviews import ReviewedFinding, Reviews
from deskwatch_contract.sqlite import DatabaseUnavailable, StoreTooNew
from tests.support.common import REPO

FIXTURES = REPO / "tests" / "data" / "rollback"
NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def load(fixture: str, path: Path) -> Path:
    """The checked-in dump ``fixture`` as the file ``path`` (as the newer version left it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript((FIXTURES / fixture).read_text(encoding="utf-8"))
        db.execute("PRAGMA journal_mode=WAL")  # as every deskwatch store runs
    finally:
        db.close()
    return path


def content(path: Path) -> tuple[int, list[str]]:
    """What the file holds (its format and every row), read without changing it."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0]), list(db.iterdump())
    finally:
        db.close()


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


def test_the_outbox_of_a_newer_version_that_only_added_is_sent_and_used_and_keeps_its_format(tmp_path: Path) -> None:
    """Format 2, usable from format 1 on: what the newer version queued goes out, in order, as
    replays; this code queues behind it, numbering on; the file stays at format 2. A message of
    a kind the newer version added stays queued for it: taken for damage, it was taken out of
    the queue and counted lost."""
    load("outbox-newer-compatible.sql", tmp_path / "outbox.sqlite3")
    box = Outbox(tmp_path, max_bytes=10_000_000, max_messages=10_000, max_age_days=20)
    try:
        queued = box.pending()
        assert [m.topic for m in queued] == ["event", "evidence/e-newer-1", "event", "scan"]
        assert all(m.replay for m in queued)
        assert box.put_event({"schema": "deskwatch.event/1", "event_id": "e-old"})["seq"] == 3
        box.ack_many([m.id for m in queued])
        assert [json.loads(m.payload)["event_id"] for m in box.pending()] == ["e-old"]
        # the newer version's "metrics" message: not this version's to send, and not damage
        lost = box.stats()["lost"]
        assert (lost["events"], lost["messages"]) == (0, 0)
    finally:
        box.close()
    version, rows = content(tmp_path / "outbox.sqlite3")
    assert version == 2  # not lowered: the newer version finds its file as it left it
    assert any("delivery_log" in r for r in rows)
    assert any("'metrics'" in r and r.startswith('INSERT INTO "messages"') for r in rows)  # still queued
    assert not any(r.startswith('INSERT INTO "damaged"') for r in rows)


@pytest.mark.parametrize(
    ("fixture", "name", "open_it"),
    [
        (
            "outbox-newer-incompatible.sql",
            "outbox.sqlite3",
            lambda d: Outbox(d, max_bytes=10_000_000, max_messages=10_000, max_age_days=20),
        ),
        ("audit-newer-incompatible.sql", "audit.sqlite3", lambda d: AuditLog.for_state_dir(str(d))),
        ("audit-newer-incompatible.sql", "audit.sqlite3", lambda d: AuditLog(audit_path(str(d)), read_only=True)),
    ],
)
def test_a_store_a_newer_version_made_unusable_for_this_one_is_refused_in_words_and_left_whole(
    tmp_path: Path, fixture: str, name: str, open_it: Callable[[Path], object]
) -> None:
    """Format 3, usable only from format 3 on. This code used to open it like its own: the
    outbox wrote rows without the column every row needs now, the trail its scans; what it
    could not read it would have taken for damage and set aside. Now it refuses, says why and
    what the technician can do, and changes nothing in the file."""
    path = load(fixture, tmp_path / name)
    before = content(path)
    with pytest.raises(StoreTooNew) as refused:
        open_it(tmp_path)
    assert isinstance(refused.value, DatabaseUnavailable)  # the daemon's start says it and stops (exit 69)
    message = str(refused.value)
    for words in (str(path), "newer deskwatch", "format 3", "rolled back", "deskwatch update install", "mv "):
        assert words in message
    assert content(path) == before
    assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name) == []  # not taken for damage


def test_the_daemon_stops_on_a_newer_trail_with_the_technicians_words_not_a_traceback(
    tmp_path: Path, write_config: Callable[..., Path]
) -> None:
    config = write_config()
    load("audit-newer-incompatible.sql", tmp_path / "state" / "audit.sqlite3")
    env = {**os.environ, "DESKWATCH_LOG_TARGET": "stderr"}
    run = subprocess.run(
        [sys.executable, "-m", "deskwatch", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == exitcodes.UNAVAILABLE, run.stderr
    assert "Traceback" not in run.stderr
    assert "was written by a newer deskwatch" in run.stderr and "format 3" in run.stderr
    history = subprocess.run(
        [sys.executable, "-m", "deskwatch", "history", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert history.returncode == exitcodes.UNAVAILABLE
    assert "Traceback" not in history.stderr and "format 3" in history.stderr


def test_face_templates_of_a_newer_format_are_not_compared_as_if_they_were_this_ones(tmp_path: Path) -> None:
    """The templates' format was written and never read: a later format's vectors, tagged with
    the same backend and model, were compared as this code's own (the worker taken for a
    stranger, or a stranger for the worker, if they mean something else)."""
    path = template_path(str(tmp_path), "w-1")
    path.parent.mkdir(mode=0o700)
    path.write_bytes((FIXTURES / "templates-newer-format.npz").read_bytes())
    path.chmod(0o600)
    before = path.read_bytes()
    templates, problem = read_templates(str(tmp_path), "w-1")
    assert templates is None
    assert problem is not None
    for words in ("newer deskwatch", "template format 3", "rolled back", "enrolled again", "kept as they are"):
        assert words in problem
    assert path.read_bytes() == before


def test_the_technicians_way_out_of_a_newer_outbox_runs_as_said_and_retention_deletes_what_it_moved(
    tmp_path: Path,
) -> None:
    """The refusal names the commands that give up the newer version's file; run as written they
    let this version start, and the file moved aside (findings, images) is deleted at retention
    like a damaged one instead of staying on the card for good."""
    load("outbox-newer-incompatible.sql", tmp_path / "outbox.sqlite3")
    with pytest.raises(StoreTooNew) as refused:
        Outbox(tmp_path, max_bytes=10_000_000, max_messages=10_000, max_age_days=20)
    moves = re.search(r"move it aside as root: (.*) - and start the service again", str(refused.value))
    assert moves is not None
    subprocess.run(moves.group(1), shell=True, check=True)
    moved = sorted(p.name for p in tmp_path.iterdir() if ".newer-" in p.name)
    assert moved and moved[0].startswith("outbox.sqlite3.newer-")
    later = time.time() + 21 * 86400
    box = Outbox(tmp_path, max_bytes=10_000_000, max_messages=10_000, max_age_days=20, wall_clock=lambda: later)
    try:
        assert box.put_event({"schema": "deskwatch.event/1", "event_id": "e-old"})["seq"] >= 1
        assert box.expire_set_aside(20 * 86400) >= len(moved)
    finally:
        box.close()
    assert not [p for p in tmp_path.iterdir() if ".newer-" in p.name]


@pytest.mark.parametrize(
    ("fixture", "refused"), [("outbox-newer-incompatible.sql", True), ("outbox-newer-compatible.sql", False)]
)
def test_the_technicians_selftest_names_a_store_a_newer_version_closed_to_this_one(
    tmp_path: Path, write_config: Callable[..., Path], fixture: str, refused: bool
) -> None:
    """At the desk after a rollback the daemon is down, and why is only in its journal: the
    selftest (which the technician runs) said 'disk PASS' and nothing about the outbox."""
    from deskwatch.config import load_config
    from deskwatch.technician.selftest import FAIL, SelftestRun, check_disk

    config = write_config()
    path = load(fixture, tmp_path / "state" / "outbox.sqlite3")
    before = content(path)
    rows = check_disk(SelftestRun(load_config(config), str(config)))
    state = [r for r in rows if r.name == "state"]
    assert content(path) == before
    if not refused:
        assert state == []
        return
    (row,) = state
    assert row.status == FAIL
    assert "newer deskwatch" in row.detail and "format 3" in row.detail and "rolled back" in row.detail
    assert row.remedy.startswith("install the newer version again") and "move it aside" in row.remedy


def test_a_message_a_newer_version_queued_ages_out_of_the_outbox_without_stopping_it(tmp_path: Path) -> None:
    """The newer version's "metrics" message left in the queue for it (above) is subject to the
    age cap like any other. When it aged out, the cap pass named its kind by this version's
    ranks (KeyError 'metrics'): every put_event of the next scan failed, and the scan's findings
    were never queued, for as long as the old slot ran."""
    load("outbox-newer-compatible.sql", tmp_path / "outbox.sqlite3")
    later = 1800000000.0 + 21 * 86400.0  # past max_age_days for every row the newer version queued
    box = Outbox(tmp_path, max_bytes=10_000_000, max_messages=10_000, max_age_days=20, wall_clock=lambda: later)
    try:
        assert box.put_event({"schema": "deskwatch.event/1", "event_id": "e-old"})["seq"] == 3
        assert [json.loads(m.payload)["event_id"] for m in box.pending()] == ["e-old"]
        assert box.evicted.get("metrics") == 1  # counted like any eviction
    finally:
        box.close()
    _, rows = content(tmp_path / "outbox.sqlite3")
    assert not any("'metrics'" in r and r.startswith('INSERT INTO "messages"') for r in rows)


def test_the_refusal_of_a_newer_store_offers_no_way_out_the_stopped_daemon_cannot_take(tmp_path: Path) -> None:
    """The refusal told the technician to 'send its update job' to install the newer version
    again. Update jobs reach the device through the daemon (jobs/notify on its MQTT connection),
    and the daemon is what just refused to start on this file (exit 69, and again at every
    restart): a job sent from the console waits on the broker for ever. The way that works is
    at the device: the bundle installed as root."""
    path = load("outbox-newer-incompatible.sql", tmp_path / "outbox.sqlite3")
    with pytest.raises(StoreTooNew) as refused:
        Outbox(tmp_path, max_bytes=10_000_000, max_messages=10_000, max_age_days=20)
    message = str(refused.value)
    assert "send its update job" not in message and "not an update job" in message, message
    assert "sudo deskwatch update install BUNDLE" in message and str(path) in message, message


def test_the_selftest_names_a_closed_store_on_a_full_card_too(
    tmp_path: Path, write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """check_disk worked out the 'state' rows (ab873e2) and then returned the disk's FAIL
    alone when the card had under 100 MB free: a technician at a device both rolled back and
    short of room was told to use a larger card, and not why the daemon refuses to start."""
    from deskwatch.config import load_config
    from deskwatch.technician import selftest

    config = write_config()
    load("outbox-newer-incompatible.sql", tmp_path / "state" / "outbox.sqlite3")
    monkeypatch.setattr(selftest, "MIN_FREE_BYTES", 1 << 62)  # more than any card has free
    rows = selftest.check_disk(selftest.SelftestRun(load_config(config), str(config)))
    assert [(r.name, r.status) for r in rows] == [("disk", selftest.FAIL), ("state", selftest.FAIL)]
