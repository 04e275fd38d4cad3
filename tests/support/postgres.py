"""PostgreSQL 15 (Debian's server) started by the tests as a child process on loopback.

- ``postgres_server``: one server per test session (initdb + ``postgres -D`` as the
  ``postgres`` user, trust auth on 127.0.0.1, a free port), stopped at the end.
- ``postgres_dsn``: a fresh database on it for one test.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from deskwatch_dev.devservers import PG_BIN, TempPostgres

_names = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[TempPostgres]:
    if not (PG_BIN / "postgres").exists():
        pytest.fail(f"PostgreSQL 15 server not installed ({PG_BIN}); apt-get install postgresql-15")
    server = TempPostgres().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_dsn(postgres_server: TempPostgres) -> str:
    return postgres_server.create_database(f"collector_test_{next(_names)}")
