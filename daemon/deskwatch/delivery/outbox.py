"""The durable outbox: every outgoing message is written here before it is published.

A message stays in ``outbox.sqlite3`` (under ``state_dir``) until the broker
acknowledges it (QoS 1 PUBACK; for QoS 0 health, until paho has written it to the
socket). After a reconnect or a restart everything left is published again in the
order it was written, and event/scan payloads are then flagged ``replayed: true``.

Power-cut policy (what survives)
--------------------------------
The database runs in WAL mode with ``synchronous=FULL``: every commit fsyncs the
WAL before it returns. So once :meth:`Outbox.put_event` returns, the event and its
``seq`` survive a power cut, a kernel panic or SIGKILL. ``synchronous=NORMAL``
would only fsync at checkpoints: after a power cut the last transactions (the
violation just detected) could vanish although ``send_event`` had returned, which is
exactly the loss this device exists to prevent. The cost of FULL is one fsync per
enqueue (a few per scan, minutes apart) and one per *batch* of acknowledgements:
the publisher deletes acked rows in batches (:meth:`Outbox.ack_many`), so draining
a backlog costs one fsync per batch, not per message. A delete lost to a power cut
only means the message is published once more, which consumers absorb by
``event_id`` (delivery is at-least-once).

Caps and eviction
-----------------
``max_messages``, ``max_bytes`` and ``max_age_days`` bound the queue. When a cap is
exceeded the oldest message of the *least valuable kind present* is dropped:
evidence images first, then health, then command results and scan records, events
last. Evicting an evidence image rewrites its queued event to ``evidence: null`` with
``evidence_reason: "evicted"`` so consumers do not wait for a JPEG that never comes.
Every eviction is counted per kind (persisted), logged, and reported in ``health``.
Ages use the wall clock, corrected when it jumps (a Pi without RTC syncs time after
boot): messages queued since start are re-dated by the jump, so a clock sync never
ages out a fresh event.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deskwatch_contract.jsonutil import dumps_bytes
from deskwatch_contract.sqlite import open_or_recover, transaction

logger = logging.getLogger(__name__)

# Lower rank = evicted first.
EVICTION_RANK = {"evidence": 0, "health": 1, "result": 2, "scan": 3, "event": 4}
KINDS = tuple(EVICTION_RANK)
FILENAME = "outbox.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    rank INTEGER NOT NULL,
    topic TEXT NOT NULL,          -- suffix after the device prefix, e.g. "event"
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    created REAL NOT NULL,        -- wall-clock seconds (for the age cap)
    bytes INTEGER NOT NULL,
    event_id TEXT,                -- events and evidence: to link them
    offline INTEGER NOT NULL DEFAULT 0,  -- queued while the broker was unreachable
    props TEXT                    -- JSON of MQTT 5 user properties, or NULL
);
CREATE INDEX IF NOT EXISTS messages_by_rank ON messages (rank, id);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class QueuedMessage:
    id: int
    kind: str
    topic: str
    payload: bytes
    qos: int
    created: float
    event_id: str | None
    replay: bool  # queued while offline, or survived a restart
    props: dict[str, str] | None


class Outbox:
    """SQLite-backed FIFO with caps. Thread-safe: one connection behind a lock."""

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        max_bytes: int,
        max_messages: int,
        max_age_days: float,
        evidence_max_age_days: float | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = Path(state_dir) / FILENAME
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.max_bytes = max_bytes
        self.max_messages = max_messages
        self.max_age_s = max_age_days * 86400.0
        self.evidence_max_age_s = (evidence_max_age_days or max_age_days) * 86400.0
        self._clock = wall_clock
        # An injected wall clock without a monotonic one: the two are taken to move together.
        self._mono = monotonic_clock or (time.monotonic if wall_clock is time.time else wall_clock)
        self._wall0, self._mono0 = wall_clock(), self._mono()
        self._lock = threading.RLock()
        self._db, recovered = open_or_recover(self.path, _SCHEMA, "SELECT COUNT(*) FROM messages", now=wall_clock())
        if recovered is not None:  # e.g. a failing SD card: keep the file for inspection, start afresh
            aside, why = recovered
            logger.error(
                "outbox %s is unreadable (%s): moved it to %s and started an empty one; "
                "messages queued in it were not sent",
                self.path,
                why,
                aside,
            )
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(MAX(id), 0) FROM messages"
        ).fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])
        # Everything already queued when we open survived a restart: it is a replay.
        self._replay_upto = int(row[2])
        self.evicted: dict[str, int] = {k: self._counter(f"evicted.{k}") for k in KINDS}

    # -- counters -----------------------------------------------------------------------

    def _counter(self, name: str) -> int:
        row = self._db.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
        return int(row[0]) if row else 0

    def _bump(self, name: str, by: int = 1) -> int:
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
            (name, by),
        )
        return self._counter(name)

    def next_session(self) -> int:
        """Increment and return the persisted connection-session counter."""
        with self._lock:
            with self._transaction():
                value = self._bump("session")
            return value

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._counter("seq")

    # -- writing --------------------------------------------------------------------------

    def put_event(
        self,
        payload: dict[str, Any],
        evidence: bytes | None = None,
        evidence_props: dict[str, str] | None = None,
        *,
        offline: bool = False,
    ) -> dict[str, Any]:
        """Assign the next ``seq``, queue the event (and its evidence) in one transaction.

        Returns the payload as queued (with ``seq``). Durable when this returns. When the
        disk is full, older evidence, health, results and scans are evicted to make room
        (counted like cap evictions); as a last resort the event goes without its image.
        """
        try:
            return self._put_event(payload, evidence, evidence_props, offline)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            freed = self._make_room()
            logger.error("outbox: the disk is full (%s); evicted %s to keep the event", exc, freed or "nothing")
            if not freed and evidence is not None:
                payload = {**payload, "evidence": None, "evidence_reason": "disk_full"}
                evidence = None
            return self._put_event(payload, evidence, evidence_props, offline)

    def _make_room(self, rows: int = 200) -> dict[str, int]:
        """Evict up to ``rows`` of the least valuable non-event messages (disk full)."""
        with self._lock:
            with self._transaction():
                evicted: dict[str, int] = {}
                victims = self._db.execute(
                    "SELECT id, kind, bytes, event_id FROM messages WHERE kind != 'event' ORDER BY rank, id LIMIT ?",
                    (rows,),
                ).fetchall()
                for row in victims:
                    self._evict(row, evicted)
                for kind, n in evicted.items():
                    self.evicted[kind] = self._bump(f"evicted.{kind}", n)
            return evicted

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction; on rollback the in-memory totals are re-read."""
        return transaction(self._db, on_rollback=self._reload_totals)

    def _put_event(
        self, payload: dict[str, Any], evidence: bytes | None, evidence_props: dict[str, str] | None, offline: bool
    ) -> dict[str, Any]:
        event_id = str(payload["event_id"])
        with self._lock, self._transaction():
            self._follow_clock_jump()
            seq = self._bump("seq")
            payload = {**payload, "seq": seq}
            self._insert("event", "event", dumps_bytes(payload), 1, event_id, offline, None)
            if evidence is not None:
                self._insert("evidence", f"evidence/{event_id}", evidence, 1, event_id, offline, evidence_props)
            self._enforce_caps()
        return payload

    def put(self, kind: str, topic: str, payload: dict[str, Any], *, qos: int = 1, offline: bool = False) -> int:
        """Queue a JSON message of ``kind`` (scan, health, result). Returns its row id."""
        return self.put_many(kind, topic, [payload], qos=qos, offline=offline)[0]

    def put_many(
        self, kind: str, topic: str, payloads: list[dict[str, Any]], *, qos: int = 1, offline: bool = False
    ) -> list[int]:
        """Queue several messages of one kind in one transaction (one fsync)."""
        if kind not in EVICTION_RANK or kind == "event":
            raise ValueError(f"use put_event for events; unknown kind {kind!r}")
        with self._lock, self._transaction():
            self._follow_clock_jump()
            row_ids = [self._insert(kind, topic, dumps_bytes(p), qos, None, offline, None) for p in payloads]
            self._enforce_caps()
        return row_ids

    def _insert(
        self,
        kind: str,
        topic: str,
        data: bytes,
        qos: int,
        event_id: str | None,
        offline: bool,
        props: dict[str, str] | None,
    ) -> int:
        cur = self._db.execute(
            "INSERT INTO messages (kind, rank, topic, payload, qos, created, bytes, event_id, offline, props) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                kind,
                EVICTION_RANK[kind],
                topic,
                data,
                qos,
                self._clock(),
                len(data),
                event_id,
                int(offline),
                json.dumps(props) if props else None,
            ),
        )
        self._count += 1
        self._bytes += len(data)
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def _reload_totals(self) -> None:
        row = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM messages").fetchone()
        self._count, self._bytes = int(row[0]), int(row[1])

    # -- caps -----------------------------------------------------------------------------

    def expire_evidence(self, max_age_s: float) -> dict[str, int]:
        """Retention: keep no image longer than ``max_age_s`` (tightening the bound this
        outbox was built with, never loosening it) and apply every cap now; returns what
        was evicted by kind. Events that lose their image say so (``evidence_reason``)."""
        with self._lock:
            if max_age_s < self.evidence_max_age_s:
                logger.warning(
                    "outbox kept evidence for %.1f days; limiting it to %.1f (evidence.retention_days)",
                    self.evidence_max_age_s / 86400,
                    max_age_s / 86400,
                )
                self.evidence_max_age_s = max_age_s
            return self.enforce_caps()

    def enforce_caps(self) -> dict[str, int]:
        """Apply the age cap (and size caps) now; returns what was evicted by kind."""
        with self._lock:
            with self._transaction():
                self._follow_clock_jump()
                evicted = self._enforce_caps()
            return evicted

    def _follow_clock_jump(self, tolerance_s: float = 300.0) -> None:
        """Re-date this run's messages when the wall clock jumps (a Pi has no RTC).

        Until NTP syncs after boot, a Pi's clock may be days behind; once it jumps forward,
        messages queued meanwhile would look days old and the age cap would evict them.
        The monotonic clock does not jump, so the difference tells how far to shift them.
        """
        now_wall, now_mono = self._clock(), self._mono()
        jump = now_wall - (self._wall0 + (now_mono - self._mono0))
        if abs(jump) <= tolerance_s:
            return
        cur = self._db.execute("UPDATE messages SET created = created + ? WHERE id > ?", (jump, self._replay_upto))
        self._wall0, self._mono0 = now_wall, now_mono
        logger.warning(
            "wall clock jumped by %+.0f s (time sync after boot?): re-dated %d messages queued since start",
            jump,
            cur.rowcount,
        )

    def _enforce_caps(self) -> dict[str, int]:
        evicted: dict[str, int] = {}
        now = self._clock()
        aged = self._db.execute(
            "SELECT id, kind, bytes, event_id FROM messages WHERE created < ? OR (kind = 'evidence' AND created < ?) ORDER BY id",
            (now - self.max_age_s, now - self.evidence_max_age_s),
        ).fetchall()
        for row in aged:
            self._evict(row, evicted)
        while self._count > self.max_messages or self._bytes > self.max_bytes:
            row = self._db.execute(
                "SELECT id, kind, bytes, event_id FROM messages ORDER BY rank, id LIMIT 1"
            ).fetchone()
            if row is None:
                self._reload_totals()
                break
            self._evict(row, evicted)
        if evicted:
            for kind, n in evicted.items():
                self.evicted[kind] = self._bump(f"evicted.{kind}", n)
            logger.warning(
                "outbox cap reached (%d messages, %d bytes queued): evicted %s; totals %s",
                self._count,
                self._bytes,
                ", ".join(f"{n} {k}" for k, n in sorted(evicted.items(), key=lambda kv: EVICTION_RANK[kv[0]])),
                self.evicted,
                extra={"journal": {"OUTBOX_EVICTED": sum(evicted.values())}},
            )
        return evicted

    def _evict(self, row: tuple[int, str, int, str | None], evicted: dict[str, int]) -> None:
        row_id, kind, size, event_id = row
        self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
        self._count -= 1
        self._bytes -= int(size)
        evicted[kind] = evicted.get(kind, 0) + 1
        if kind == "evidence" and event_id:
            self._mark_evidence_evicted(event_id)

    def _mark_evidence_evicted(self, event_id: str) -> None:
        row = self._db.execute(
            "SELECT id, payload FROM messages WHERE kind = 'event' AND event_id = ?", (event_id,)
        ).fetchone()
        if row is None:
            return
        payload = json.loads(row[1])
        payload["evidence"] = None
        payload["evidence_reason"] = "evicted"
        data = dumps_bytes(payload)
        self._db.execute("UPDATE messages SET payload = ?, bytes = ? WHERE id = ?", (data, len(data), row[0]))
        self._bytes += len(data) - len(row[1])

    # -- reading and acknowledging --------------------------------------------------------

    def pending(self, after_id: int = 0, limit: int = 100) -> list[QueuedMessage]:
        """Queued messages with id > ``after_id``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, kind, topic, payload, qos, created, event_id, offline, props "
                "FROM messages WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [
            QueuedMessage(
                id=r[0],
                kind=r[1],
                topic=r[2],
                payload=bytes(r[3]),
                qos=r[4],
                created=r[5],
                event_id=r[6],
                replay=bool(r[7]) or r[0] <= self._replay_upto,
                props=json.loads(r[8]) if r[8] else None,
            )
            for r in rows
        ]

    def ack_many(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages in one transaction (one fsync). Returns rows deleted."""
        ids = list(ids)
        if not ids:
            return 0
        with self._lock, self._transaction():
            deleted = 0
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                row = self._db.execute(
                    f"SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM messages WHERE id IN ({marks})", chunk
                ).fetchone()
                self._db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                deleted += int(row[0])
                self._count -= int(row[0])
                self._bytes -= int(row[1])
        return deleted

    def ack(self, message_id: int) -> None:
        self.ack_many([message_id])

    # -- reporting ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Messages waiting (kept in memory: no query, cheap enough for every loop tick)."""
        return self._count

    def stats(self) -> dict[str, Any]:
        with self._lock:
            oldest = self._db.execute("SELECT MIN(created) FROM messages").fetchone()[0]
            by_kind = dict(self._db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall())
            return {
                "depth": self._count,
                "bytes": self._bytes,
                "oldest_age_s": round(max(0.0, self._clock() - oldest), 1) if oldest is not None else 0.0,
                "by_kind": {k: int(by_kind.get(k, 0)) for k in KINDS},
                "evicted": dict(self.evicted),
                "last_seq": self._counter("seq"),
            }

    def close(self) -> None:
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()


def queued_event_ids(state_dir: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Per event id, the kinds still waiting in the outbox ("event", "evidence"); read-only.

    For ``deskwatch history`` while the daemon runs: it never writes and takes no lock
    the daemon would wait for. An absent or unreadable outbox reads as empty.
    """
    path = Path(state_dir) / FILENAME
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
        try:
            rows = db.execute("SELECT event_id, kind FROM messages WHERE event_id IS NOT NULL").fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        logger.warning("cannot read the outbox %s: %s", path, exc)
        return {}
    out: dict[str, set[str]] = {}
    for event_id, kind in rows:
        out.setdefault(str(event_id), set()).add(str(kind))
    return out


def _chunks(items: list[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
