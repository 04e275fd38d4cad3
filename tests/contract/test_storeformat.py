"""A store's format in its file: moved forward once and whole, a power cut in the middle
leaving the old format intact, and never lowered by older code."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from deskwatch_contract.sqlite import StoreFormat, StoreTooNew, open_schema
from deskwatch_contract.storeformat import stamped, statements

SCHEMA_1 = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL  -- what was noted; a semicolon; in a comment
);
"""
SCHEMA_3 = """
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL,
    words INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS tags (note INTEGER NOT NULL, tag TEXT NOT NULL);
"""
PROBE = "SELECT COUNT(*) FROM notes"
V1 = StoreFormat("notes", SCHEMA_1)
calls: list[int] = []


def count_words(db: sqlite3.Connection) -> None:
    calls.append(3)
    for row_id, text in db.execute("SELECT id, text FROM notes").fetchall():
        db.execute("UPDATE notes SET words = ? WHERE id = ?", (len(text.split()), row_id))


V3 = StoreFormat(
    "notes",
    SCHEMA_3,
    version=3,
    compatible_from=2,
    steps={2: "ALTER TABLE notes ADD COLUMN words INTEGER NOT NULL DEFAULT 0;", 3: count_words},
)


def at_v1(path: Path) -> None:
    db = open_schema(path, V1, PROBE)
    db.executemany("INSERT INTO notes (text) VALUES (?)", [("one two",), ("three four five",)])
    db.close()


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_a_new_file_and_a_file_from_before_formats_are_stamped(tmp_path: Path) -> None:
    open_schema(tmp_path / "new.db", V1, PROBE).close()
    assert read(tmp_path / "new.db", "PRAGMA user_version") == [(1,)]
    assert read(tmp_path / "new.db", "SELECT value FROM store_format WHERE key = 'compatible_from'") == [(1,)]
    calls.clear()
    open_schema(tmp_path / "new3.db", V3, PROBE).close()  # made at format 3 by its schema: no step runs
    assert calls == [] and read(tmp_path / "new3.db", "PRAGMA user_version") == [(3,)]
    old = sqlite3.connect(tmp_path / "old.db")  # made by code that stamped nothing
    old.executescript(SCHEMA_1 + "INSERT INTO notes (text) VALUES ('kept');")
    old.close()
    open_schema(tmp_path / "old.db", V3, PROBE).close()
    assert read(tmp_path / "old.db", "SELECT text, words FROM notes") == [("kept", 1)]
    assert read(tmp_path / "old.db", "PRAGMA user_version") == [(3,)]


def test_steps_run_once_in_order_and_the_file_says_its_new_format(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    at_v1(path)
    calls.clear()
    open_schema(path, V3, PROBE).close()
    open_schema(path, V3, PROBE).close()
    assert calls == [3]
    assert read(path, "SELECT text, words FROM notes ORDER BY id") == [("one two", 2), ("three four five", 3)]
    with sqlite3.connect(path) as db:
        assert stamped(db) == (3, 2)


def test_a_step_that_fails_leaves_the_file_at_its_format_whole(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    at_v1(path)

    def fails(db: sqlite3.Connection) -> None:
        db.execute("UPDATE notes SET text = 'half done'")
        raise OSError(28, "No space left on device")

    broken = StoreFormat("notes", SCHEMA_3, version=3, steps={2: V3.steps[2], 3: fails})
    with pytest.raises(OSError):
        open_schema(path, broken, PROBE)
    assert read(path, "PRAGMA user_version") == [(1,)]
    assert read(path, "SELECT * FROM notes ORDER BY id") == [(1, "one two"), (2, "three four five")]


def test_a_power_cut_in_the_middle_of_a_migration_leaves_the_old_format_and_the_next_start_finishes(
    tmp_path: Path,
) -> None:
    """The process dies (SIGKILL: as sudden as a power cut for SQLite's log) after step 2's ALTER
    and part of step 3's rewrite: nothing of it counts, and the next start migrates in full."""
    path = tmp_path / "notes.db"
    at_v1(path)
    child = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from deskwatch_contract.sqlite import StoreFormat, open_schema
        def dies(db):
            db.execute("UPDATE notes SET words = 99 WHERE id = 1")
            os.kill(os.getpid(), signal.SIGKILL)
        form = StoreFormat("notes", {SCHEMA_3!r}, version=3, compatible_from=2,
                           steps={{2: "ALTER TABLE notes ADD COLUMN words INTEGER NOT NULL DEFAULT 0", 3: dies}})
        open_schema(Path(sys.argv[1]), form, "SELECT 1")
        """
    )
    died = subprocess.run([sys.executable, "-c", child, str(path)], env=dict(os.environ), timeout=60)
    assert died.returncode == -9
    assert Path(f"{path}-wal").exists()  # the log holds the migration's pages, never committed
    assert read(path, "PRAGMA user_version") == [(1,)]
    assert [r[1] for r in read(path, "PRAGMA table_info(notes)")] == ["id", "text"]
    open_schema(path, V3, PROBE).close()
    assert read(path, "SELECT text, words FROM notes ORDER BY id") == [("one two", 2), ("three four five", 3)]


def test_older_code_uses_a_file_the_newer_one_allows_and_refuses_one_it_does_not(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    at_v1(path)
    open_schema(path, V3, PROBE).close()  # compatible_from 2: format 1 code must not use it
    with pytest.raises(StoreTooNew, match=r"format 3, which only code of format 2 or later may use"):
        open_schema(path, V1, PROBE)
    v2 = StoreFormat("notes", SCHEMA_1, version=2, steps={2: V3.steps[2]})
    open_schema(path, v2, PROBE).close()  # format 2 may: goes on, and leaves the format at 3
    with sqlite3.connect(path) as db:
        assert stamped(db) == (3, 2)


def test_statements_are_split_where_sqlite_ends_them() -> None:
    assert statements(SCHEMA_1 + "-- a last comment\n") == [SCHEMA_1.strip()]
    assert len(statements(SCHEMA_3)) == 2


def test_opening_a_file_at_this_format_writes_nothing(tmp_path: Path) -> None:
    """A full card must not keep the daemon from starting on its own files: a file from before
    formats is format 1 as it stands, and one at this format needs no stamp again."""
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(SCHEMA_1 + "INSERT INTO notes (text) VALUES ('kept');")
    old.close()
    changes = []
    for _ in range(2):
        db = open_schema(path, V1, PROBE)
        changes.append(db.total_changes)
        db.close()
    assert changes == [0, 0]
    assert read(path, "PRAGMA user_version") == [(0,)]


def test_a_tool_opening_a_store_at_its_format_takes_no_write_lock(tmp_path: Path) -> None:
    """`sudo deskwatch selftest` records its camera use in the trail the daemon writes: an open of a
    file at this format must not wait for the daemon's write transaction (nor need a writable disk)."""
    path = tmp_path / "notes.db"
    at_v1(path)
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # the daemon in the middle of a write
    try:
        db = open_schema(path, V1, PROBE)
        db.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
