"""One storage interface, two backends: SQLite (embedded default) and PostgreSQL.

Both run the same SQL (``?`` placeholders, ``ON CONFLICT`` upserts, window functions);
only the DDL's column types differ (``{serial}``, ``{blob}``, ``{real}``). Work happens in
:meth:`Store.transaction`, which yields a :class:`Tx` and commits when the block ends, so
the subscriber can acknowledge MQTT messages strictly after their rows are durable.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import re
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deskwatch_contract.sqlite import connect as sqlite_connect

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
# The oldest schema version whose collectors may still run on a database this one leaves
# (``meta.compatible_from``). Collectors of several releases share one database during a
# rolling upgrade and after one is rolled back: every change so far only added (a column
# NULLable or with a default, a table, an index), which older collectors, naming their
# columns, never notice. A release whose change older collectors would get wrong (a column
# every row must fill, a meaning changed) raises this, and they then refuse to start
# (:class:`SchemaTooNew`) instead of writing rows the newer ones misread. ``schema_version``
# is never lowered: an older collector leaves the newer one's number as it found it.
COMPATIBLE_FROM = 1
# How often a running collector's writer looks whether a newer one closed the schema to it.
SCHEMA_CHECK_SECONDS = 30.0

# Columns added after version 1, per version: (table, column, declaration). A fresh
# database gets them from the DDL; an older one gets them in :meth:`Store.migrate`.
ADDED_COLUMNS: dict[int, list[tuple[str, str, str]]] = {
    2: [
        ("users", "disabled", "INTEGER NOT NULL DEFAULT 0"),
        ("rejects", "source", "TEXT"),
        ("rejects", "raw", "{blob}"),
    ],
    3: [("users", "holder_since", "{real}")],
    4: [("sessions", "last_seen_at", "{real}")],
}

DDL = """
CREATE TABLE IF NOT EXISTS events (
    id {serial},
    event_id TEXT NOT NULL UNIQUE,
    site TEXT NOT NULL,
    device_id TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    type TEXT NOT NULL,
    scan_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    detected_at TEXT NOT NULL,
    detected_ts {real} NOT NULL,
    confidence {real} NOT NULL,
    replayed INTEGER NOT NULL,
    evidence_sha256 TEXT,
    evidence_reason TEXT,
    payload TEXT NOT NULL,
    received_at {real} NOT NULL,
    stored_at {real} NOT NULL,
    review_state TEXT NOT NULL DEFAULT 'open',
    review_note TEXT,
    reviewed_by TEXT,
    reviewed_at {real},
    contest_note TEXT,
    contested_by TEXT,
    contested_at {real}
);
CREATE INDEX IF NOT EXISTS events_site_id ON events (site, id);
CREATE INDEX IF NOT EXISTS events_device_seq ON events (site, device_id, seq);
CREATE TABLE IF NOT EXISTS evidence (
    event_id TEXT PRIMARY KEY,
    site TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    data {blob} NOT NULL,
    state TEXT NOT NULL,
    captured_ts {real} NOT NULL,
    received_at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS evidence_captured ON evidence (captured_ts);
CREATE INDEX IF NOT EXISTS evidence_state ON evidence (state);
CREATE TABLE IF NOT EXISTS evidence_deletions (
    id {serial},
    event_id TEXT NOT NULL,
    site TEXT NOT NULL,
    device_id TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    captured_ts {real} NOT NULL,
    deleted_at {real} NOT NULL,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS scans (
    site TEXT NOT NULL,
    device_id TEXT NOT NULL,
    scan_id TEXT NOT NULL,
    trigger TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    outcome TEXT NOT NULL,
    findings TEXT NOT NULL,
    replayed INTEGER NOT NULL,
    payload TEXT NOT NULL,
    received_at {real} NOT NULL,
    PRIMARY KEY (site, device_id, scan_id)
);
CREATE TABLE IF NOT EXISTS devices (
    site TEXT NOT NULL,
    device_id TEXT NOT NULL,
    state TEXT,
    session BIGINT,
    version TEXT,
    profile TEXT,
    since TEXT,
    reasons TEXT,
    status_at {real},
    health TEXT,
    health_at {real},
    last_seq BIGINT NOT NULL DEFAULT 0,
    seq_before BIGINT,
    last_event_at {real},
    PRIMARY KEY (site, device_id)
);
CREATE TABLE IF NOT EXISTS seq_gaps (
    id {serial},
    site TEXT NOT NULL,
    device_id TEXT NOT NULL,
    after_seq BIGINT NOT NULL,
    got_seq BIGINT NOT NULL,
    seen_at {real} NOT NULL
);
CREATE TABLE IF NOT EXISTS rejects (
    id {serial},
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at {real} NOT NULL,
    source TEXT,
    raw {blob}
);
CREATE INDEX IF NOT EXISTS rejects_source ON rejects (source, received_at);
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL,
    sites TEXT NOT NULL,
    worker_id TEXT,
    created_at {real} NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    holder_since {real}
);
CREATE TABLE IF NOT EXISTS worker_holders (
    site TEXT NOT NULL,
    worker_id TEXT NOT NULL,
    since {real} NOT NULL,
    recorded_at {real} NOT NULL,
    PRIMARY KEY (site, worker_id, since)
);
CREATE TABLE IF NOT EXISTS sessions (
    token_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    expires_at {real} NOT NULL,
    last_seen_at {real}
);
CREATE TABLE IF NOT EXISTS signin_failures (
    attempt TEXT NOT NULL,
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    at {real} NOT NULL
);
CREATE INDEX IF NOT EXISTS signin_failures_key ON signin_failures (kind, key, at);
CREATE INDEX IF NOT EXISTS signin_failures_attempt ON signin_failures (attempt);
CREATE TABLE IF NOT EXISTS signin_known (
    username TEXT NOT NULL,
    address TEXT NOT NULL,
    seen_at {real} NOT NULL,
    PRIMARY KEY (username, address)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

TYPES = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "real": "REAL"},
    "postgresql": {
        "serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
        "blob": "BYTEA",
        "real": "DOUBLE PRECISION",
    },
}


