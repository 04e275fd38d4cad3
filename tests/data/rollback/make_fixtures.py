"""Makes the checked-in files of this folder: state on the data partition as a NEWER
deskwatch would leave it when an update is rolled back to the slot that runs this code.

The A/B slots share /var/lib/deskwatch: after a failed health check the firmware starts
the old slot again, and its code reads what the new one wrote. Each fixture is a SQL dump
(text, so that a review shows what it holds) of a file made here from the schema as it
stands today plus what a later version might plausibly add, with rows such a version
wrote. The tests load the dump into a fresh file and start today's code on it.

    audit-newer-additive.sql        the audit trail after a version that added columns (with
                                    defaults or NULLable: a change older code can live with);
                                    stamped format 2, usable from format 1 on
    outbox-newer-compatible.sql     the outbox likewise (a column with a default, a new table, a
                                    new message kind): two events, an image, a scan record and a
                                    "metrics" message queued in it
    outbox-newer-incompatible.sql   the outbox after a change older code must not write into
                                    (every row needs a column it does not know): format 3,
                                    usable from format 3 on
    audit-newer-incompatible.sql    the audit trail likewise (format 3, from 3 on)

    templates-newer-format.npz        a worker's face templates as a newer version might store them
                                      (template format 3), tagged with today's tflite embedder:
                                      128 made-up numbers a row, no one's face
    collector-newer-compatible.sql    what a newer collector's migration did to the central
                                      database (both backends): a column added, schema_version 5,
                                      usable by collectors of version 1 on
    collector-newer-incompatible.sql  the same with compatible_from 5: older collectors must not use it

The stamp (deskwatch_contract.storeformat): PRAGMA user_version is the file's format, the
store_format row compatible_from the oldest format whose code may use it.

Run it from the repository root when the schema it starts from changes on purpose:
    PYTHONPATH=daemon:contract .venv/bin/python tests/data/rollback/make_fixtures.py
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent


def dump(db: sqlite3.Connection, path: Path, header: str) -> None:
    """The file as SQL: iterdump's statements, then the pragmas iterdump leaves out."""
    lines = [f"-- {line}".rstrip() for line in header.strip().splitlines()]
    lines += [f"-- made by {Path(__file__).name}; do not edit by hand", *db.iterdump()]
    user_version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if user_version:
        lines.append(f"PRAGMA user_version={user_version};")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def stamp(db: sqlite3.Connection, version: int, compatible_from: int) -> None:
    """What a newer deskwatch writes into the file (deskwatch_contract.storeformat)."""
    db.execute("CREATE TABLE IF NOT EXISTS store_format (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute("INSERT OR REPLACE INTO store_format VALUES ('compatible_from', ?)", (compatible_from,))
    db.execute(f"PRAGMA user_version = {version}")


def audit_newer_additive() -> tuple[sqlite3.Connection, str]:
    from deskwatch.audit import SCHEMA

    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    # what a later version might add: a column per table, each NULLable or with a default
    db.executescript(
        """
        ALTER TABLE scans ADD COLUMN model_sha256 TEXT;
        ALTER TABLE events ADD COLUMN source TEXT NOT NULL DEFAULT 'daemon';
        ALTER TABLE state ADD COLUMN updated_at TEXT;
        ALTER TABLE collector_view ADD COLUMN note TEXT;
        """
    )
    checks = json.dumps([{"rule": "phone_use", "outcome": "pass", "reason": None}])
    db.execute(
        "INSERT INTO scans VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            "scan-by-newer",
            "2026-11-30T09:00:00.000000Z",
            "2026-11-30T09:00:02.000000Z",
            "schedule",
            "ok",
            5,
            1,
            0,
            checks,
            "[]",
            None,
            "0" * 64,
        ),
    )
    db.execute(
        "INSERT INTO events (at, kind, detail, source) VALUES (?,?,?,?)",
        ("2026-11-30T09:05:00.000000Z", "pause", json.dumps({"reason": "fetch water", "minutes": 5}), "daemon"),
    )
    db.execute(
        "INSERT INTO state VALUES (?,?,?)",
        (
            "pause",
            json.dumps(
                {"reason": "fetch water", "minutes": 5, "started_at": "2026-11-30T09:05:00+00:00", "source": "local"}
            ),
            "2026-11-30T09:05:00Z",
        ),
    )
    stamp(db, 2, 1)
    db.commit()
    return db, "audit.sqlite3 as a newer version left it: a column added to each table, one scan and a pause"


def audit_newer_incompatible() -> tuple[sqlite3.Connection, str]:
    db, _ = audit_newer_additive()
    db.executescript(
        """
        ALTER TABLE scans ADD COLUMN worker_id TEXT;
        UPDATE scans SET worker_id = 'w-17';
        """
    )
    stamp(db, 3, 3)
    db.commit()
    return db, "audit.sqlite3 after a change older code must not write into: format 3, usable from 3 on"


