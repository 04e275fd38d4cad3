"""Collectors of two releases on one database: a rolling upgrade, or an upgrade rolled back.

The newer collector's changes are the checked-in statements of tests/data/rollback
(made by make_fixtures.py there), run on a database the current collector made, on
SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from deskwatch_collector.cli import main
from deskwatch_collector.intake import Inbound, Writer
from deskwatch_collector.store import (
    SCHEMA_CHECK_SECONDS,
    SCHEMA_VERSION,
    PostgresStore,
    SchemaTooNew,
    SqliteStore,
    Store,
    open_store,
)
from deskwatch_contract import exitcodes
from deskwatch_dev.fleet import SimDevice
from tests.support.common import REPO

FIXTURES = REPO / "tests" / "data" / "rollback"


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("postgres_dsn"))
    return str(tmp_path / "collector.db")


def newer(db: str, fixture: str) -> None:
    """Make ``db`` with this collector, then let the newer one's migration run on it."""
    store = open_store(db)
    try:
        with store.transaction() as tx:
            text = (FIXTURES / fixture).read_text(encoding="utf-8")
            sql = "\n".join(line for line in text.splitlines() if not line.startswith("--"))
            for stmt in sql.split(";"):
                if stmt.strip():
                    tx.execute(stmt.strip())
    finally:
        store.close()


def unmigrated(db: str) -> Store:
    """The store without :meth:`Store.migrate` (which :func:`open_store` runs)."""
    return PostgresStore(db) if db.startswith("postgresql") else SqliteStore(Path(db))


def meta(store: Store) -> dict[str, str]:
    with store.transaction(write=False) as tx:
        return {str(k): str(v) for k, v in tx.rows("SELECT key, value FROM meta WHERE key <> 'console_cursor_key'")}


def test_an_older_collector_on_a_newer_compatible_schema_runs_and_leaves_its_version(database: str) -> None:
    """It wrote its own schema_version (4) over the newer one's (5) at every start: the newer
    collector then took its own changes for undone, and no one could tell which schema the
    database had."""
    newer(database, "collector-newer-compatible.sql")
    store = open_store(database)
    try:
        assert meta(store) == {"schema_version": "5", "compatible_from": "1"}
        assert SCHEMA_VERSION < 5
    finally:
        store.close()


def test_an_older_collector_refuses_a_schema_the_newer_one_closed_to_it_and_changes_nothing(
    database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    newer(database, "collector-newer-incompatible.sql")
    with pytest.raises(SchemaTooNew, match=r"schema version 5.*collectors before schema version 5 must not use it"):
        open_store(database)
    code = main(["report", "--db", database])
    err = capsys.readouterr().err
    assert code == exitcodes.UNAVAILABLE
    assert "newer deskwatch-collector" in err and "Run the newer release here too" in err
    assert "Traceback" not in err and "password" not in err
    store = unmigrated(database)
    try:
        assert meta(store) == {"schema_version": "5", "compatible_from": "5"}  # as the newer one left it
    finally:
        store.close()


def test_a_running_older_collector_stops_when_a_newer_one_closes_the_schema_and_acknowledges_nothing(
    database: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A rolling upgrade: this release is ingesting when the newer one, starting beside it,
    migrates and closes the schema to it. The check at start alone let it go on writing rows
    the newer collectors misread, for as long as it ran."""
    store = open_store(database)
    try:
        dev = SimDevice("acme", "desk-a", "w-1")
        acked: list[int] = []
        writer = Writer(store)
        first = dev.violation(with_evidence=False)[0]
        writer.process([Inbound(first.topic, first.payload, {}, 1_800_000_000.0, lambda: acked.append(1))])
        assert acked == [1] and writer.schema_closed is None
        newer(database, "collector-newer-incompatible.sql")  # the newer collector's migration
        writer._schema_checked -= SCHEMA_CHECK_SECONDS  # its next look is due
        second = dev.violation(with_evidence=False)[0]
        writer.process([Inbound(second.topic, second.payload, {}, 1_800_000_001.0, lambda: acked.append(2))])
        assert acked == [1]  # not acknowledged: the broker gives it to a newer collector
        assert writer.schema_closed is not None and "newer deskwatch-collector" in writer.schema_closed
        assert writer.stop_event.is_set()
        with store.transaction(write=False) as tx:
            assert tx.one("SELECT COUNT(*) FROM events") == (1,)
            assert tx.one("SELECT COUNT(*) FROM rejects") == (0,)  # not kept as an internal error either
        assert "Traceback" not in caplog.text
    finally:
        store.close()
