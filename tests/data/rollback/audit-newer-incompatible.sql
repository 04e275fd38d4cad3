-- audit.sqlite3 after a change older code must not write into: format 3, usable from 3 on
-- made by make_fixtures.py; do not edit by hand
BEGIN TRANSACTION;
CREATE TABLE collector_view (
    event_id      TEXT PRIMARY KEY,
    state         TEXT NOT NULL,
    reason        TEXT,
    wrong         INTEGER,
    reviewed_at   TEXT,
    contested     INTEGER NOT NULL,
    picture       TEXT NOT NULL,
    picture_until TEXT
, note TEXT);
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    detail  TEXT NOT NULL
, source TEXT NOT NULL DEFAULT 'daemon');
INSERT INTO "events" VALUES(1,'2026-11-30T09:05:00.000000Z','pause','{"reason": "fetch water", "minutes": 5}','daemon');
CREATE TABLE scans (
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
, model_sha256 TEXT, worker_id TEXT);
INSERT INTO "scans" VALUES('scan-by-newer','2026-11-30T09:00:00.000000Z','2026-11-30T09:00:02.000000Z','schedule','ok',5,1,0,'[{"rule": "phone_use", "outcome": "pass", "reason": null}]','[]',NULL,'0000000000000000000000000000000000000000000000000000000000000000','w-17');
CREATE TABLE state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
, updated_at TEXT);
INSERT INTO "state" VALUES('pause','{"reason": "fetch water", "minutes": 5, "started_at": "2026-11-30T09:05:00+00:00", "source": "local"}','2026-11-30T09:05:00Z');
CREATE TABLE store_format (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO "store_format" VALUES('compatible_from',3);
CREATE INDEX scans_started ON scans(started_at);
CREATE INDEX events_at ON events(at);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('events',1);
COMMIT;
PRAGMA user_version=3;
