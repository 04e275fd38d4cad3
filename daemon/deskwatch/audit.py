"""The on-device audit trail: every scan, pause and resume, kept in SQLite under
``state_dir`` so that ``deskwatch history`` can show the worker what was checked.

No images and no face data are stored here: times, checks, outcomes and findings.
Rows older than ``keep_days`` are pruned (the same bound as evidence retention). A file
found damaged when the daemon starts is set aside (kept until retention) and what can still
be read of it is copied into a fresh one; ``deskwatch history`` says when some of it could not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deskwatch.domain import PauseInfo, ScanRecord, rfc3339, utcnow
from deskwatch_contract.reviews import ReviewedFinding, Reviews
from deskwatch_contract.space import SpaceReserve
from deskwatch_contract.sqlite import (
    StoreFormat,
    connect_read_only,
    disk_trouble,
    is_damaged,
    is_disk_full,
    open_or_recover,
    read_back,
    remove_set_aside,
    set_aside,
    transaction,
    truncate_wal,
)
from deskwatch_contract.storeformat import StoreTooNew, check_readable

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    scan_id     TEXT PRIMARY KEY,
    started_at  TEXT NOT NULL,
    finished_at TEXT,
    trigger     TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    frames      INTEGER NOT NULL,
    persons     INTEGER NOT NULL,
    bystanders  INTEGER NOT NULL,
    checks      TEXT NOT NULL,
    findings    TEXT NOT NULL,
    error       TEXT
);
CREATE INDEX IF NOT EXISTS scans_started ON scans(started_at);
CREATE TABLE IF NOT EXISTS events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS collector_view (
    event_id      TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    reason        TEXT,
    wrong         INTEGER,
    reviewed_at   TEXT,
    contested     INTEGER NOT NULL,
    picture       TEXT NOT NULL,
    picture_until TEXT
);
"""

# Written into the file (see deskwatch_contract.storeformat): a later version that only adds
# keeps compatible_from, so that this code, rolled back to, goes on recording scans in it.
FORMAT = StoreFormat("audit trail", SCHEMA, version=1, compatible_from=1)

# a scan's row from before its camera opens until its record is complete
STARTED = "started"
# Every write names its columns: a later version may add some (a column with a default, which
# older code can live with), and after a rollback this code writes the same file again.
SCAN_COLUMNS = (
    "scan_id, started_at, finished_at, trigger, outcome, frames, persons, bystanders, checks, findings, error"
)
RECORD_SQL = f"INSERT OR REPLACE INTO scans ({SCAN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
INTERRUPTED = (
    "the daemon stopped during this scan (a crash, the watchdog, a power cut), or before the disk took its "
    "record (a full or failing SD card): the camera was switched on, and the scan's outcome was never recorded"
)


# reads every table and index history reads (a count alone reads only the smallest index: a
# damaged table page went unnoticed at start and failed every 'deskwatch history' after it)
PROBE = (
    "SELECT (SELECT COUNT(*) FROM scans), (SELECT SUM(LENGTH(checks) + LENGTH(findings)) FROM scans NOT INDEXED),"
    " (SELECT COUNT(*) FROM events), (SELECT SUM(LENGTH(detail)) FROM events NOT INDEXED),"
    " (SELECT COUNT(*) FROM state), (SELECT COUNT(*) FROM collector_view)"
)


# what a trail set aside as damaged is read back by: table -> (its integer key, the columns)
READ_BACK = {
    "scans": (
        "rowid",
        "scan_id, started_at, finished_at, trigger, outcome, frames, persons, bystanders, checks, findings, error",
    ),
    "events": ("id", "at, kind, detail"),
    "state": ("rowid", "key, value"),
    "collector_view": (
        "rowid",
        "event_id, state, reason, wrong, reviewed_at, contested, picture, picture_until",
    ),
}
JSON_COLUMNS = ("checks", "findings", "detail", "value")


def _sound(row: dict[str, Any]) -> bool:
    """A row read back whose JSON columns still parse (history reads them)."""
    try:
        for column in JSON_COLUMNS:
            if column in row:
                json.loads(row[column])
    except (TypeError, ValueError):
        return False
    return True


