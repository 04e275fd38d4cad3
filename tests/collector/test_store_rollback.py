"""Collectors of two releases on one database: a rolling upgrade, or an upgrade rolled back.

The newer collector's changes are the checked-in statements of tests/data/rollback
(made by make_fixtures.py there), run on a database the current collector made, on
SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from deskwatch_collector.cli import main
from deskwatch_collector.store import SCHEMA_VERSION, PostgresStore, SchemaTooNew, SqliteStore, Store, open_store
from deskwatch_contract import exitcodes
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
