"""The worker's audit trail on the device: as durable as the outbox, and a corrupt file
(a failing SD card) is kept aside, never deleted, while the trail starts afresh."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deskwatch.audit import AuditLog, audit_path
from deskwatch.domain import CheckOutcome, ScanRecord, rfc3339
from deskwatch_contract.sqlite import DatabaseUnavailable
from tests.support.faultfs import FaultFs

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


@pytest.fixture
def service_state() -> Iterator[Path]:
    """The service user's state directory (nobody's), in a folder that user can reach."""
    nobody = pwd.getpwnam("nobody")
    base = Path(tempfile.mkdtemp(prefix="deskwatch-audit-"))
    base.chmod(0o755)
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    yield state
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root's tools opening the service user's trail")
@pytest.mark.parametrize("target", ["a name root may create", "an empty file root keeps"])
def test_roots_tools_open_no_trail_the_service_user_linked_elsewhere(service_state: Path, target: str) -> None:
    """The service user made audit.sqlite3 a link (to /etc/nologin, say); `sudo deskwatch
    enroll --camera`, `aim`, `selftest` and `history` then created the file it named as root
    (no non-root login works while /etc/nologin exists), or rewrote an empty one and made it
    0600. Now root opens the trail with the directory owner's rights: the kernel refuses."""
    roots = service_state.parent / "etc"
    roots.mkdir(mode=0o755)
    victim = roots / "nologin"
    if target == "an empty file root keeps":
        victim.write_bytes(b"")
        victim.chmod(0o644)
    link = audit_path(str(service_state))
    link.symlink_to(victim)
    os.lchown(link, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(DatabaseUnavailable):
        AuditLog.for_state_dir(str(service_state))
    kept = target == "an empty file root keeps"
    assert sorted(p.name for p in roots.iterdir()) == (["nologin"] if kept else [])
    if kept:
        assert victim.read_bytes() == b"" and stat.S_IMODE(victim.stat().st_mode) == 0o644


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root's history reading the service user's trail")
def test_sudo_history_reads_no_database_the_service_user_linked_elsewhere(service_state: Path) -> None:
    """`sudo deskwatch history` opens the trail read-only; a link the service user put in its
    place (to a database only root may read) is read with that user's rights: refused."""
    secret = service_state.parent / "root-only.sqlite3"
    db = sqlite3.connect(secret)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    secret.chmod(0o600)
    link = audit_path(str(service_state))
    link.symlink_to(secret)
    os.lchown(link, pwd.getpwnam("nobody").pw_uid, -1)
    with pytest.raises(sqlite3.OperationalError):
        AuditLog(link, read_only=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: root writing into the service user's directory")
def test_a_trail_root_starts_in_the_service_users_directory_is_that_users(service_state: Path) -> None:
    """`sudo deskwatch aim` on a device whose daemon never ran: the daemon must be able to open it."""
    log = AuditLog.for_state_dir(str(service_state))
    try:
        log.record_event("aim_capture", NOW, {"seconds": 1})
    finally:
        log.close()
    nobody = pwd.getpwnam("nobody")
    made = [p for p in service_state.iterdir()]
    assert made and all((p.stat().st_uid, p.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid) for p in made), made


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None, reason="needs root and unshare(1) for a read-only mount"
)
def test_a_read_only_file_system_is_named_as_such_not_as_a_mode_to_fix(tmp_path: Path) -> None:
    """A failing SD card is remounted read-only (ext4 errors=remount-ro): the daemon stopped
    with "state has mode 0700 ... chmod 700 state", advice that changes nothing."""
    import subprocess
    import sys

    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    AuditLog.for_state_dir(str(state)).close()
    child = (
        "import sys\nfrom deskwatch.audit import AuditLog\n"
        "try:\n    AuditLog.for_state_dir(sys.argv[1])\nexcept Exception as exc:\n    print(exc)\n"
    )
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && exec "$0" -c "$2" "$1"'
    proc = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script, sys.executable, str(state), child],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0 and "permitted" in proc.stderr:
        pytest.skip("mount namespaces not permitted here")
    assert proc.returncode == 0, proc.stderr
    message = proc.stdout
    assert "read-only" in message and "dmesg" in message, message
    assert "chmod" not in message, message