# Room the daemon's trail keeps on its card for the retention purge (see :meth:`AuditLog.prune`): the
# purge deletes in batches of PRUNE_BATCH rows, the log copied into the file between them, so that a
# batch's pages (~100 KiB for 50 scans of 8 checks; 10 days' at once took 577 KiB) fit in it.
RESERVE_NAME = "audit.reserve"
RESERVE_BYTES = 256 * 1024
WAL_PAGES = 32  # the log is copied into the file at this many pages (128 KB), and written over after
PRUNE_BATCH = 50


def _keep_log_small(db: sqlite3.Connection) -> None:
    """A few pages a scan: SQLite's default (a copy into the file every 1,000 pages) grew a 4 MB
    log beside a few hundred KB of rows until the first purge; this keeps it within the room
    kept for a full disk (RESERVE_BYTES). A setting of the connection: every one the daemon
    writes with needs it (the one at the start, and a fresh file's after a damaged one)."""
    db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")


def audit_path(state_dir: str) -> Path:
    return Path(state_dir) / "audit.sqlite3"


@dataclass(frozen=True)
class AuditEntry:
    """One line of ``deskwatch history``: a scan, or a pause/resume/expiry/overrun."""

    at: str  # RFC 3339
    kind: str  # "scan", "pause", "resume", "pause_expired", "pause_overrun", ...
    data: dict[str, Any]


