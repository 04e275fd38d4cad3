"""The console's additions to the collector database, applied after :meth:`Store.migrate`.

- ``events.review_reason``: the short-list reason of the latest review (see :mod:`.vocab`).
- ``review_log``: every review action and contest, who and when (the review trail).
- ``review_feed``: per device, when its ``reviews`` list changed and was last published.
- ``meta.console_cursor_key``: the key page cursors and alert positions are sealed with.
- Indexes for the queue and the reports, measured on PostgreSQL 15 with 100,000 events:
  ``events_site_ts`` covers the report columns, so the accuracy report and the counts per
  filter read only the index; the two partial indexes and the type/worker indexes keep a
  rare filter from walking every row of a site.

Idempotent: safe to run at every start, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets

from deskwatch_collector.store import Store, Tx

# The key that seals the console's page cursors and alert positions (:func:`.queue.cursor_box`):
# one per database, so every collector behind a load balancer opens the others' cursors.
CURSOR_KEY = "console_cursor_key"

REPORT_COLUMNS = "device_id, worker_id, type, review_state, review_reason, contested_at"

COLUMNS = (("events", "review_reason", "TEXT"),)

STATEMENTS = {
    "sqlite": (
        "CREATE TABLE IF NOT EXISTS review_log (id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL,"
        " site TEXT NOT NULL, device_id TEXT NOT NULL, action TEXT NOT NULL, reason TEXT, note TEXT,"
        " actor TEXT NOT NULL, role TEXT NOT NULL, at REAL NOT NULL)",
        # SQLite has no INCLUDE: the report columns become trailing key columns.
        f"CREATE INDEX IF NOT EXISTS events_site_ts ON events (site, detected_ts, id, {REPORT_COLUMNS})",
    ),
    "postgresql": (
        "CREATE TABLE IF NOT EXISTS review_log (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " event_id TEXT NOT NULL, site TEXT NOT NULL, device_id TEXT NOT NULL, action TEXT NOT NULL, reason TEXT,"
        " note TEXT, actor TEXT NOT NULL, role TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
        f"CREATE INDEX IF NOT EXISTS events_site_ts ON events (site, detected_ts, id) INCLUDE ({REPORT_COLUMNS})",
    ),
}

COMMON = (
    "CREATE INDEX IF NOT EXISTS review_log_event ON review_log (event_id, id)",
    # per device: when its reviews list changed and when it was last published (reviewfeed.py)
    "CREATE TABLE IF NOT EXISTS review_feed (site TEXT NOT NULL, device_id TEXT NOT NULL, due_at {real} NOT NULL,"
    " published_at {real}, PRIMARY KEY (site, device_id))",
    "CREATE INDEX IF NOT EXISTS events_site_type_ts ON events (site, type, detected_ts, id)",
    "CREATE INDEX IF NOT EXISTS events_site_worker_ts ON events (site, worker_id, detected_ts, id)",
    "CREATE INDEX IF NOT EXISTS events_open_ts ON events (site, detected_ts, id) WHERE review_state = 'open'",
    "CREATE INDEX IF NOT EXISTS events_contested_ts ON events (site, detected_ts, id) WHERE contested_at IS NOT NULL",
)


def _add_column(tx: Tx, backend: str, table: str, column: str, sql_type: str) -> None:
    if backend == "postgresql":
        tx.execute(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {sql_type}")
    elif column not in {str(r[1]) for r in tx.rows(f"PRAGMA table_info({table})")}:
        tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {sql_type}")


def migrate(store: Store) -> None:
    with store.transaction() as tx:
        store._lock_schema(tx)  # collectors starting together must not race on the DDL
        for table, column, sql_type in COLUMNS:
            _add_column(tx, store.backend, table, column, sql_type)
        real = "REAL" if store.backend == "sqlite" else "DOUBLE PRECISION"
        for stmt in STATEMENTS[store.backend] + COMMON:
            tx.execute(stmt.replace("{real}", real))
        tx.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (CURSOR_KEY, secrets.token_hex(32)),
        )
