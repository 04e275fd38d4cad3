"""SQLite the way every deskwatch store uses it: one home for the pragmas, the
transaction idiom and recovery from a corrupt file.

- :func:`connect`: WAL, ``synchronous=FULL`` (a commit is on the disk when it returns:
  it survives a power cut, not only a killed process), autocommit mode so that
  :func:`transaction` controls every transaction, the file made 0600.
- :func:`transaction`: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error
  (SQLite may already have rolled back itself, e.g. on a full disk).
- :func:`open_or_recover`: a database that cannot be read (a failing SD card) is moved
  aside with its WAL, never deleted, and a fresh one is created; the caller says what
  was lost.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SIDE_FILES = ("", "-wal", "-shm")


def connect(path: str | os.PathLike[str], *, timeout: float = 30.0, foreign_keys: bool = False) -> sqlite3.Connection:
    """An autocommit connection with WAL and ``synchronous=FULL``; the file is made 0600."""
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        if foreign_keys:
            db.execute("PRAGMA foreign_keys=ON")
    except sqlite3.DatabaseError:
        db.close()
        raise
    with contextlib.suppress(OSError):  # not our file: leave its mode alone
        os.chmod(path, 0o600)
    return db


@contextmanager
def transaction(
    db: sqlite3.Connection, *, on_rollback: Callable[[], None] | None = None
) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed at the end of the block, rolled back on error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite may already have rolled back (e.g. disk full)
            db.execute("ROLLBACK")
        if on_rollback is not None:
            on_rollback()
        raise


def open_schema(path: Path, schema: str, probe: str) -> sqlite3.Connection:
    """:func:`connect`, create the ``schema``, and read ``probe`` to prove the file is sound."""
    db = connect(path)
    try:
        db.executescript(schema)
        db.execute(probe).fetchall()
    except sqlite3.DatabaseError:
        db.close()
        raise
    return db


def move_aside(path: Path, now: float | None = None) -> Path:
    """Rename ``path`` (and its WAL/SHM) to ``<name>.corrupt-<time>``; returns the new name."""
    aside = path.with_name(f"{path.name}.corrupt-{int(now if now is not None else time.time())}")
    for suffix in SIDE_FILES:
        src = path.with_name(path.name + suffix)
        if src.exists():
            src.rename(aside.with_name(aside.name + suffix))
    return aside


def open_or_recover(
    path: Path, schema: str, probe: str, *, now: float | None = None
) -> tuple[sqlite3.Connection, tuple[Path, str] | None]:
    """Open (and create) the database; if it is unreadable, move it aside and start afresh.

    Returns the connection and, when a corrupt file was moved, ``(where it went, why)``
    for the caller to log and report.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return open_schema(path, schema, probe), None
    except sqlite3.DatabaseError as exc:
        aside = move_aside(path, now)
        return open_schema(path, schema, probe), (aside, str(exc))