class AuditLog:
    """Append-only (plus pruning) audit store. Thread-safe; one connection."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        keep_days: int = 20,
        read_only: bool = False,
        disk_reserve_bytes: int = 0,
    ):
        """``disk_reserve_bytes``: room kept beside the file for the purge on a full card (the
        daemon's trail; a tool's, root's, makes no file of its own in the service user's directory)."""
        self.path = Path(path)
        self.keep_days = keep_days
        self._space = (
            SpaceReserve(self.path.with_name(RESERVE_NAME), disk_reserve_bytes) if disk_reserve_bytes else None
        )
        self._lock = threading.Lock()
        self.recovered_from: Path | None = None
        # scan records the disk refused (scan id -> the row), written as soon as it takes them
        self._held: dict[str, tuple[Any, ...]] = {}
        self._held_view: Reviews | None = None  # the collector's latest view, when the disk refused it
        self._view_lock = threading.RLock()  # a held view is never written over a newer one
        # a spell of writes the disk refused: when its trouble was said, and how many since
        self._trouble_said: datetime | None = None
        self._unwritten = 0
        if read_only:
            # a reader ('deskwatch history', run while the daemon writes): never creates, changes or
            # moves the file; a damaged one raises (the daemon sets it aside when it next starts)
            # (no probe: what it reads is read, and a damaged page fails that read)
            # and root (`sudo deskwatch history`) reads it with the directory owner's rights, as
            # it writes it (fsowner): a link the service user put there gets root nothing more
            self._db = connect_read_only(self.path, check_same_thread=False, timeout=5.0)
            try:  # a newer deskwatch's trail (an update rolled back) is not read wrong
                check_readable(self._db, self.path, FORMAT)
            except StoreTooNew:
                self._db.close()
                raise
            return
        self._open()
        if self._space is not None:
            self._space.ensure()

    def _open(self) -> None:
        """Open the file, or set it aside when it is damaged and start a fresh one with what can
        be read back of it (at the start, and when a scan's row finds it damaged)."""
        # synchronous=FULL: the worker's record of a scan must survive a power cut like
        # the outbox's copy does; an unreadable file is kept aside until retention removes
        # it (expire_set_aside); pruned rows are overwritten (secure_delete)
        self._db, recovered = open_or_recover(self.path, FORMAT, PROBE, secure_delete=True)
        _keep_log_small(self._db)
        if recovered is not None:
            self._took_back(*recovered)

    def _took_back(self, aside: Path, damage: str) -> None:
        """The damaged trail is now ``aside``: what is readable of it goes into the fresh one."""
        self.recovered_from = aside
        scans, events, complete = self._read_back(aside)
        log.error(
            "audit trail %s is unreadable (%s): moved it to %s and started a fresh one with what could be read "
            "back: %d scans and %d other entries%s",
            self.path,
            damage,
            aside,
            scans,
            events,
            "" if complete else "; the rest is lost ('deskwatch history' says so)",
        )

    def _read_back(self, aside: Path) -> tuple[int, int, bool]:
        """Copy what is readable of the trail set aside as ``aside`` into the fresh one: one bad
        page (a failing SD card) used to take weeks of the worker's history with it - and the
        saved pause, so that the camera opened during it. Rows whose JSON no longer parses are
        left out. Returns (scans, other entries, whether nothing was left out); history says when
        something was (the ``state`` row ``read_back``)."""
        got = read_back(aside, {table: f"{key}, {columns}" for table, (key, columns) in READ_BACK.items()})
        complete = all(done for _, done in got.values())
        counts: dict[str, int] = {}
        with self._lock, transaction(self._db):
            for table, (rows, _) in got.items():
                key, columns = READ_BACK[table]
                names = [c.strip() for c in columns.split(",")]
                into = ([key] if key != "rowid" else []) + names
                marks = ",".join("?" * len(into))
                for row in rows:
                    values = row if key != "rowid" else row[1:]
                    if not _sound(dict(zip(into, values, strict=True))):
                        complete = False
                        continue
                    try:
                        self._db.execute(f"INSERT OR IGNORE INTO {table} ({','.join(into)}) VALUES ({marks})", values)
                    except sqlite3.DatabaseError:  # a row that cannot be what was written
                        complete = False
                        continue
                    counts[table] = counts.get(table, 0) + 1
            earlier = self._db.execute("SELECT value FROM state WHERE key = 'read_back'").fetchone()
            note = {"at": rfc3339(utcnow()), "complete": complete, "aside": aside.name}
            with contextlib.suppress(TypeError, ValueError, KeyError):
                if earlier is not None and not json.loads(earlier[0])["complete"]:
                    note = json.loads(earlier[0])  # a loss read back with the rest stays told
            self._db.execute("INSERT OR REPLACE INTO state (key, value) VALUES ('read_back', ?)", (json.dumps(note),))
        return counts.get("scans", 0), sum(n for t, n in counts.items() if t != "scans"), complete

    @classmethod
    def for_state_dir(cls, state_dir: str, keep_days: int = 20, disk_reserve_bytes: int = 0) -> AuditLog:
        return cls(audit_path(state_dir), keep_days=keep_days, disk_reserve_bytes=disk_reserve_bytes)

    def close(self) -> None:
        if self._held and not self.write_held():
            log.error(
                "audit trail: the record of %d scan(s) (%s) could not be written before the daemon stopped (the "
                "disk refused it): missing from the worker's history, or, where its first row was written, recorded "
                "as cut off by the next start",
                len(self._held),
                ", ".join(self._held),
            )
        with self._lock:
            self._db.close()

    # -- writing --------------------------------------------------------------------
    def begin_scan(self, record: ScanRecord) -> None:
        """The scan's row, written before the camera opens (outcome ``started``): a daemon that
        dies during the scan (the watchdog after a hung camera read, the OOM killer, a power
        cut) leaves it, and the next start says so (:meth:`close_unfinished`).
        :meth:`record_scan` replaces it with the whole record."""
        self.write_held()
        self._write_scan(
            f"INSERT INTO scans ({SCAN_COLUMNS}) VALUES (?,?,NULL,?,?,0,0,0,'[]','[]',NULL)",
            (record.scan_id, rfc3339(record.started_at), record.trigger, STARTED),
        )

    def _write_scan(self, sql: str, row: tuple[Any, ...]) -> None:
        """A scan's row; a file found damaged by the write (a failing SD card, while the daemon
        runs) is set aside and read back as at the start, and the row written to the fresh one:
        scans go on recorded instead of stopping until the next start. SQLite's verdict on the
        write is the proof (no probe, which might miss the bad page). Any other failure (a full
        disk, a read-only file system) is raised: no scan until the trail can be written."""
        try:
            with self._lock:
                self._db.execute(sql, row)
            self._wrote()
            return
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):
                raise
            damage = str(exc)
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db, aside = set_aside(self.path, FORMAT, PROBE, damage)
            _keep_log_small(self._db)  # the fresh file's connection, as at the start
        self._took_back(aside, damage)
        with self._lock:
            self._db.execute(sql, row)

    def close_unfinished(self) -> list[ScanRecord]:
        """At the daemon's start: the scans a daemon that died left ``started`` are recorded as
        cut off, not as running; returns them (for the collector). Only the daemon calls this
        (a tool that opens the trail while it runs would close the scan it is taking)."""
        with self._lock, transaction(self._db):
            rows = self._db.execute(
                "SELECT scan_id, started_at, trigger FROM scans WHERE outcome = ?", (STARTED,)
            ).fetchall()
            self._db.execute("UPDATE scans SET outcome = 'error', error = ? WHERE outcome = ?", (INTERRUPTED, STARTED))
        if rows:
            log.warning(
                "audit trail: %d scan(s) cut off by the daemon's end before their record was complete", len(rows)
            )
        return [ScanRecord(str(r[0]), str(r[2]), utc(str(r[1])), error=INTERRUPTED) for r in rows]

    def record_scan(self, record: ScanRecord) -> None:
        checks = [{"rule": c.rule, "outcome": c.outcome, "reason": c.reason} for c in record.checks]
        findings: list[dict[str, Any]] = [
            {"type": f.type, "confidence": round(f.confidence, 3), "detail": f.detail} for f in record.findings
        ]
        for finding, sent in zip(findings, record.sent, strict=False):  # what went out, once it was queued
            finding.update(event_id=sent.event_id, picture_bytes=sent.picture_bytes, no_picture=sent.no_picture)
        row = (
            record.scan_id,
            rfc3339(record.started_at),
            rfc3339(record.finished_at) if record.finished_at else None,
            record.trigger,
            record.outcome,
            record.frames,
            record.persons,
            record.bystanders,
            json.dumps(checks),
            json.dumps(findings),
            record.error,
        )
        try:
            self._write_scan(RECORD_SQL, row)
        except sqlite3.Error:
            # the scan's first row stays 'started' ("the camera is on for it now"), for hours on a
            # card that filled: the record is held and written as soon as the disk takes a write
            # (:meth:`write_held`: each scan, pause and loop turn), or the next start says so
            self._held[record.scan_id] = row
            raise
        self._held.pop(record.scan_id, None)

    def write_held(self) -> bool:
        """Write what the disk refused: the collector's latest view (:meth:`save_collector_view`) and the
        scan records (:meth:`record_scan`), oldest first; True when none is left. Nothing to do costs nothing (the daemon asks at each turn of its loop)."""
        with self._view_lock:
            if self._held_view is not None:
                try:
                    self.save_collector_view(self._held_view)
                except sqlite3.Error:
                    return False
                log.info("audit trail: the collector's view of this desk's findings is saved now (the disk refused it)")
        while self._held:
            scan_id, row = next(iter(self._held.items()))
            try:
                self._write_scan(RECORD_SQL, row)
            except sqlite3.Error:
                return False
            self._held.pop(scan_id, None)  # (a pause's record_event on another thread may have written it too)
            log.info("audit trail: the record of scan %s is written now (the disk refused it before)", scan_id)
        return True

    def record_event(self, kind: str, at: datetime, detail: dict[str, Any]) -> None:
        self.start_event(kind, at, detail)

    def start_event(self, kind: str, at: datetime, detail: dict[str, Any]) -> int:
        """:meth:`record_event` for what is not over yet; returns its row, for :meth:`update_event`."""
        self.write_held()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO events(at, kind, detail) VALUES (?,?,?)",
                (rfc3339(at), kind, json.dumps(detail, default=str)),
            )
        self._wrote()
        return int(cur.lastrowid or 0)

    def unwritten(self, what: str, exc: BaseException) -> bool:
        """Say in one line that ``what`` (the caller's words: "could not write pause to the audit
        trail") failed because the trail's disk refused the write (full, turned read-only, failing):
        the disk's trouble and what to do in full once per spell, then the words and the error
        alone (a worker pausing, resuming and scanning on a broken card made a traceback each).
        Returns False for any other error, a bug, whose traceback the caller logs."""
        if not (isinstance(exc, OSError) or type(exc) in (sqlite3.OperationalError, sqlite3.DatabaseError)):
            return False
        self._unwritten += 1
        if self._trouble_said is None:
            self._trouble_said = utcnow()
            log.error(
                "%s: %s. Until the disk takes writes again pauses and resumes hold unrecorded and no scan is taken",
                what,
                disk_trouble(self.path.parent, exc),
                extra={"journal": {"DESKWATCH_EVENT": "audit_unwritable"}},
            )
        else:
            log.error(
                "%s: %s (the disk still refuses writes, as said at %s)",
                what,
                exc,
                self._trouble_said.strftime("%H:%M:%S UTC"),
            )
        return True

    def _wrote(self) -> None:
        """A write went through: a spell of refused writes is over."""
        if self._trouble_said is not None:
            log.info(
                "audit trail: written again (%d entries were not recorded while the disk refused)", self._unwritten
            )
            self._trouble_said, self._unwritten = None, 0

    def update_event(self, row: int, detail: dict[str, Any]) -> None:
        """What an event recorded before it was over (a tool's camera use) turned out to be."""
        with self._lock:
            self._db.execute("UPDATE events SET detail = ? WHERE id = ?", (json.dumps(detail, default=str), row))

    def save_pause(self, pause: PauseInfo | None) -> None:
        """Persist the active pause so a daemon restart does not end it."""
        with self._lock:
            if pause is None:
                self._db.execute("DELETE FROM state WHERE key='pause'")
            else:
                self._db.execute(
                    "INSERT OR REPLACE INTO state (key, value) VALUES ('pause', ?)",
                    (
                        json.dumps(
                            {
                                "reason": pause.reason,
                                "minutes": pause.minutes,
                                "started_at": pause.started_at.isoformat(),
                                "source": pause.source,
                            }
                        ),
                    ),
                )
        self._wrote()

    def load_pause(self) -> PauseInfo | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key='pause'").fetchone()
        if row is None:
            return None
        try:
            d = json.loads(row[0])
            pause = PauseInfo(
                reason=str(d["reason"]),
                minutes=int(d["minutes"]),
                started_at=datetime.fromisoformat(d["started_at"]),
                source=str(d.get("source", "local")),
            )
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring an unreadable saved pause in %s", self.path)
            return None
        # as saved: one by an older daemon may hold a reason today's rule refuses, which its
        # readers check (policy.pause.checked_restore; the trail is not the policy's)
        return pause

    def read_back_note(self) -> dict[str, Any] | None:
        """When the trail was last found damaged and read back, and whether all of it was."""
        with self._lock:
            row = self._db.execute("SELECT value FROM state WHERE key = 'read_back'").fetchone()
        try:
            note = json.loads(row[0]) if row else None
        except (TypeError, ValueError):
            return None
        return note if isinstance(note, dict) else None

    def save_collector_view(self, reviews: Reviews) -> None:
        """Replace what the collector said about this device's findings with its latest list."""
        rows = [
            (f.event_id, f.state, f.reason, None if f.wrong is None else int(f.wrong), f.reviewed_at, int(f.contested),
             f.picture, f.picture_until)
            for f in reviews.findings
        ]  # fmt: skip
        try:
            with self._view_lock, self._lock, transaction(self._db):
                self._db.execute("DELETE FROM collector_view")
                self._db.executemany(
                    "INSERT OR REPLACE INTO collector_view (event_id, state, reason, wrong, reviewed_at, contested, picture, "
                    "picture_until) VALUES (?,?,?,?,?,?,?,?)",
                    rows,
                )
                self._db.execute(
                    "INSERT OR REPLACE INTO state (key, value) VALUES ('collector_view_at', ?)",
                    (json.dumps({"at": reviews.at}),),
                )
        except sqlite3.Error:
            # the broker sends the retained list again only at the next connection: held until the
            # disk takes it (:meth:`write_held`), the newest one only
            self._held_view = reviews
            raise
        self._held_view = None
        self._wrote()

    def collector_view(self) -> tuple[dict[str, ReviewedFinding], str | None]:
        """The collector's latest word per event id, and when it was given (None: never)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, state, reason, wrong, reviewed_at, contested, picture, picture_until FROM collector_view"
            ).fetchall()
            at = self._db.execute("SELECT value FROM state WHERE key = 'collector_view_at'").fetchone()
        view = {r[0]: _reviewed(r) for r in rows}
        try:
            when = json.loads(at[0])["at"] if at else None
        except (ValueError, KeyError, TypeError):
            when = None
        return view, when

    def prune(self, now: datetime) -> int:
        """Delete audit rows older than ``keep_days``; returns how many went.

        Retention is a promise to the worker, on a full card too, where a delete cannot even be
        written to SQLite's log: the rows go in batches, the log copied into the file between them
        (so that it is written over rather than grown), and at the first "disk full" the room kept
        for this (``disk_reserve_bytes``) is given back; it is taken again once the purge has
        given back the log's room (the log is emptied after a purge: no copy of what went)."""
        cutoff = rfc3339(now - timedelta(days=self.keep_days))
        gone = [0]
        released = False
        try:
            try:
                self._prune(cutoff, gone)
            except sqlite3.OperationalError as exc:
                if self._space is None or not is_disk_full(exc, self.path.parent) or not self._space.release():
                    raise
                released = True
                log.warning(
                    "audit trail: the disk is full (%s); gave back the %d KiB kept for this to delete what is past "
                    "retention",
                    exc,
                    self._space.size // 1024,
                )
                self._prune(cutoff, gone)
        finally:
            if gone[0]:
                with self._lock:
                    truncate_wal(self._db)
            if released and self._space is not None and not self._space.ensure(free_needed=self._space.size):
                log.warning("audit trail: no room yet to keep %d KiB for the next purge", self._space.size // 1024)
        if self._space is not None and not released:
            self._space.ensure()
        return gone[0]

    def _prune(self, cutoff: str, gone: list[int]) -> None:
        """Delete the rows before ``cutoff`` in batches of :data:`PRUNE_BATCH` (``gone[0]`` counts them)."""
        for table, column in (("scans", "started_at"), ("events", "at")):
            while True:
                with self._lock:
                    n = self._db.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE {column} < ? LIMIT ?)",
                        (cutoff, PRUNE_BATCH),
                    ).rowcount
                    if n:  # the next batch writes over the log instead of growing it
                        with contextlib.suppress(sqlite3.Error):
                            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                gone[0] += int(n)
                if n < PRUNE_BATCH:
                    break

    def expire_set_aside(self, now: datetime) -> int:
        """Delete an audit trail moved aside as unreadable (it holds scans and findings like
        this one) once ``keep_days`` old; returns how many files went."""
        gone = remove_set_aside(self.path, (now - timedelta(days=self.keep_days)).timestamp())
        for f in gone:
            log.info("retention: deleted %s (an unreadable audit trail kept for inspection)", f.name)
        return len(gone)

    # -- reading --------------------------------------------------------------------
    def recent(self, limit: int = 20, *, since: datetime | None = None) -> list[AuditEntry]:
        """The newest scans and pause events, newest first."""
        lo = rfc3339(since) if since else ""
        with self._lock:
            scans = self._db.execute(
                "SELECT scan_id, started_at, finished_at, trigger, outcome, frames, persons, bystanders,"
                " checks, findings, error FROM scans WHERE started_at >= ? ORDER BY started_at DESC LIMIT ?",
                (lo, limit),
            ).fetchall()
            events = self._db.execute(
                "SELECT at, kind, detail FROM events WHERE at >= ? ORDER BY at DESC, id DESC LIMIT ?",
                (lo, limit),
            ).fetchall()
        out = [
            AuditEntry(
                r[1],
                "scan",
                {
                    "scan_id": r[0],
                    "finished_at": r[2],
                    "trigger": r[3],
                    "outcome": r[4],
                    "frames": r[5],
                    "persons": r[6],
                    "bystanders": r[7],
                    "checks": json.loads(r[8]),
                    "findings": json.loads(r[9]),
                    "error": r[10],
                },
            )
            for r in scans
        ]
        out += [AuditEntry(r[0], r[1], json.loads(r[2])) for r in events]
        out.sort(key=lambda e: e.at, reverse=True)
        return out[:limit]


def _reviewed(r: tuple[Any, ...]) -> ReviewedFinding:
    return ReviewedFinding(
        event_id=r[0],
        state=r[1],
        reason=r[2],
        wrong=None if r[3] is None else bool(r[3]),
        reviewed_at=r[4],
        contested=bool(r[5]),
        picture=r[6],
        picture_until=r[7],
    )


def utc(ts: str) -> datetime:
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
