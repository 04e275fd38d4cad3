"""Reading back what can still be read from a damaged outbox file.

When the outbox cannot be read (a failing SD card), it is moved aside (kept for inspection
until retention removes it: ``Outbox.expire_set_aside``).
:func:`read_back` copies it (with its WAL, whose commits count) and reads its rows in id
order; a damaged stretch is skipped by probing further ids, so what follows it is kept
too. The copy is removed afterwards: the file kept for inspection stays as it was found.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from pathlib import Path
from typing import Any

from deskwatch_contract.sqlite import SIDE_FILES

logger = logging.getLogger(__name__)

ROW = "SELECT id, kind, topic, payload, qos, created, event_id, props FROM messages"


def read_back(aside: Path) -> tuple[list[tuple[Any, ...]], bool]:
    """Every readable row (id, kind, topic, payload, qos, created, event_id, props) of the
    moved-aside outbox ``aside``, and whether none was unreadable."""
    work = aside.with_name(aside.name + ".salvage")
    try:
        for suffix in SIDE_FILES[:2]:
            src = aside.with_name(aside.name + suffix)
            if src.exists():
                with open(src, "rb") as fin, open(work.with_name(work.name + suffix), "wb") as fout:
                    fout.write(fin.read())
        db = sqlite3.connect(str(work), isolation_level=None)
        try:
            return readable_rows(db)
        finally:
            db.close()
    except (sqlite3.DatabaseError, OSError) as exc:
        logger.warning("nothing could be read back from %s: %s", aside, exc)
        return [], False
    finally:
        for suffix in SIDE_FILES:
            with contextlib.suppress(OSError):
                work.with_name(work.name + suffix).unlink()


def readable_rows(db: sqlite3.Connection, max_misses: int = 64) -> tuple[list[tuple[Any, ...]], bool]:
    """Every row of ``messages`` that can be read, in id order, and whether none was unreadable."""
    try:
        top = int(db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0])
    except sqlite3.DatabaseError:
        top = 1 << 62
    rows: list[tuple[Any, ...]] = []
    after, complete, misses, step = 0, True, 0, 1
    while after < top and misses <= max_misses:
        try:
            for row in db.execute(ROW + " WHERE id > ? ORDER BY id", (after,)):
                rows.append(row)
                after, step = int(row[0]), 1
            return rows, complete
        except sqlite3.DatabaseError:
            # jump over the damaged stretch: each miss in a row doubles the step
            complete = False
            misses += 1
            after += step
            step *= 2
    return rows, False