class StoreUnavailable(Exception):
    """The database could not store or read: it is busy, unreachable, full, failing or read-only.

    ``kind`` says which (``busy``, ``unreachable``, ``disk_full``, ``io_error``, ``read_only``,
    ``corrupt``, ``failed``). Nothing was committed; the work may be retried later, and the
    caller must not acknowledge anything it was storing.
    """

    def __init__(self, message: str, kind: str = "unreachable") -> None:
        super().__init__(message)
        self.kind = kind


class Tx:
    """One open transaction. SQL uses ``?`` placeholders on both backends."""

    def __init__(self, cursor: Any, paramstyle: str) -> None:
        self._cur = cursor
        self._pg = paramstyle == "format"

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self._pg else sql

    @property
    def for_update(self) -> str:
        """`` FOR UPDATE`` on PostgreSQL (SQLite's write transactions are serialised already)."""
        return " FOR UPDATE" if self._pg else ""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cur.execute(self._sql(sql), tuple(params))
        return int(self._cur.rowcount)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> int:
        """Run one statement for many parameter rows (pipelined on PostgreSQL); total rows changed."""
        self._cur.executemany(self._sql(sql), [tuple(p) for p in params])
        return max(0, int(self._cur.rowcount))

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(self._sql(sql), tuple(params))
        return [tuple(r) for r in self._cur.fetchall()]

    def one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self.rows(sql, params)
        return rows[0] if rows else None


class SchemaTooNew(Exception):
    """A newer collector's database, which it says this release must not use. Nothing was changed."""


