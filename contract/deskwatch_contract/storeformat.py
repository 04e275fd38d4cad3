"""The format of a deskwatch SQLite store, written into the file, so that an older deskwatch
can tell what a newer one left on the data partition.

The appliance's A/B slots share ``/var/lib/deskwatch``: when an update fails its health
check the firmware starts the old slot again, and its code opens the outbox, the audit
trail and the counters as the new code left them. Each file therefore says two numbers:

- ``PRAGMA user_version``: the format it is at (the newest code that migrated it);
- ``store_format.compatible_from``: the oldest format whose code may still read and write it.

A later version that only adds (a table, a NULLable column or one with a default: older
code naming its columns never notices) raises the format and keeps ``compatible_from``: the
older code rolled back to goes on with the file as it is, and never lowers its format. A
change older code would get wrong (a column it must fill, a meaning changed) raises
``compatible_from`` too: the older code then refuses the file (:class:`StoreTooNew`) with
what happened and what to do, changing and deleting nothing.

What counts as "only adds" is what older code never notices. A new message ``kind`` in the
outbox is, for code from this one on (it leaves such a row in the queue for the newer
version; older code took it for damage and counted it lost); a new meaning of an existing
value is not. Raising ``compatible_from`` has a price on the appliance:
the old slot's daemon, started again after a failed trial, refuses the file and stays down
(exit 69) until a technician acts - and the daemon is what takes the next update job. So a
release should raise it only in a step it runs once its update is committed, not at its
first start on the trial slot.

Moving forward (:func:`open_format`) runs each step from the file's format to this code's
in **one** SQLite transaction with the new stamp (SQLite's DDL is transactional): a power
cut in the middle leaves the file at its old format, whole, and the next start runs the
steps again. A file from before formats were stamped (``user_version`` 0 with tables in
it) is format 1, usable from format 1 on; it is stamped by its first migration.
"""

from __future__ import annotations

import logging
import shlex
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# A step: SQL (one or more statements) or a function given the connection, inside the transaction.
Step = str | Callable[[sqlite3.Connection], None]
TABLE = "store_format"


@dataclass(frozen=True)
class StoreFormat:
    """What this code writes into a store's file."""

    name: str  # what the messages call the store: "outbox", "audit trail"
    schema: str  # the tables and indexes of ``version`` (CREATE ... IF NOT EXISTS)
    version: int = 1
    compatible_from: int = 1  # the oldest format whose code may use a file this code wrote
    # version -> what turns a file at version - 1 into one at version (run once, in the stamp's transaction)
    steps: Mapping[int, Step] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = [v for v in range(2, self.version + 1) if v not in self.steps]
        if missing or not 1 <= self.compatible_from <= self.version:
            raise ValueError(f"{self.name}: format {self.version} needs steps {missing}, compatible_from <= version")


class DatabaseUnavailable(Exception):
    """A database file that may well be sound cannot be used now (full disk, permissions,
    a lock, an I/O error, a newer format). It was left in place; the message names it and
    what to do. (Here rather than in :mod:`.sqlite`, which uses this module, for
    :class:`StoreTooNew`; :mod:`.sqlite` exports it too.)"""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path = path


class StoreTooNew(DatabaseUnavailable):
    """A newer deskwatch wrote this file in a format this code must not use. Nothing was changed."""

    def __init__(self, path: Path, message: str, *, found: int, compatible_from: int) -> None:
        super().__init__(path, message)
        self.found = found
        self.compatible_from = compatible_from


def statements(script: str) -> list[str]:
    """The statements of ``script`` one by one (``executescript`` would commit the transaction first)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip().strip(";").strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip() and not all(part.strip().startswith("--") for part in buf.strip().splitlines()):
        out.append(buf.strip())
    return out


def _run(db: sqlite3.Connection, step: Step) -> None:
    if callable(step):
        step(db)
    else:
        for stmt in statements(step):
            db.execute(stmt)


def stamped(db: sqlite3.Connection) -> tuple[int, int | None]:
    """(the file's format, its compatible_from or None when it has none): format 0 is an empty file."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    compatible: int | None = None
    try:
        row = db.execute(f"SELECT value FROM {TABLE} WHERE key = 'compatible_from'").fetchone()
        compatible = int(row[0]) if row else None
    except sqlite3.OperationalError:  # no such table: stamped by no one
        pass
    if version == 0 and db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]:
        version = 1  # made before formats were stamped
    return version, compatible


