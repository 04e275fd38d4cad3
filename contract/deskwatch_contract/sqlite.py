"""SQLite the way every deskwatch store uses it: one home for the pragmas, the
transaction idiom and recovery from a corrupt file.

- :func:`connect`: WAL, ``synchronous=FULL`` (a commit is on the disk when it returns:
  it survives a power cut, not only a killed process), autocommit mode so that
  :func:`transaction` controls every transaction, the file made 0600; opened by root in
  a directory another user owns, with that user's rights, so the file is that user's.
- :func:`transaction`: ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any error
  (SQLite may already have rolled back itself, e.g. on a full disk).
- :class:`StoreFormat` (:mod:`.storeformat`): the format written into the file, so that
  code rolled back to after an update tells a newer file it may use from one it must not.
- :func:`open_or_recover`: a database whose content is damaged (a failing SD card) is
  moved aside with its WAL and a fresh one is created; the caller says what was lost. A
  sound file that cannot be used *now* (a full disk, a file the service user may not
  open, a lock, an I/O error) is left exactly where it is and
  :class:`DatabaseUnavailable` says what to do: moving it aside would lose a sound queue.
- What was moved aside stays for inspection until its owner's retention removes it
  (:func:`remove_set_aside`): a file moved aside holds what the live one held, evidence
  and findings included, and must not outlive it. Its owner takes back what can still be
  read of it (:func:`read_back`: one bad page costs that page's rows, not the file's).
- ``secure_delete``: a store of evidence or findings has SQLite overwrite what it deletes,
  so that a row past retention cannot be read back from the card's free pages.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import re
import shutil
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from deskwatch_contract.fsowner import as_owner_of
from deskwatch_contract.storeformat import DatabaseUnavailable, StoreFormat, StoreTooNew, open_format

__all__ = ["DatabaseUnavailable", "StoreFormat", "StoreTooNew"]  # and the functions below

logger = logging.getLogger(__name__)

SIDE_FILES = ("", "-wal", "-shm")
# what move_aside names a file set aside (and its side files, and a read-back's copy of it), and
# what a newer deskwatch's file is moved to by hand after a rollback (storeformat.too_new says how)
SET_ASIDE = re.compile(r"\.(?:corrupt|newer)-(?P<at>\d+)")


# SQLite's primary result codes: the file's content is damaged (CORRUPT, NOTADB), no room (FULL),
# an I/O error (IOERR: on a full disk, growing the WAL index fails so)
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_NOTADB = 26
# below this much free space a failure to open is put down to a full disk
NEARLY_FULL_BYTES = 1 << 20


def is_damaged(exc: BaseException) -> bool:
    """A read or write failed because the file's content is corrupt (not locked, full,
    unreadable for lack of permission, an I/O error or a closed connection).

    Only SQLite's own verdict counts (``SQLITE_CORRUPT``, ``SQLITE_NOTADB``): every other
    error says nothing about the file, and taking it for damage moves a sound queue aside."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError) and code is not None and code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    )