class Store:
    """A small connection pool plus the schema. Use :func:`open_store` to get one."""

    backend = "?"
    paramstyle = "qmark"
    # What protects a commit, as the last new connection found it (PostgreSQL; see
    # PostgresStore._check_durability); None where a standby does not apply (SQLite).
    replication: str | None = None

    def __init__(self, pool_size: int = 4) -> None:
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._made = 0
        self._max = pool_size
        self._lock = threading.Lock()
        self._closed = False

    # -- backend hooks --------------------------------------------------------------------
    def _connect(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any, write: bool) -> Any:
        raise NotImplementedError

    def _failure_kind(self, exc: BaseException) -> str | None:
        """What kind of storage failure ``exc`` is, or None when it is not one (a bug, bad data)."""
        raise NotImplementedError

    # -- pool -----------------------------------------------------------------------------
    def _take(self) -> Any:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            grow = self._made < self._max
            if grow:
                self._made += 1
        if grow:
            try:
                return self._connect()
            except BaseException:
                with self._lock:
                    self._made -= 1
                raise
        return self._pool.get(timeout=30)

    def _give(self, conn: Any, broken: bool) -> None:
        if broken or self._closed:
            with self._lock:
                self._made -= 1
            with contextlib.suppress(Exception):
                conn.close()
            return
        self._pool.put(conn)

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Tx]:
        """Run a block in one transaction; commit at the end, roll back on error.

        Raises :class:`StoreUnavailable` for every storage failure (the connection is then
        dropped, so the next transaction starts on a fresh one).
        """
        try:
            conn = self._take()
        except Exception as exc:
            kind = self._failure_kind(exc)
            if kind is not None:
                self._discard_idle()  # no server to connect to: the idle connections are stale too
                raise StoreUnavailable(_one_line(exc), kind) from exc
            raise
        broken = False
        try:
            cur = self._begin(conn, write)
            try:
                yield Tx(cur, self.paramstyle)
                conn.commit()
            except BaseException:
                try:
                    conn.rollback()
                except Exception:
                    broken = True
                raise
            finally:
                cur.close()
        except Exception as exc:
            kind = self._failure_kind(exc)
            if kind is not None:
                broken = True
                if kind in ("unreachable", "read_only"):
                    # The server died or was demoted: the idle connections point at it too.
                    # Dropped now, the next transaction connects afresh (to the new primary)
                    # instead of failing once per stale connection, each failure a backoff.
                    self._discard_idle()
                raise StoreUnavailable(_one_line(exc), kind) from exc
            raise
        finally:
            self._give(conn, broken)

    def _discard_idle(self) -> None:
        while True:
            try:
                conn = self._pool.get_nowait()
            except queue.Empty:
                return
            self._give(conn, broken=True)

    def _columns(self, tx: Tx, table: str) -> set[str]:
        raise NotImplementedError

    def _lock_schema(self, tx: Tx) -> None:
        """Serialise :meth:`migrate` between collectors starting together (PostgreSQL)."""

    def lock(self, tx: Tx, what: int) -> None:
        """Serialise write transactions that take the same ``what`` until they end, across
        collectors (PostgreSQL: an advisory lock; SQLite's write transactions are serialised)."""

    def migrate(self) -> None:
        statements = [s.strip() for s in DDL.format(**TYPES[self.backend]).split(";") if s.strip()]
        tables = [s for s in statements if not s.startswith("CREATE INDEX")]
        indexes = [s for s in statements if s.startswith("CREATE INDEX")]
        with self.transaction() as tx:
            self._lock_schema(tx)
            for stmt in tables:
                tx.execute(stmt)
            row = tx.one("SELECT value FROM meta WHERE key = 'schema_version'")
            version = int(row[0]) if row else SCHEMA_VERSION
            row = tx.one("SELECT value FROM meta WHERE key = 'compatible_from'")
            compatible = int(row[0]) if row else None
            self._check_not_too_new(version, compatible)
            for target in sorted(v for v in ADDED_COLUMNS if v > version):
                for table, column, decl in ADDED_COLUMNS[target]:
                    if column not in self._columns(tx, table):
                        decl = decl.format(**TYPES[self.backend])
                        tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            for stmt in indexes:  # after the columns they may name
                tx.execute(stmt)
            for key, value in (
                ("schema_version", max(version, SCHEMA_VERSION)),
                ("compatible_from", max(compatible or COMPATIBLE_FROM, COMPATIBLE_FROM)),
            ):
                tx.execute(
                    "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, str(value)),
                )

    def check_schema(self, tx: Tx) -> None:
        """Raise :class:`SchemaTooNew` when a newer collector has closed the schema to this release
        since it started: in a rolling upgrade the newer release migrates while older ones still
        ingest (the writer asks every :data:`SCHEMA_CHECK_SECONDS`, in its batch's transaction)."""
        meta = dict(tx.rows("SELECT key, value FROM meta WHERE key IN ('schema_version', 'compatible_from')"))
        version = int(meta.get("schema_version", SCHEMA_VERSION))
        compatible = int(meta["compatible_from"]) if "compatible_from" in meta else None
        if version > SCHEMA_VERSION and (compatible is None or compatible > SCHEMA_VERSION):
            self._check_not_too_new(version, compatible)

    def _check_not_too_new(self, version: int, compatible: int | None) -> None:
        """Raise :class:`SchemaTooNew` when a newer collector left a schema this one must not use."""
        if version <= SCHEMA_VERSION:
            return
        if compatible is not None and compatible <= SCHEMA_VERSION:
            logger.warning(
                "collector database at schema version %d (a newer collector's); it says collectors of version %d "
                "on may use it, and this one (version %d) does, leaving its version as it is",
                version,
                compatible,
                SCHEMA_VERSION,
            )
            return
        need = compatible if compatible is not None else version
        raise SchemaTooNew(
            f"the collector database is at schema version {version}, written by a newer deskwatch-collector, and "
            f"says collectors before schema version {need} must not use it; this collector knows version "
            f"{SCHEMA_VERSION}. Nothing was changed. Run the newer release here too (in a rolling upgrade: upgrade "
            "this node rather than start the old release again); to go back to this release, restore the "
            "database from the backup taken before the upgrade"
        )

    def close(self) -> None:
        self._closed = True
        self._discard_idle()


