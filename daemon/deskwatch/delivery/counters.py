"""The device's sequence numbers, kept apart from the queue so a lost queue cannot reset them.

``counters.sqlite3`` (under ``state_dir``, beside the outbox) holds:

- ``seq``: the last event sequence number handed out. Numbers are *reserved* here
  (committed with ``synchronous=FULL``) before the events that carry them are queued
  in the outbox, so a number is never used twice, even when the outbox file is lost
  or a power cut falls between the two commits (that leaves a gap, which is what it
  is: events that were about to be queued and were not).
- ``session``: the connection-session counter of the retained ``status``.
- ``queued_events``: how many events sit in the outbox, raised in the same commit as
  a reservation and lowered (without an fsync of its own) as the outbox delivers or
  evicts them. After a power cut it may be too high, never too low: it is the
  count announced when the outbox is lost.
- ``losses``: every time queued messages were lost (an unreadable outbox, events
  reserved but never queued), with how many, when and why. ``health.outbox.lost``
  reports the totals, so the central side learns why ``seq`` has a gap.

If this file is itself damaged it is moved aside and rebuilt from the outbox's own
high-water marks (:meth:`DeviceCounters.adopt`); only losing both at once (a wiped
state directory, i.e. re-provisioning) starts ``seq`` again at 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deskwatch_contract.sqlite import StoreFormat, open_or_recover, transaction

log = logging.getLogger(__name__)

FILENAME = "counters.sqlite3"
WAL_PAGES = 16  # the log is copied into the file at this many pages (64 KB), and written over after

_SCHEMA = """
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS losses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,             -- wall-clock seconds
    reason TEXT NOT NULL,
    events INTEGER NOT NULL,      -- events lost (an upper bound after a power cut)
    messages INTEGER,             -- all messages lost, when known
    seq_upto INTEGER NOT NULL     -- the highest seq handed out when it happened
);
"""
# Written into the file (see deskwatch_contract.storeformat).
FORMAT = StoreFormat("sequence counters", _SCHEMA, version=1, compatible_from=1)


@dataclass(frozen=True)
class Loss:
    at: float
    reason: str
    events: int
    messages: int | None
    seq_upto: int


class DeviceCounters:
    """Thread-safe; one connection behind a lock."""

    def __init__(self, state_dir: str | os.PathLike[str], *, wall_clock: Any = time.time) -> None:
        self.path = Path(state_dir) / FILENAME
        self._clock = wall_clock
        self._lock = threading.Lock()
        self._db, recovered = open_or_recover(self.path, FORMAT, "SELECT COUNT(*) FROM counters", now=wall_clock())
        # one page, written at every event queued and delivered: SQLite's default (a copy into the
        # file every 1,000 pages) grew a 4 MB log beside a 4 KB file
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        self.recovered_from = recovered[0] if recovered else None
        if recovered is not None:
            log.error(
                "sequence counters %s are unreadable (%s): moved to %s; continuing from the outbox's own record",
                self.path,
                recovered[1],
                recovered[0],
            )

    # -- reading ------------------------------------------------------------------------------

    def _get(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _set(self, name: str, value: int) -> None:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (name, value),
        )

    @property
    def seq(self) -> int:
        with self._lock:
            return self._get("seq")

    @property
    def session(self) -> int:
        """The last connection-session number handed out."""
        with self._lock:
            return self._get("session")

    @property
    def accounted_upto(self) -> int:
        """The highest seq already recorded as lost (so a gap is announced once)."""
        with self._lock:
            return self._get("lost.seq_upto")

    @property
    def queued_events(self) -> int:
        with self._lock:
            return self._get("queued_events")

    # -- changing ----------------------------------------------------------------------------

    def adopt(self, *, seq: int, session: int) -> None:
        """Never go below what the outbox has seen (an upgrade, or this file was lost)."""
        with self._lock, transaction(self._db):
            if seq > self._get("seq"):
                self._set("seq", seq)
            if session > self._get("session"):
                self._set("session", session)

    def reserve(self, n: int) -> int:
        """Hand out ``n`` consecutive sequence numbers; returns the first. Durable on return."""
        if n < 1:
            raise ValueError("reserve at least one number")
        with self._lock, transaction(self._db):
            first = self._get("seq") + 1
            self._set("seq", first + n - 1)
            self._set("queued_events", self._get("queued_events") + n)
        return first

    def next_session(self) -> int:
        with self._lock, transaction(self._db):
            value = self._get("session") + 1
            self._set("session", value)
        return value

    def set_queued_events(self, n: int) -> None:
        """The outbox's event count after a delivery or eviction; not fsynced by itself
        (the next reservation's commit carries it to the disk)."""
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                with transaction(self._db):
                    self._set("queued_events", max(0, n))
            finally:
                self._db.execute("PRAGMA synchronous=FULL")

    def record_loss(
        self, reason: str, *, events: int, messages: int | None, seq_upto: int | None = None, at: float | None = None
    ) -> Loss:
        """Write down (durably) that queued messages are gone, and why; ``seq_upto``: the
        highest number the loss covers (default: the last one handed out); ``at``: when it
        happened, if that was before now (the disk had no room to write it down then)."""
        with self._lock, transaction(self._db):
            seq = self._get("seq") if seq_upto is None else seq_upto
            self._set("lost.seq_upto", max(seq, self._get("lost.seq_upto")))
            at = float(self._clock()) if at is None else at
            self._db.execute(
                "INSERT INTO losses (at, reason, events, messages, seq_upto) VALUES (?, ?, ?, ?, ?)",
                (at, reason, events, messages, seq),
            )
            self._set("lost.events", self._get("lost.events") + events)
            if messages is not None:
                self._set("lost.messages", self._get("lost.messages") + messages)
        return Loss(at, reason, events, messages, seq)

    def checkpoint(self) -> None:
        """Copy the WAL into the file (a full disk: the next commits then go over the WAL
        instead of growing it)."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    # -- reporting ---------------------------------------------------------------------------

    def lost_summary(self) -> dict[str, Any]:
        """``health.outbox.lost``: totals and the latest loss (None if nothing was ever lost)."""
        with self._lock:
            events, messages = self._get("lost.events"), self._get("lost.messages")
            last = self._db.execute(
                "SELECT at, reason, events, seq_upto FROM losses ORDER BY id DESC LIMIT 1"
            ).fetchone()
        summary: dict[str, Any] = {"events": events, "messages": messages, "last": None}
        if last is not None:
            summary["last"] = {
                "at": float(last[0]),
                "reason": str(last[1]),
                "events": int(last[2]),
                "seq_upto": int(last[3]),
            }
        return summary

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