def is_disk_full(exc: BaseException, where: Path) -> bool:
    """A write failed for lack of room on the file system holding ``where``."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, OSError):
        return exc.errno == errno.ENOSPC
    if not isinstance(exc, sqlite3.OperationalError) or code is None:
        return False
    if code & 0xFF == SQLITE_FULL:
        return True
    free = free_bytes(where)
    return code & 0xFF == SQLITE_IOERR and free is not None and free < NEARLY_FULL_BYTES


def connect(
    path: str | os.PathLike[str], *, timeout: float = 30.0, foreign_keys: bool = False, secure_delete: bool = False
) -> sqlite3.Connection:
    """An autocommit connection with WAL and ``synchronous=FULL``; the file is made 0600.
    ``secure_delete``: deleted content is overwritten with zeros (then :func:`truncate_wal`
    after a purge, so that the log keeps no copy of it either).

    Root opening a database in a directory another user owns (``sudo deskwatch selftest``
    recording its camera use in the service user's state directory) opens it with that
    user's rights (:func:`deskwatch_contract.fsowner.as_owner_of`): a file made there is that
    user's, as the service needs (a root-owned one would stop it, exit 69), and a link that
    user put there (``audit.sqlite3 -> /etc/nologin``) gets root nothing the user could not
    do. (SQLite opens the WAL and shared-memory files later, but never through a link, and
    as root gives them the database file's owner.)"""
    where = _directory(path)
    with as_owner_of(where) if where else contextlib.nullcontext():
        db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=timeout)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            if foreign_keys:
                db.execute("PRAGMA foreign_keys=ON")
            if secure_delete:
                db.execute("PRAGMA secure_delete=ON")
        except sqlite3.DatabaseError:
            db.close()
            raise
        with contextlib.suppress(OSError):  # not our file: leave its mode alone
            os.chmod(path, 0o600)
    return db


def connect_read_only(
    path: str | os.PathLike[str], *, timeout: float = 5.0, check_same_thread: bool = True
) -> sqlite3.Connection:
    """A reader's connection to a database a running daemon writes (``deskwatch history``
    reading the audit trail and the outbox): it never creates, changes or moves the file.

    The path is quoted in the ``file:`` URI: unquoted, a ``?`` or ``#`` in the state directory's
    path ended the file name there (the "read-only" open then created an empty file of that
    name, and read nothing), and a ``%41`` was read as ``A``, another directory's file. Root
    (``sudo deskwatch history``) reads with the directory owner's rights, as :func:`connect`
    writes (:func:`deskwatch_contract.fsowner.as_owner_of`): a link the service user put in the
    file's place gets root nothing that user could not read."""
    path = Path(os.path.abspath(os.fspath(path)))
    with as_owner_of(path.parent):
        return sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, check_same_thread=check_same_thread, timeout=timeout
        )


def _directory(path: str | os.PathLike[str]) -> str | None:
    """The directory a database file is in; None for an in-memory database or a URI."""
    text = os.fspath(path)
    return None if text == ":memory:" or text.startswith("file:") else os.path.dirname(os.path.abspath(text))


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


def truncate_wal(db: sqlite3.Connection) -> None:
    """Copy the write-ahead log into the file and empty it: the frames it kept of pages since
    overwritten (a deleted image's) are gone from the card. Best effort: a reader holding
    the log lets it be done next time."""
    with contextlib.suppress(sqlite3.Error):
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def open_schema(
    path: Path, schema: str | StoreFormat, probe: str, *, secure_delete: bool = False
) -> sqlite3.Connection:
    """:func:`connect`, create the ``schema``, and read ``probe`` to prove the file is sound.

    A :class:`StoreFormat` is written into the file and checked (:func:`.storeformat.open_format`):
    an older file is migrated forward in one transaction, a newer one this code may use is left at
    its format, and one it must not use raises :class:`StoreTooNew`, the file untouched."""
    db = connect(path, secure_delete=secure_delete)
    try:
        if isinstance(schema, StoreFormat):
            open_format(db, path, schema)
        else:
            db.executescript(schema)
        db.execute(probe).fetchall()
    except (sqlite3.DatabaseError, StoreTooNew):
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


def remove_set_aside(path: Path, before: float) -> list[Path]:
    """Delete what :func:`move_aside` set aside of ``path`` (the file, its WAL and SHM, and a
    read-back's copy of it) once the earliest time known for it is before ``before``
    (wall-clock seconds): when it was set aside (in its name), or its files' modification
    time, which an owner that knows what the file holds dates back to its oldest content.
    Returns the files deleted; one that cannot be deleted is tried again next time."""
    groups: dict[str, list[Path]] = {}
    for p in (*path.parent.glob(f"{path.name}.corrupt-*"), *path.parent.glob(f"{path.name}.newer-*")):
        m = SET_ASIDE.search(p.name)
        if m is not None:
            groups.setdefault(m["at"], []).append(p)
    gone: list[Path] = []
    for at, files in groups.items():
        times = [float(at)]
        for p in files:
            with contextlib.suppress(OSError):
                times.append(p.stat().st_mtime)
        if min(times) >= before:
            continue
        for p in files:
            with contextlib.suppress(OSError):
                p.unlink()
                gone.append(p)
    return gone


def date_back(aside: Path, oldest: float) -> None:
    """Date the files set aside as ``aside`` back to ``oldest`` (the oldest content read
    from them), for :func:`remove_set_aside`."""
    for suffix in SIDE_FILES:
        with contextlib.suppress(OSError):
            f = aside.with_name(aside.name + suffix)
            if f.exists() and f.stat().st_mtime > oldest:
                os.utime(f, (oldest, oldest))