class SqliteStore(Store):
    backend = "sqlite"
    paramstyle = "qmark"

    def __init__(self, path: Path, pool_size: int = 4) -> None:
        super().__init__(pool_size)
        self.path = path
        # Photos and password hashes: a directory we create is 0700, the file 0600 from the
        # first byte (SQLite gives its -wal and -shm files the database file's mode).
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite_connect(self.path, timeout=15.0, foreign_keys=True)
        return conn

    def _begin(self, conn: Any, write: bool) -> Any:
        cur = conn.cursor()
        cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        return cur

    def _failure_kind(self, exc: BaseException) -> str | None:
        if not isinstance(exc, (sqlite3.OperationalError, sqlite3.DatabaseError)) or isinstance(
            exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError)
        ):
            return None
        name = getattr(exc, "sqlite_errorname", "") or ""
        for prefix, kind in SQLITE_KINDS:
            if name.startswith(prefix):
                return kind
        return "failed"

    def _columns(self, tx: Tx, table: str) -> set[str]:
        return {str(r[1]) for r in tx.rows(f"PRAGMA table_info({table})")}


class PostgresStore(Store):
    """PostgreSQL through libpq. A DSN may name a primary and its standbys
    (``postgresql://u@h1:5432,h2:5432/db``): libpq tries them in order and, with
    ``target_session_attrs=read-write`` (added here when a DSN with several hosts does not
    say), keeps only the one that takes writes, so after a failover the next connection
    finds the promoted standby. Each new connection checks what a commit waits for
    (:meth:`_check_durability`)."""

    backend = "postgresql"
    paramstyle = "format"

    def __init__(self, dsn: str, pool_size: int = 4) -> None:
        super().__init__(pool_size)
        import psycopg  # optional dependency: the ``collector`` extra

        self._psycopg = psycopg
        self.dsn, self.hosts = writer_dsn(dsn)

    def _connect(self) -> Any:
        conn = self._psycopg.connect(self.dsn, autocommit=False)  # timeouts: CONNECTION_DEFAULTS
        try:
            self._check_durability(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        return conn

    def _check_durability(self, conn: Any) -> None:
        """Make a commit wait at least for this server's disk, and say whether it also waits
        for a standby: an acknowledgement means the rows survive a failover only then."""
        row = conn.execute(
            "SELECT current_setting('synchronous_commit'), current_setting('synchronous_standby_names'),"
            " (SELECT count(*) FROM pg_stat_replication), host(inet_server_addr()), inet_server_port()"
        ).fetchone()
        commit_mode, standby_names, standbys, addr, port = row
        if commit_mode in ("off", "local"):
            # "off" acknowledges before the commit is on any disk; "local" never waits for the
            # synchronous standby the server names. The collector acknowledges after commit:
            # its own sessions wait (the server's other clients keep their setting).
            conn.execute("SET synchronous_commit = on")
        conn.commit()
        server = f"{addr}:{port}" if addr else "(Unix socket)"
        if standby_names.strip():
            state = "synchronous" if standbys else "synchronous_no_standby"
        elif standbys:
            state = "asynchronous"
        else:  # alone: expected with one host; after a failover, until a new standby is attached
            state = "no_standby" if self.hosts > 1 else "single_server"
        self.replication = state
        _say_durability(server, state, commit_mode, standby_names, int(standbys))

    def _begin(self, conn: Any, write: bool) -> Any:
        return conn.cursor()

    def _failure_kind(self, exc: BaseException) -> str | None:
        errors = self._psycopg
        if isinstance(exc, errors.InterfaceError):
            return "unreachable"
        if not isinstance(exc, errors.DatabaseError) or isinstance(
            exc, (errors.DataError, errors.IntegrityError, errors.ProgrammingError)
        ):
            return None
        state = getattr(exc, "sqlstate", None) or ""
        for prefix, kind in PG_KINDS:
            if state.startswith(prefix):
                return kind
        return "unreachable" if isinstance(exc, errors.OperationalError) else "failed"

    def _columns(self, tx: Tx, table: str) -> set[str]:
        rows = tx.rows("SELECT column_name FROM information_schema.columns WHERE table_name = ?", (table,))
        return {str(r[0]) for r in rows}

    def _lock_schema(self, tx: Tx) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(1415926535)")

    def lock(self, tx: Tx, what: int) -> None:
        tx.execute("SELECT pg_advisory_xact_lock(?)", (what,))


# libpq settings the collector needs and a DSN may not give; a DSN's own value wins.
# connect_timeout: per host, so a hung host listed first costs this much per new connection
# before the next host is tried (measured: 10 s each with 10). keepalives_* and
# tcp_user_timeout: a host that dies without closing its connections (power, network)
# would otherwise hold a commit until TCP gives up (~15 min with tcp_retries2 = 15); with
# these the connection fails within ~30 s and the batch goes to the new primary.
CONNECTION_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}