def _queued_outbox() -> sqlite3.Connection:
    """An outbox as today's code queues it (two events, one with its image, a scan record),
    copied into memory."""
    from deskwatch.delivery.outbox import FILENAME, Outbox

    with tempfile.TemporaryDirectory() as tmp:
        box = Outbox(
            tmp, max_bytes=10_000_000, max_messages=10_000, max_age_days=20, wall_clock=lambda: 1_800_000_000.0
        )
        for n, image in ((1, b"\xff\xd8jpeg-by-newer\xff\xd9"), (2, None)):
            event = {"schema": "deskwatch.event/1", "event_id": f"e-newer-{n}", "type": "phone_use", "replayed": False}
            box.put_event(event, image)
        box.put("scan", "scan", {"schema": "deskwatch.scan/1", "scan_id": "scan-by-newer"})
        box.close()
        disk = sqlite3.connect(Path(tmp) / FILENAME)
        db = sqlite3.connect(":memory:")
        disk.backup(db)
        disk.close()
    return db


def outbox_newer_compatible() -> tuple[sqlite3.Connection, str]:
    db = _queued_outbox()
    db.executescript(
        """
        ALTER TABLE messages ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE IF NOT EXISTS delivery_log (at REAL NOT NULL, what TEXT NOT NULL);
        INSERT INTO delivery_log VALUES (1800000000.0, 'connected');
        INSERT INTO messages (kind, rank, topic, payload, qos, created, bytes, event_id, offline, props, priority)
            VALUES ('metrics', 1, 'metrics', CAST('{"schema": "deskwatch.metrics/1", "cpu": 0.4}' AS BLOB), 0,
                    1800000000.0, 43, NULL, 0, NULL, 0);
        """
    )
    stamp(db, 2, 1)
    db.commit()
    return (
        db,
        "outbox.sqlite3 as a newer version left it: messages.priority, a new table, a new kind; 4 messages + 1 image",
    )


def outbox_newer_incompatible() -> tuple[sqlite3.Connection, str]:
    db = _queued_outbox()
    db.executescript(
        """
        ALTER TABLE messages ADD COLUMN tenant TEXT;
        UPDATE messages SET tenant = 'site-1';
        """
    )
    stamp(db, 3, 3)
    db.commit()
    return db, "outbox.sqlite3 after a change older code must not write into: format 3, usable from 3 on"


def collector_newer(compatible_from: int) -> str:
    """Statements a newer collector's migration ran, on SQLite and PostgreSQL alike."""
    return "\n".join(
        [
            "ALTER TABLE events ADD COLUMN received_via TEXT;",
            "UPDATE meta SET value = '5' WHERE key = 'schema_version';",
            f"INSERT INTO meta (key, value) VALUES ('compatible_from', '{compatible_from}')"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value;",
        ]
    )


COLLECTOR = {
    "collector-newer-compatible.sql": ("the central database after a newer collector (schema 5) that only added", 1),
    "collector-newer-incompatible.sql": ("the central database after a newer collector older ones must not use", 5),
}


FIXTURES: dict[str, Callable[[], tuple[sqlite3.Connection, str]]] = {
    "audit-newer-additive.sql": audit_newer_additive,
    "audit-newer-incompatible.sql": audit_newer_incompatible,
    "outbox-newer-compatible.sql": outbox_newer_compatible,
    "outbox-newer-incompatible.sql": outbox_newer_incompatible,
}


EMBEDDER_SHA256 = "6ef63d2395e421113acd58d8da78c0eb1b27c2c251bf5cce43733457ea31b1da"  # models/manifest.yaml


def templates_newer_format(path: Path) -> None:
    import numpy as np

    rows = np.random.default_rng(3).normal(0.0, 0.1, size=(3, 128))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)  # a later format might keep unit vectors
    with path.open("wb") as fh:
        np.savez(
            fh,
            encodings=rows,
            source=np.array("make_fixtures.py"),
            backend=np.array("tflite"),
            model_sha256=np.array(EMBEDDER_SHA256),
            format=np.array(3),
        )


def main() -> None:
    for name, make in FIXTURES.items():
        db, header = make()
        dump(db, HERE / name, header)
        db.close()
        print(f"wrote {HERE / name}")
    templates_newer_format(HERE / "templates-newer-format.npz")
    print(f"wrote {HERE / 'templates-newer-format.npz'}")
    for name, (header, compatible_from) in COLLECTOR.items():
        lines = [
            f"-- {header}",
            f"-- made by {Path(__file__).name}; do not edit by hand",
            collector_newer(compatible_from),
        ]
        (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