def open_or_recover(
    path: Path, schema: str | StoreFormat, probe: str, *, now: float | None = None, secure_delete: bool = False
) -> tuple[sqlite3.Connection, tuple[Path, str] | None]:
    """Open (and create) the database; if its content is damaged, move it aside and start afresh.

    Returns the connection and, when a corrupt file was moved, ``(where it went, why)``
    for the caller to log and report. Raises :class:`DatabaseUnavailable` when the file
    cannot be used for any other reason; the file is then left as it was found.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise DatabaseUnavailable(path, why_unusable(path, exc)) from exc
    try:
        return open_schema(path, schema, probe, secure_delete=secure_delete), None
    except sqlite3.DatabaseError as exc:
        if not is_damaged(exc):
            raise DatabaseUnavailable(path, why_unusable(path, exc)) from exc
        damage = str(exc)
    db, aside = set_aside(path, schema, probe, damage, now=now, secure_delete=secure_delete)
    return db, (aside, damage)


def set_aside(
    path: Path,
    schema: str | StoreFormat,
    probe: str,
    damage: str,
    *,
    now: float | None = None,
    secure_delete: bool = False,
) -> tuple[sqlite3.Connection, Path]:
    """Move the damaged database ``path`` aside (:func:`move_aside`) and open a fresh one in its
    place; returns it and where the damaged one went. The caller has closed its connection.
    Raises :class:`DatabaseUnavailable`, the damaged file back where it was, when no fresh file
    can be made."""
    try:
        aside = move_aside(path, now)
    except OSError as exc:
        raise DatabaseUnavailable(path, why_unusable(path, exc)) from exc
    try:
        return open_schema(path, schema, probe, secure_delete=secure_delete), aside
    except sqlite3.DatabaseError as exc:
        # e.g. no room for a fresh file: put the damaged one back, so that the next start
        # reads back what it still holds instead of finding an empty file and no trace
        _put_back(path, aside)
        raise DatabaseUnavailable(
            path, f"{damage}, and no fresh file could be made: {why_unusable(path, exc)}"
        ) from exc


def read_back(
    aside: Path, tables: dict[str, str], max_misses: int = 64
) -> dict[str, tuple[list[tuple[Any, ...]], bool]]:
    """What can still be read of a database :func:`open_or_recover` moved aside: per table of
    ``tables`` (name -> columns, the first an integer key: ``id`` or ``rowid``), every readable
    row in key order and whether none was unreadable. It reads a copy (with the WAL, whose
    commits count), removed afterwards: the file kept for inspection stays as it was found.
    Nothing readable: every table empty and incomplete."""
    work = aside.with_name(aside.name + ".salvage")
    try:
        for suffix in SIDE_FILES[:2]:
            src = aside.with_name(aside.name + suffix)
            if src.exists():
                with open(src, "rb") as fin, open(work.with_name(work.name + suffix), "wb") as fout:
                    fout.write(fin.read())
        db = sqlite3.connect(str(work), isolation_level=None)
        try:
            return {table: readable_rows(db, table, columns, max_misses) for table, columns in tables.items()}
        finally:
            db.close()
    except (sqlite3.DatabaseError, OSError) as exc:
        logger.warning("nothing could be read back from %s: %s", aside, exc)
        return {table: ([], False) for table in tables}
    finally:
        for suffix in SIDE_FILES:
            with contextlib.suppress(OSError):
                work.with_name(work.name + suffix).unlink()


def readable_rows(
    db: sqlite3.Connection, table: str, columns: str, max_misses: int = 64
) -> tuple[list[tuple[Any, ...]], bool]:
    """Every row of ``table`` that can be read (``columns``, the first an integer key), in key
    order, and whether none was unreadable: a damaged stretch is skipped by probing further
    keys, so what follows it is kept too."""
    key = columns.split(",")[0].strip()
    try:
        top = int(db.execute(f"SELECT COALESCE(MAX({key}), 0) FROM {table}").fetchone()[0])
    except sqlite3.DatabaseError:
        top = 1 << 62
    rows: list[tuple[Any, ...]] = []
    if top == 0:  # read in full, and empty
        return rows, True
    after, complete, misses, step = 0, True, 0, 1
    while after < top and misses <= max_misses:
        try:
            for row in db.execute(f"SELECT {columns} FROM {table} WHERE {key} > ? ORDER BY {key}", (after,)):
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


def _put_back(path: Path, aside: Path) -> None:
    """Undo :func:`move_aside` after a fresh file could not be made (it holds nothing yet)."""
    for suffix in SIDE_FILES:
        with contextlib.suppress(OSError):
            path.with_name(path.name + suffix).unlink()
    for suffix in SIDE_FILES:
        src = aside.with_name(aside.name + suffix)
        with contextlib.suppress(OSError):
            if src.exists():
                src.rename(path.with_name(path.name + suffix))


def why_unusable(path: Path, exc: BaseException) -> str:
    """What keeps a (sound) database file from being used, and what to do about it."""
    me = _user(os.geteuid())
    kept = "it is left as it is (it is not damaged: nothing queued in it is lost)"
    if _read_only(path.parent):  # access(2) says EROFS too: no mode or owner would help
        return (
            f"cannot use {path}: the file system holding it is mounted read-only; {kept}. A storage error makes "
            "Linux remount an SD card read-only: check dmesg, and the card (fsck, or a new card) before starting again"
        )
    for p, mode, fix in (
        (path.parent, os.R_OK | os.W_OK | os.X_OK, "700"),
        *((path.with_name(path.name + suffix), os.R_OK | os.W_OK, "600") for suffix in SIDE_FILES),
    ):
        try:
            st = p.stat()
        except OSError:
            continue
        if os.access(p, mode, effective_ids=os.access in os.supports_effective_ids):
            continue
        owner = _user(st.st_uid)
        perms = f"mode {stat.S_IMODE(st.st_mode):04o}"
        if st.st_uid != os.geteuid():
            files = p if p == path.parent else path.with_name(path.name + "*")
            return (
                f"cannot use {path}: {p} is owned by {owner} ({perms}) and this service runs as {me}; {kept}. "
                f"Give it back to the service user (someone ran deskwatch as {owner}, e.g. with sudo?): "
                f"chown {me}: {files}, then start the service again"
            )
        return f"cannot use {path}: {p} has {perms}; {kept}. Give its owner access again: chmod {fix} {p}, then start again"
    free = free_bytes(path.parent)
    if is_disk_full(exc, path.parent) or (free is not None and free < NEARLY_FULL_BYTES):
        room = "" if free is None else f" ({free // 1024} KiB free)"
        return (
            f"cannot use {path}: the file system holding it is full{room}; {kept}. Free some space there "
            f"(old logs: journalctl --vacuum-size=50M; stray downloads), then start the service again ({exc})"
        )
    return (
        f"cannot use {path}: {exc}; {kept}. If another deskwatch process holds it, stop that one; "
        f"otherwise check the storage (dmesg) and start again"
    )


def disk_trouble(where: Path, exc: BaseException) -> str:
    """What keeps a running process from writing under ``where`` (the disk of ``exc``), and
    what to do about it: the same words as :func:`why_unusable`, for a write that failed
    while running (no restart is needed: it is tried again).

    ext4 turning itself read-only after a storage error (``errors=remount-ro``) may not show
    in the mount flags (statvfs) at all, and SQLite says only "disk I/O error": a file the
    directory refuses to take with EROFS says it."""
    if _read_only(where) or _refuses_files(where) == errno.EROFS:
        return (
            f"the file system holding {where} is read-only ({exc}); a storage error makes Linux remount an SD card "
            "read-only: check dmesg, and the card (fsck, or a new card)"
        )
    free = free_bytes(where)
    if is_disk_full(exc, where) or (free is not None and free < NEARLY_FULL_BYTES):
        room = "" if free is None else f", {free // 1024} KiB free"
        return (
            f"the file system holding {where} is full ({exc}{room}); free some space there "
            "(old logs: journalctl --vacuum-size=50M; stray downloads)"
        )
    return f"cannot write under {where} ({exc}); check the storage (dmesg)"


def _refuses_files(directory: Path) -> int | None:
    """The errno with which ``directory`` refuses a new (empty) file, or None if it takes one."""
    probe = directory / f".write-probe-{os.getpid()}"
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except OSError as exc:
        return exc.errno
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return None


def _read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def free_bytes(directory: Path) -> int | None:
    """Free bytes (for this user) on the file system holding ``directory`` (or its nearest parent)."""
    for p in (directory, *directory.parents):
        with contextlib.suppress(OSError):
            return shutil.disk_usage(p).free
    return None