def test_history_never_moves_the_daemons_trail_aside(write_config: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """One page of the trail goes bad (a failing SD card) while the daemon runs: appending still
    works, reading every row does not. `deskwatch history` - the worker's reader - used to move
    the file aside and start an empty one under the running daemon, which went on recording
    into the moved file: history showed "No scans recorded yet" from then on, and after the
    daemon's next start those scans were only in the file retention deletes. History now reads
    without changing anything: what it can read it shows, and where it meets the bad page it
    says what is wrong and what to do."""
    from deskwatch.cli import main
    from deskwatch.config import load_config

    config = write_config()
    state = Path(load_config(str(config)).state_dir)
    daemon = AuditLog.for_state_dir(str(state))  # the running daemon's trail
    for n in range(400):
        daemon.record_scan(
            ScanRecord(f"s-{n:04d}", "schedule", NOW, NOW, frames=3, checks=[CheckOutcome("x" * 99, "pass")])
        )
    other = sqlite3.connect(str(audit_path(str(state))))
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (leaf, *_) = [r[0] for r in other.execute(
        "SELECT pageno FROM dbstat WHERE name = 'scans_started' AND pagetype = 'leaf' ORDER BY pageno"
    )][1:]  # fmt: skip
    other.close()
    with open(audit_path(str(state)), "r+b") as f:
        f.seek((leaf - 1) * 4096)
        f.write(b"\xde\xad" * 2048)
    assert main(["history", "--config", str(config)]) == 0  # the newest entries do not touch the bad page
    assert capsys.readouterr().out.count("scan (schedule)") == 20
    assert not list(state.glob("audit.sqlite3.corrupt-*"))  # left where the daemon has it
    later = NOW + timedelta(hours=1)
    daemon.record_scan(ScanRecord("s-after", "schedule", later, later, frames=3))  # the daemon goes on
    assert main(["history", "--config", str(config), "-n", "1"]) == 0
    assert "2026-11-30 11:00:00 UTC  scan (schedule)" in capsys.readouterr().out  # and history sees it
    assert main(["history", "--config", str(config), "-n", "1000"]) == 69  # what the bad page holds
    err = capsys.readouterr().err
    assert "malformed" in err and "the service sets it aside (kept for inspection)" in err, err
    daemon.close()


def damage_page(path: Path, table: str, which: int) -> None:
    """Overwrite one leaf page of ``table`` (or index), as a failing SD card returns it."""
    db = sqlite3.connect(str(path))
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    leaves = [
        r[0]
        for r in db.execute("SELECT pageno FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY pageno", (table,))
    ]
    db.close()
    with open(path, "r+b") as f:
        f.seek((leaves[which] - 1) * 4096)
        f.write(b"\xde\xad" * 2048)


def test_one_bad_page_costs_the_history_only_that_page(write_config: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """One page of the trail goes bad (a failing SD card). The daemon's next start set the whole
    file aside and began an empty one: weeks of scans gone from `deskwatch history` with no word
    to the worker, and the saved pause with them (the camera opened during the worker's pause).
    Damage in a table page (not in the index a count reads) was not even noticed at start, and
    every history failed from then on. Now everything readable is read back into the fresh
    trail, and history says that some entries are missing."""
    from deskwatch.cli import main
    from deskwatch.config import load_config
    from deskwatch.domain import PauseInfo

    config = write_config()
    state = Path(load_config(str(config)).state_dir)
    trail = AuditLog.for_state_dir(str(state))
    for n in range(400):
        at = NOW + timedelta(minutes=n)
        trail.record_scan(
            ScanRecord(f"s-{n:04d}", "schedule", at, at, frames=3, checks=[CheckOutcome("x" * 99, "pass")])
        )
    trail.save_pause(PauseInfo("doctor's call", 60, NOW + timedelta(minutes=400)))
    trail.close()
    damage_page(audit_path(str(state)), "scans", 3)
    restarted = AuditLog.for_state_dir(str(state))  # the daemon's next start
    try:
        assert restarted.recovered_from is not None  # the damaged file is kept for inspection
        kept = [e.data["scan_id"] for e in restarted.recent(1000) if e.kind == "scan"]
        assert 300 < len(kept) < 400 and "s-0000" in kept and "s-0399" in kept, len(kept)
        pause = restarted.load_pause()
        assert pause is not None and pause.reason == "doctor's call"
    finally:
        restarted.close()
    assert main(["history", "--config", str(config), "-n", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("scan (schedule)") == 5
    assert "this log was found damaged on the device's storage" in out and "some older entries" in out, out

    # damaged again, in an index this time: nothing more is lost, and the first loss is still told
    damage_page(audit_path(str(state)), "scans_started", 1)
    again = AuditLog.for_state_dir(str(state))
    try:
        assert again.recovered_from is not None
        assert len([e for e in again.recent(1000) if e.kind == "scan"]) == len(kept)
    finally:
        again.close()
    assert main(["history", "--config", str(config), "-n", "5"]) == 0
    assert "some older entries could not be read" in capsys.readouterr().out


def test_a_bad_index_page_loses_nothing(tmp_path: Path) -> None:
    """Every row is read back; nothing is said missing (an empty table read back is whole)."""
    trail = AuditLog(tmp_path / "audit.sqlite3")
    for n in range(400):
        at = NOW + timedelta(minutes=n)
        trail.record_scan(
            ScanRecord(f"s-{n:04d}", "schedule", at, at, frames=3, checks=[CheckOutcome("x" * 99, "pass")])
        )
    trail.close()
    damage_page(tmp_path / "audit.sqlite3", "scans_started", 1)
    again = AuditLog(tmp_path / "audit.sqlite3")
    try:
        assert again.recovered_from is not None and len([e for e in again.recent(1000) if e.kind == "scan"]) == 400
        assert (again.read_back_note() or {}).get("complete") is True
    finally:
        again.close()


def test_a_scan_record_the_disk_refused_is_written_as_soon_as_it_takes_one(
    fault_fs: FaultFs, caplog: pytest.LogCaptureFixture
) -> None:
    """The card filled between a scan's first row and its record: the row said "STARTED ... the
    camera is on for it now" in the worker's history until the daemon's next start, however
    soon the card had room again. The record is held and written with the next write the
    disk takes (a pause here; the daemon's loop asks at every turn too)."""
    state = fault_fs.tmpfs(3) / "state"
    log = AuditLog.for_state_dir(str(state))
    try:
        big = ScanRecord(
            "s-1", "schedule", NOW, NOW, frames=3, checks=[CheckOutcome("phone_use", "pass", "x" * 3000)] * 40
        )
        log.begin_scan(big)
        fault_fs.fill()
        with pytest.raises(sqlite3.OperationalError):
            log.record_scan(big)
        fault_fs.free()
        log.record_event("pause", NOW, {"reason": "water", "minutes": 5})
        reader = AuditLog(log.path, read_only=True)
        try:
            scans = [e.data for e in reader.recent(10) if e.kind == "scan"]
        finally:
            reader.close()
        assert [(s["scan_id"], s["outcome"], s["frames"]) for s in scans] == [("s-1", "clear", 3)]

        # the card fills again, and stays full until the daemon stops; a record larger than any
        # write before (the log is written over in place once copied into the file, and a record
        # that fits in it goes in on a full card: it must grow the log to be refused)
        huge = ScanRecord(
            "s-2", "schedule", NOW, NOW, frames=3, checks=[CheckOutcome("phone_use", "pass", "y" * 3000)] * 120
        )
        log.begin_scan(huge)
        fault_fs.fill()
        with pytest.raises(sqlite3.OperationalError):
            log.record_scan(huge)
        with caplog.at_level(logging.ERROR, logger="deskwatch.audit"):
            log.close()
        assert any("s-2" in r.getMessage() and "next start" in r.getMessage() for r in caplog.records)
    finally:
        fault_fs.free()
    log = AuditLog.for_state_dir(str(state))
    try:
        (cut,) = log.close_unfinished()
        assert cut.scan_id == "s-2" and cut.error is not None and "before the disk took its record" in cut.error
    finally:
        log.close()


def test_the_daemons_trail_deletes_what_is_past_retention_on_a_card_that_stays_full(
    fault_fs: FaultFs, write_config: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Retention (evidence.retention_days, at most 20) is a promise to the worker. On a full card
    the purge's deletes could not even be written to SQLite's log: the rows stayed for as long as
    the card stayed full, the hourly retry failing each time. The daemon's trail keeps room for it
    (audit.reserve) and deletes in batches that fit it (10 days at once took 577 KiB of log)."""
    from deskwatch.app import build_audit
    from deskwatch.config import load_config

    state = fault_fs.tmpfs(8) / "state"
    cfg = load_config(str(write_config(f"state_dir: {state}\nevidence: {{retention_days: 20}}")))
    trail = build_audit(cfg)
    checks = [CheckOutcome(f"rule_{i}", "pass", "nothing of the kind in 5 frames, best 0.31") for i in range(8)]
    for day in range(30):
        for i in range(24):
            at = NOW - timedelta(days=30 - day, minutes=20 * i)
            trail.begin_scan(ScanRecord(f"s-{day}-{i}", "schedule", at, at, frames=5, checks=checks))
            trail.record_scan(ScanRecord(f"s-{day}-{i}", "schedule", at, at, frames=5, checks=checks))
    cutoff = rfc3339(NOW - timedelta(days=20))
    (past,) = trail._db.execute("SELECT COUNT(*) FROM scans WHERE started_at < ?", (cutoff,)).fetchone()
    assert past > 10 * 23
    trail.close()  # the daemon starts again (its log starts empty), and the card fills up
    trail = build_audit(cfg)
    fault_fs.fill()
    try:
        assert trail.prune(NOW) == past
        left = trail._db.execute("SELECT MIN(started_at), COUNT(*) FROM scans").fetchone()
        assert left[0] >= cutoff and left[1] == 30 * 24 - past
        assert any("disk is full" in r.getMessage() for r in caplog.records)
    finally:
        fault_fs.free()
        trail.close()


def test_the_write_ahead_logs_of_the_small_stores_stay_small(tmp_path: Path) -> None:
    """SQLite copies its log into the file every 1,000 pages by default and the log keeps its
    size: the sequence counters (one 4 KB page) grew a 4 MB log, one page for each event
    delivered, and the audit trail a 4 MB log for a few hundred KB of rows until the first
    purge. ``make soak`` over 30 simulated days: counters 4 KB + 2.4 MB of log, audit 0.2 MB +
    4.1 MB. Both now copy theirs at a few dozen pages, within the room kept for a full disk."""
    from deskwatch.delivery.counters import DeviceCounters

    counters = DeviceCounters(tmp_path)
    audit = AuditLog(tmp_path / "audit.sqlite3", keep_days=20)
    try:
        at = datetime(2026, 3, 2, 9, tzinfo=UTC)
        for n in range(300):
            counters.set_queued_events(n)  # an event delivered: one commit of its one page
            audit.record_event("pause", at + timedelta(minutes=n), {"reason": "fetch water", "minutes": 10})
        assert (tmp_path / "counters.sqlite3-wal").stat().st_size < 200 * 1024
        assert (tmp_path / "audit.sqlite3-wal").stat().st_size < 300 * 1024
        assert counters.queued_events == 299 and len(audit.recent(400)) == 300
    finally:
        counters.close()
        audit.close()


def test_a_trail_set_aside_while_the_daemon_runs_keeps_its_log_small(tmp_path: Path) -> None:
    """The trail found damaged by a scan's write (a failing SD card) is set aside and a fresh one
    opened in its place (AuditLog._write_scan): that fresh connection had SQLite's default log
    size again (a copy into the file every 1,000 pages), so after it the log grew towards 4 MB
    beside the 256 KB kept for a full disk, as before d927040, until the daemon was restarted."""
    import numpy as np

    from deskwatch.audit import WAL_PAGES

    path = tmp_path / "audit.sqlite3"
    trail = AuditLog(path, keep_days=20)
    try:
        trail.record_scan(record("s-0"))
        other = sqlite3.connect(str(path))  # what is committed goes into the file itself
        other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        other.close()
        with open(path, "r+b") as f:  # every page but the header's, as a failing card returns them
            size = f.seek(0, 2)
            f.seek(4096)
            f.write(np.random.default_rng(7).integers(0, 256, size - 4096, dtype=np.uint8).tobytes())
        trail.record_scan(record("s-1"))  # finds the damage, sets the file aside, writes to a fresh one
        assert list(tmp_path.glob("audit.sqlite3.corrupt-*"))
        assert trail._db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WAL_PAGES
        at = datetime(2026, 3, 2, 9, tzinfo=UTC)
        for n in range(300):
            trail.record_event("pause", at + timedelta(minutes=n), {"reason": "fetch water", "minutes": 10})
        assert (tmp_path / "audit.sqlite3-wal").stat().st_size < 300 * 1024
    finally:
        trail.close()