def too_new(path: Path, form: StoreFormat, found: int, compatible_from: int | None) -> StoreTooNew:
    """The refusal: what the file is, why this code will not touch it, and what to do."""
    need = compatible_from if compatible_from is not None else found
    # the second way out, as commands: the names deskwatch_contract.sqlite.remove_set_aside purges
    # at retention (the file holds findings and images: no copy of it may outlive retention)
    aside = path.with_name(f"{path.name}.newer-{int(time.time())}")
    # with its log and index, where they are (SQLite removes them when the last connection closes)
    moves = (
        f'for s in "" -wal -shm; do [ ! -e {shlex.quote(str(path))}"$s" ] || '
        f'mv {shlex.quote(str(path))}"$s" {shlex.quote(str(aside))}"$s"; done'
    )
    return StoreTooNew(
        path,
        f"{path} ({form.name}) was written by a newer deskwatch: it is at format {found}, which only code of "
        f"format {need} or later may use, and this deskwatch writes format {form.version}. This happens when an "
        f"update was rolled back to the slot that runs now (`deskwatch update status` says). Nothing in it was "
        f"changed or deleted. To go on: install the newer version again at the device, `sudo deskwatch update "
        f"install BUNDLE` (not an update job: jobs reach the device through the daemon, which does not run on this "
        f"file), which uses it as it is; or, to run this version and give up "
        f"what the newer one kept in it, move it aside as root: {moves} - and start the service again (the "
        f"file moved aside is deleted at retention, like a damaged one)",
        found=found,
        compatible_from=need,
    )


def check_readable(db: sqlite3.Connection, path: Path, form: StoreFormat) -> None:
    """For a reader that changes nothing (``deskwatch history``): raise :class:`StoreTooNew` when
    the file is at a format this code must not read. A file that cannot be read at all is left
    to the reader's own reads to report."""
    try:
        found, compatible = stamped(db)
    except sqlite3.Error:
        return
    if found > form.version and (compatible is None or compatible > form.version):
        raise too_new(path, form, found, compatible)


def open_format(db: sqlite3.Connection, path: Path, form: StoreFormat) -> int:
    """Bring the file open on ``db`` (autocommit) to ``form``: create it, migrate it forward in one
    transaction, or leave a newer compatible one as it is. Returns the format the file was at
    (0: new). Raises :class:`StoreTooNew` (nothing written) for a newer incompatible one.

    A file at this format (every open but the first after an update) takes no write lock and
    writes nothing, as before formats: a tool opening the trail while the daemon writes does not
    wait for it, and a full or read-only disk does not stop the open."""
    found, compatible = stamped(db)
    if found >= form.version:
        if found > form.version:
            if compatible is None or compatible > form.version:
                raise too_new(path, form, found, compatible)
            logger.warning(
                "%s (%s) is at format %d, written by a newer deskwatch (an update rolled back?); it says format %d "
                "code may use it, and this one (format %d) does, leaving its format as it is",
                path,
                form.name,
                found,
                compatible,
                form.version,
            )
        for stmt in statements(form.schema):  # its tables are there; ours are made if not (no-ops)
            db.execute(stmt)
        return found
    db.execute("BEGIN IMMEDIATE")
    try:
        found, compatible = stamped(db)  # again, under the lock: another process may have got here first
        if found >= form.version:
            db.execute("COMMIT")
            return open_format(db, path, form)
        if found:  # 0: a new file, made at this format by the schema
            for version in range(found + 1, form.version + 1):
                _run(db, form.steps[version])
        for stmt in statements(form.schema):  # a new file's tables, and what a step left to the schema
            db.execute(stmt)
        _stamp(db, form)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return found


def _stamp(db: sqlite3.Connection, form: StoreFormat) -> None:
    db.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
    db.execute(
        f"INSERT INTO {TABLE} (key, value) VALUES ('compatible_from', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (form.compatible_from,),
    )
    db.execute(f"PRAGMA user_version = {int(form.version)}")