def writer_dsn(dsn: str) -> tuple[str, int]:
    """(the DSN to connect with, how many hosts it names). Adds :data:`CONNECTION_DEFAULTS`
    the DSN does not set and, with several hosts and no ``target_session_attrs``,
    ``read-write``: libpq would otherwise settle on the first host that answers, a standby
    perhaps, and every write would fail there while the primary is up."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(dsn)
    hosts = len(str(params.get("host") or "").split(","))
    extra = {k: v for k, v in CONNECTION_DEFAULTS.items() if k not in params}
    if hosts > 1 and "target_session_attrs" not in params:
        extra["target_session_attrs"] = "read-write"
    return (make_conninfo(dsn, **extra) if extra else dsn), hosts


_durability_lock = threading.Lock()
_durability_said: tuple[str, str] | None = None


def _say_durability(server: str, state: str, commit_mode: str, standby_names: str, standbys: int) -> None:
    """One log line when the writable server or what its commits wait for changes (a failover)."""
    global _durability_said
    with _durability_lock:
        if _durability_said == (server, state):
            return
        _durability_said = (server, state)
    if commit_mode in ("off", "local"):
        logger.warning(
            "PostgreSQL %s has synchronous_commit=%s; the collector's sessions use 'on'", server, commit_mode
        )
    if state == "synchronous":
        logger.info(
            "PostgreSQL %s: each commit waits for a synchronous standby (%s; %d connected):"
            " acknowledged events survive a failover",
            server,
            standby_names,
            standbys,
        )
    elif state == "synchronous_no_standby":
        logger.warning(
            "PostgreSQL %s names synchronous standbys (%s) but none is connected:"
            " commits wait (nothing is acknowledged) until one connects",
            server,
            standby_names,
        )
    elif state == "asynchronous":
        logger.warning(
            "PostgreSQL %s replicates asynchronously (%d standby connected, synchronous_standby_names empty):"
            " events acknowledged just before a failover can be LOST; set synchronous_standby_names"
            " (docs/central/collector.md, 'PostgreSQL failover')",
            server,
            standbys,
        )
    elif state == "no_standby":
        logger.warning(
            "PostgreSQL %s has no standby connected: acknowledged events are only as safe as its disk"
            " until a synchronous standby is attached",
            server,
        )
    else:
        logger.info("PostgreSQL %s has no standby: acknowledged events are as safe as its disk", server)


# SQLite extended result names -> kind of failure (first match wins).
SQLITE_KINDS = (
    ("SQLITE_BUSY", "busy"),
    ("SQLITE_LOCKED", "busy"),
    ("SQLITE_FULL", "disk_full"),
    ("SQLITE_IOERR", "io_error"),
    ("SQLITE_READONLY", "read_only"),
    ("SQLITE_CORRUPT", "corrupt"),
    ("SQLITE_NOTADB", "corrupt"),
    ("SQLITE_CANTOPEN", "unreachable"),
)
# PostgreSQL SQLSTATE prefixes -> kind of failure.
PG_KINDS = (
    ("25006", "read_only"),  # read_only_sql_transaction: a standby, or a primary demoted by a failover
    ("53100", "disk_full"),
    ("53", "failed"),  # insufficient resources
    ("58", "io_error"),  # system error (I/O)
    ("XX", "corrupt"),  # internal error, data corrupted
    ("08", "unreachable"),  # connection exception
    ("57P", "unreachable"),  # operator intervention: shutdown, restart
    ("40", "busy"),  # serialization failure, deadlock
    ("55P03", "busy"),  # lock not available
)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


def redact_dsn(dsn: str) -> str:
    dsn = re.sub(r"(password=)[^&\s]*", r"\1***", dsn)
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def open_store(db: str, pool_size: int = 4) -> Store:
    """``postgresql://...`` (or ``postgres://``) for PostgreSQL, else a SQLite file path."""
    store: Store
    if db.startswith(("postgresql://", "postgres://")):
        store = PostgresStore(db, pool_size)
        where = redact_dsn(db)
    else:
        path = Path(db[len("sqlite:///") :] if db.startswith("sqlite:///") else db)
        store = SqliteStore(path, pool_size)
        where = str(path)
    store.migrate()
    logger.info("collector storage: %s at %s", store.backend, where)
    return store
