"""Makes the checked-in files of this folder: state on the data partition as a NEWER
deskwatch would leave it when an update is rolled back to the slot that runs this code.

The A/B slots share /var/lib/deskwatch: after a failed health check the firmware starts
the old slot again, and its code reads what the new one wrote. Each fixture is a SQL dump
(text, so that a review shows what it holds) of a file made here from the schema as it
stands today plus what a later version might plausibly add, with rows such a version
wrote. The tests load the dump into a fresh file and start today's code on it.

    audit-newer-additive.sql   the audit trail after a version that added columns (with
                               defaults or NULLable: a change older code can live with)

Run it from the repository root when the schema it starts from changes on purpose:
    PYTHONPATH=daemon:contract .venv/bin/python tests/data/rollback/make_fixtures.py
"""

from __future__ import annotations

import json
import sqlite3
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
    db.commit()
    return db, "audit.sqlite3 as a newer version left it: a column added to each table, one scan and a pause"


FIXTURES: dict[str, Callable[[], tuple[sqlite3.Connection, str]]] = {
    "audit-newer-additive.sql": audit_newer_additive,
}


def main() -> None:
    for name, make in FIXTURES.items():
        db, header = make()
        dump(db, HERE / name, header)
        db.close()
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
