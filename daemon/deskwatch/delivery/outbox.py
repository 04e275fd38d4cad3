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

Sequence numbers and losses
---------------------------
``seq`` and the connection ``session`` live in :mod:`counters` (a file of their own):
numbers are reserved there before the events carrying them are queued here, so they
survive this file being lost. A scan's events, their images and the scan record are
queued in **one** transaction (:meth:`Outbox.put_scan`): after a crash either all of
them are queued or none is (and the reserved numbers show as a gap). If this file
is damaged at start (SQLite finds it corrupt), it is moved aside, every row that can
still be read from it is queued again, and the rest is recorded as a loss with its
count (``health.outbox.lost``); nothing disappears without a number. A sound file that
cannot be used (a full disk, a file the service user may not open) stops the start
with an error saying what to do, and stays where it is with everything queued in it.

Caps and eviction
-----------------
``max_messages``, ``max_bytes`` and ``max_age_days`` bound the queue. When a cap is
exceeded the oldest message of the *least valuable kind present* is dropped:
evidence images first, then health, then command results and scan records, events
last. Evicting an evidence image rewrites its queued event to ``evidence: null`` with
``evidence_reason: "evicted"`` so consumers do not wait for a JPEG that never comes.
Every eviction is counted per kind (persisted), logged, and reported in ``health``; an
event or image that leaves the queue unsent (evicted, or stripped on a full disk) is noted
by its event id in ``dropped`` until retention, so that ``deskwatch history`` does not take
"no longer queued" for "sent" (:func:`dropped_event_ids`).

A full disk
-----------
On a really full file system SQLite cannot even delete (a delete writes pages to the
WAL), and the counters, on the same disk, cannot number an event. So the outbox keeps
``outbox.reserve`` (:data:`RESERVE_BYTES` of real blocks) beside its file: at the first
"disk full" it gives that room back, evicts older evidence, health, results and scans
(counted like cap evictions) and queues the event; with nothing left to evict the
events go without their images (``evidence_reason: "disk_full"``). The reserve is made
again once the file system has room for it twice over. An event that still cannot be
queued is counted lost; when the disk has no room to write that down either, the count
is kept in memory (and reported in ``health``) until it can be.

Damaged messages
----------------
SQLite keeps no checksums: a bit flipped on the SD card inside a stored message goes
unnoticed until the message is read. A row that cannot be what was written (JSON that
does not parse, a kind, topic or QoS that was never written) is damaged on its own:
the publisher's read (:meth:`Outbox.pending`) takes it out of the queue into the
``damaged`` table (the latest :data:`DAMAGED_KEPT`, for inspection), counts it in
``health.outbox.lost`` and logs it once, and goes on with the next message; left in
place it would be met again at every attempt and nothing behind it would be sent. An
image whose MQTT properties (a convenience: the event's ``sha256`` verifies the image)
are damaged is sent without them.

Nothing kept for inspection outlives retention
----------------------------------------------
A damaged image's bytes are not kept (they tell nothing about the damage; its size and
event id are); the other damaged messages, and an outbox file moved aside as unreadable
(dated back to the oldest message read from it), are deleted by the daily retention
purge once older than ``evidence.retention_days`` (:meth:`Outbox.expire_set_aside`).
The losses were counted when they happened and stay counted. The file runs with
``secure_delete`` and the purge empties the write-ahead log: an image past retention
cannot be read back from the card's free pages.
Ages use the wall clock, corrected when it jumps (a Pi without RTC syncs time after
boot): messages queued since start are re-dated by the jump, so a clock sync never
ages out a fresh event.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deskwatch.delivery.counters import DeviceCounters
from deskwatch.delivery.damage import INSPECTABLE_SQL, DamagedRow, check_row, inspectable, label, parse_props
from deskwatch.delivery.salvage import read_back
from deskwatch_contract.jsonutil import dumps_bytes
from deskwatch_contract.space import SpaceReserve
from deskwatch_contract.sqlite import (
    StoreFormat,
    connect_read_only,
    date_back,
    disk_trouble,
    is_disk_full,
    move_aside,
    open_or_recover,
    open_schema,
    remove_set_aside,
    transaction,
    truncate_wal,
)
from deskwatch_contract.sqlite import is_damaged as is_damaged  # the publisher asks it too
from deskwatch_contract.storeformat import stamped

logger = logging.getLogger(__name__)

# What a kind's name looks like (a kind a newer version added, see Outbox._newer_kind).
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
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
CREATE TABLE IF NOT EXISTS damaged (  -- messages taken out of the queue: their stored content was damaged
    id INTEGER PRIMARY KEY,           -- their id in messages
    found REAL NOT NULL,
    why TEXT NOT NULL,
    kind, topic, payload, qos, created, event_id, props  -- as they were found, whatever their type
);
CREATE TABLE IF NOT EXISTS dropped (  -- events and images that left the queue unsent, for 'deskwatch history'
    event_id TEXT NOT NULL,
    kind TEXT NOT NULL,                -- "event" or "evidence"
    reason TEXT NOT NULL,              -- the event's evidence_reason words: "evicted", "disk_full"
    at REAL NOT NULL,
    PRIMARY KEY (event_id, kind)
);
"""
# Written into the file (see deskwatch_contract.storeformat): a later version that only adds
# keeps compatible_from, so that this code, rolled back to, goes on with what it queued.
FORMAT = StoreFormat("outbox", _SCHEMA, version=1, compatible_from=1)
# The age check at every write reads only what is old through this (without it: every row,
# images included). Not in the schema: an outbox an earlier release wrote has no such index, and
# building it is a write, which a card full during a long outage refuses - the open of a file at
# this format must write nothing (storeformat), or the daemon would not start there to send what
# it queued. Made after the open when the card lets it (Outbox._make_age_index).
AGE_INDEX = "messages_by_created"
_AGE_INDEX_SQL = f"CREATE INDEX IF NOT EXISTS {AGE_INDEX} ON messages (created)"
# Free room asked for before the index is built: its pages twice (file and log) with room to spare.
AGE_INDEX_ROOM_BYTES = 1 << 20
AGE_INDEX_ROW_BYTES = 64
# At most one WARNING about cap evictions this often (each one is counted in health all the same).
CAP_WARNING_SECONDS = 3600.0
# How many damaged messages are kept for inspection (the newest, none past retention).
DAMAGED_KEPT = 100
# Room kept on the outbox's file system for when it fills up (see "A full disk").
RESERVE_NAME = "outbox.reserve"
RESERVE_BYTES = 1 << 20
# Reads every row of the queue (not the images' overflow pages: a damaged image shows up
# when it is published, and :meth:`Outbox.recover` handles it then).
_PROBE = "SELECT COUNT(*), SUM(bytes), SUM(kind = 'event'), MAX(id) FROM messages"


# An event to queue: its payload (without seq), its image (or None) and the image's MQTT 5 properties.
EventToQueue = tuple[dict[str, Any], bytes | None, dict[str, str] | None]


@dataclass(frozen=True)
class _UnrecordedLoss:
    """A loss the counters had no room to write down yet (reported in ``health`` meanwhile)."""

    at: float
    reason: str
    events: int
    messages: int | None
    seq_upto: int | None


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
        disk_reserve_bytes: int = RESERVE_BYTES,
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
        self._not_set_aside: set[int] = set()  # damaged rows that could not be taken out yet (said once)
        self._unrecorded: list[_UnrecordedLoss] = []
        self._short_of_room = False  # a write failed for lack of room, and the room kept for it is used
        self._cap_said_at: float | None = None  # monotonic start of the hour of cap-eviction WARNINGs
        self._cap_unsaid: dict[str, int] = {}  # evicted since then, said at DEBUG only
        self._cap_line_at: float | None = None  # monotonic time of the last cap-eviction WARNING of any kind
        self._cap_said_kinds: set[str] = set()  # the kinds evicted since that WARNING (a new one is said at once)
        self._unsaved_session = 0  # the last session number the disk could not take (0: none)
        self._session_trouble = False  # said once per spell
        self._acked_unsaved: set[int] = set()  # delivered, but the disk could not take the delete
        self._ack_trouble = False  # said once per spell
        self._space = SpaceReserve(self.path.with_name(RESERVE_NAME), disk_reserve_bytes)
        self._db, recovered = open_or_recover(self.path, FORMAT, _PROBE, now=wall_clock(), secure_delete=True)
        self._keep_wal_within_reserve()
        self._age_index = False  # made once the totals are known (_make_age_index)
        try:
            self.counters = DeviceCounters(self.path.parent, wall_clock=wall_clock)
        except BaseException:
            self._db.close()
            raise
        self._reload_totals()
        self._make_age_index()
        if recovered is not None:  # e.g. a failing SD card: keep the file, take back what can be read
            self._recover_from(*recovered)
        self.counters.adopt(seq=self._counter("seq"), session=self._counter("session"))
        self._account_for_unqueued_reservations()
        row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
        # Everything already queued when we open survived a restart: it is a replay.
        self._replay_upto = int(row[0])
        # a newer deskwatch's file (an update rolled back; it says this one may use it): a message
        # of a kind it added is left in the queue for it, not taken for damage (:meth:`pending`)
        self._newer_format = stamped(self._db)[0] > FORMAT.version
        self._left_for_newer: set[str] = set()  # kinds said once
        self.evicted: dict[str, int] = {k: self._counter(f"evicted.{k}") for k in KINDS}
        self.counters.set_queued_events(self._events)
        if not self._space.ensure():
            logger.warning(
                "the disk holding %s has less than %d KiB free: no room is kept for when it is full",
                self.path,
                2 * self._space.size // 1024,
            )

    def _keep_wal_within_reserve(self) -> None:
        """Copy the log into the file once it holds half the room kept for a full disk (SQLite's
        default: 1000 pages, 4 MB). What the log holds beyond the file's end must be written into
        the file before the log can be written over; a card that filled with 2.5 MB of images in
        the log of a 4 KiB file used the room kept for it up in that copy, and events were lost
        after a few minutes of scans. At most this much then: the room covers it with room to spare."""
        pages = max(16, self._space.size // 2 // int(self._db.execute("PRAGMA page_size").fetchone()[0]))
        self._db.execute(f"PRAGMA wal_autocheckpoint={pages}")

    def _make_age_index(self) -> None:
        """Make :data:`AGE_INDEX` if it is not there (an outbox of an earlier release): outside any
        transaction, and a card that refuses it (full, read-only) leaves the caps to read without
        it until a later pass (:meth:`enforce_caps`) can make it."""
        if self._age_index:
            return
        if self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (AGE_INDEX,)).fetchone():
            self._age_index = True
            return
        # tried only with room for it and its log to spare: a build the card stops half way leaves
        # its log at the size it reached, and that room is what the next writes needed
        need = AGE_INDEX_ROOM_BYTES + AGE_INDEX_ROW_BYTES * self._count
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError:
            free = 0
        if free < need:
            logger.debug("outbox index %s not made yet: %d KiB free, %d KiB needed", AGE_INDEX, free >> 10, need >> 10)
            return
        try:
            self._db.execute(_AGE_INDEX_SQL)
        except sqlite3.OperationalError as exc:
            truncate_wal(self._db)
            logger.debug("outbox index %s not made yet: %s", AGE_INDEX, exc)
            return
        self._age_index = True

    def _recover_from(self, aside: Path, why: str) -> None:
        """The file was unreadable and moved to ``aside``: queue again what can be read, count the rest."""
        expected = self.counters.queued_events
        salvaged, complete, damaged, oldest = self._salvage(aside)
        if oldest is not None:  # what it holds is that old: retention counts from there
            date_back(aside, oldest)
        events = sum(1 for kind in salvaged if kind == "event")
        damaged_events = sum(1 for kind in damaged if kind == "event")
        # the counters' number may be lost with their file; the damaged events are known lost anyway
        lost_events = max(0, expected - events, damaged_events)
        self.counters.record_loss(
            f"outbox unreadable ({why}); moved to {aside.name}",
            events=lost_events,
            messages=len(damaged) - damaged_events if complete else None,
        )
        logger.error(
            "outbox %s is unreadable (%s): moved it to %s; queued again %d messages that could still be read "
            "(%d events)%s; %d events are lost%s. health.outbox.lost reports it and seq goes on without reuse",
            self.path,
            why,
            aside,
            len(salvaged),
            events,
            f", not {len(damaged)} damaged ones (kept in the 'damaged' table)" if damaged else "",
            lost_events,
            "" if complete else " (and an unknown number of other messages)",
            extra={"journal": {"DESKWATCH_EVENT": "outbox_lost", "OUTBOX_LOST_EVENTS": lost_events}},
        )

    def _salvage(self, aside: Path) -> tuple[list[str], bool, list[str], float | None]:
        """Queue again (as replays) the rows that can still be read from a moved-aside outbox.

        Each row is checked on its own (:func:`check_row`): one whose content is damaged is
        kept in ``damaged`` and skipped, so that it never aborts the read-back of the others
        (which would leave them all in the file moved aside). Returns the kinds of the rows
        taken back, whether every row could be read, the kinds of the damaged ones, and the
        oldest time a sound row read was queued at (none at 0.0 or before: a zeroed page's)."""
        rows, complete = read_back(aside)
        kinds: list[str] = []
        damaged: list[str] = []
        highest_seq = 0
        # when the messages read back were queued: a damaged row's time is what the damage left
        # (0.0 from a zeroed page), which dated the file back to 1970 and had the next purge delete it
        times: list[float] = []
        with self._transaction():
            for row_id, kind, topic, payload, qos, created, event_id, props in rows:
                try:
                    check_row(kind, topic, payload, qos, created, event_id, kinds=EVICTION_RANK)
                except DamagedRow as exc:
                    why, kept = str(exc), payload
                    if not inspectable(kind, topic):
                        why, kept = f"{why} ({_size(payload)} not kept)", None
                    self._db.execute(
                        "INSERT OR REPLACE INTO damaged (id, found, why, kind, topic, payload, qos, created, event_id, "
                        "props) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (row_id, self._clock(), why, kind, topic, kept, qos, created, event_id, props),
                    )
                    damaged.append("event" if "event" in (kind, topic) else str(kind))
                    logger.error(
                        "outbox message %s (%s) in %s is damaged: %s; not queued again",
                        row_id,
                        label(kind, event_id),
                        aside.name,
                        exc,
                    )
                    continue
                try:
                    props_dict = parse_props(props)
                except DamagedRow as exc:
                    logger.warning("outbox message %s (%s): %s; queued again without them", row_id, kind, exc)
                    props_dict = None
                self._insert(kind, topic, payload, qos, event_id, True, props_dict, created=float(created))
                kinds.append(kind)
                if created > 0:  # 0.0: an image's time read from a zeroed page (stored after its bytes)
                    times.append(float(created))
                if kind == "event":
                    with contextlib.suppress(ValueError, TypeError, KeyError):
                        highest_seq = max(highest_seq, int(json.loads(payload)["seq"]))
            self._raise_counter("seq", highest_seq)
        return kinds, complete, damaged, min(times, default=None)

    def recover(self, why: str) -> None:
        """The queue turned out to be damaged while running (a read failed): move it aside,
        take back what can be read, count the rest, and go on with a sound file."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            aside = move_aside(self.path, self._clock())
            self._acked_unsaved.clear()  # ids of the old file: the fresh one numbers its rows anew
            self._db = open_schema(self.path, FORMAT, _PROBE, secure_delete=True)
            self._keep_wal_within_reserve()
            self._age_index = False
            self._reload_totals()
            self._make_age_index()
            self._recover_from(aside, why)
            row = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()
            self._replay_upto = int(row[0])
            self.counters.set_queued_events(self._events)

    def _account_for_unqueued_reservations(self) -> None:
        """Numbers reserved by a run that stopped before its events were queued are a gap: say so once.

        The gap runs from the last number this outbox saw queued to the last one reserved.
        An outbox that never saw an event is a new file (the one before it was lost without
        being read back: the device stopped while recovering it, or it was removed) and
        cannot tell where that one stopped; counting from 1 would report every number ever
        issued as lost, delivered ones too. What is lost then is what the counters say was
        queued or being queued (raised with each reservation, lowered as events were
        delivered; after a power cut an upper bound), never more than the numbers not yet
        accounted for."""
        reserved = self.counters.seq
        queued_upto = self._counter("seq")
        accounted = max(queued_upto, self.counters.accounted_upto)
        if reserved <= accounted:
            return
        if queued_upto == 0:
            n = min(reserved - accounted, self.counters.queued_events)
            if n == 0:
                return
            reason = f"the outbox was lost without being read back: {n} events were queued in it (seq up to {reserved})"
            logger.error(
                "outbox %s holds no event queued before this start (a new file: the one before was lost without "
                "being read back), and %d events were queued or being queued (seq up to %d): counted as lost in "
                "health.outbox.lost",
                self.path,
                n,
                reserved,
                extra={"journal": {"DESKWATCH_EVENT": "outbox_lost", "OUTBOX_LOST_EVENTS": n}},
            )
        else:
            n = reserved - accounted
            reason = f"the device stopped while queueing {n} events (seq {accounted + 1}-{reserved})"
            logger.error(
                "events with seq %d-%d were being queued when the device stopped and are not in the outbox: "
                "counted as lost in health.outbox.lost",
                accounted + 1,
                reserved,
                extra={"journal": {"DESKWATCH_EVENT": "outbox_lost", "OUTBOX_LOST_EVENTS": n}},
            )
        self.counters.record_loss(reason, events=n, messages=None, seq_upto=reserved)

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

    def _raise_counter(self, name: str, value: int) -> None:
        """Set a high-water mark (never lowers it)."""
        self._db.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
            (name, value),
        )

    def next_session(self) -> int:
        """Increment and return the persisted connection-session counter.

        A disk that cannot take the new number (full, or turned read-only under a failing SD
        card) must not keep the device off the broker: what is queued still goes out, and the
        status tells the central side what is wrong. The number is then taken in memory, above
        every one handed out before, and written down at the first connection that can."""
        with self._lock:
            try:
                if self._unsaved_session:
                    self.counters.adopt(seq=0, session=self._unsaved_session)
                value = self.counters.next_session()
            except sqlite3.Error as exc:
                for known in (lambda: self.counters.session, lambda: self._counter("session")):
                    with contextlib.suppress(sqlite3.Error):  # both are read from a disk that failed a write
                        self._unsaved_session = max(self._unsaved_session, known())
                self._unsaved_session += 1
                if not self._session_trouble:
                    self._session_trouble = True
                    logger.error(
                        "could not write down the connection session number: %s; connecting with session %d kept in "
                        "memory, written down once the disk takes it again",
                        disk_trouble(self.path.parent, exc),
                        self._unsaved_session,
                        extra={"journal": {"DESKWATCH_EVENT": "session_unsaved"}},
                    )
                return self._unsaved_session
            if self._session_trouble:
                self._session_trouble = False
                logger.info("the connection session number is written down again (session %d)", value)
            self._unsaved_session = 0
            with contextlib.suppress(sqlite3.Error), self._transaction():  # a copy here, in case counters are lost
                self._raise_counter("session", value)
            return value

    @property
    def last_seq(self) -> int:
        return self.counters.seq

    # -- writing --------------------------------------------------------------------------

    def put_event(
        self,
        payload: dict[str, Any],
        evidence: bytes | None = None,
        evidence_props: dict[str, str] | None = None,
        *,
        offline: bool = False,
    ) -> dict[str, Any]:
        """Assign the next ``seq`` and queue one event (and its evidence) in one transaction.

        Returns the payload as queued (with ``seq``). Durable when this returns.
        """
        return self.put_scan(None, [(payload, evidence, evidence_props)], offline=offline)[0]

    def put_scan(
        self, scan: dict[str, Any] | None, events: list[EventToQueue], *, offline: bool = False
    ) -> list[dict[str, Any]]:
        """Queue a scan's events (with their ``seq`` and images) and its record in ONE transaction.

        Returns the event payloads as queued. Durable when this returns: a crash before
        that leaves none of them queued. When the disk is full, older evidence, health,
        results and scans are evicted to make room (counted like cap evictions); as a last
        resort the events go without their images.
        """
        first = self._number(len(events)) if events else 0
        numbered = [({**payload, "seq": first + i}, image, props) for i, (payload, image, props) in enumerate(events)]
        try:
            try:
                numbered = self._put_numbered(scan, numbered, offline, make_room=self._short_of_room)
            except sqlite3.DatabaseError as exc:
                if is_damaged(exc):  # the file broke under us: recover it, then queue into the sound one
                    self.recover(str(exc))
                    self._put_numbered(scan, numbered, offline)
                    return [p for p, _, _ in numbered]
                if not is_disk_full(exc, self.path.parent):
                    raise
                self._disk_full(exc)
                numbered = self._put_numbered(scan, numbered, offline, make_room=True)
        except BaseException as exc:
            if events:
                self._lost_while_queueing(first, len(events), exc)
            raise
        self._after_write()
        return [p for p, _, _ in numbered]

    def _number(self, n: int) -> int:
        """Reserve ``n`` sequence numbers (the first is returned); on a full disk make room first.

        The counters live on the same disk: without this the events of a scan would vanish
        there, before they had a number, uncounted."""
        try:
            try:
                return self.counters.reserve(n)
            except sqlite3.OperationalError as exc:
                if not is_disk_full(exc, self.counters.path.parent):
                    raise
                self._disk_full(exc)
                return self.counters.reserve(n)
        except Exception as exc:
            self._count_loss(f"could not number {n} events: {exc}", events=n, messages=None)
            logger.error(
                "%d events could not be numbered and are lost: %s",
                n,
                exc,
                extra={"journal": {"DESKWATCH_EVENT": "outbox_lost", "OUTBOX_LOST_EVENTS": n}},
            )
            raise

    def _put_numbered(
        self, scan: dict[str, Any] | None, events: list[EventToQueue], offline: bool, *, make_room: bool = False
    ) -> list[EventToQueue]:
        """Queue numbered events (and the scan record) in one transaction; returns them as queued.

        ``make_room`` (the disk is full): first evict as many bytes of the least valuable
        other messages as are added, in the same transaction, so that the new rows take the
        pages the old ones leave and the file does not grow; with not enough to evict, the
        events go without their images."""
        with self._lock, self._transaction():
            self._follow_clock_jump()
            if make_room:
                events = self._room_for(scan, events)
            for payload, image, props in events:
                event_id = str(payload["event_id"])
                self._insert("event", "event", dumps_bytes(payload), 1, event_id, offline, None)
                if image is not None:
                    self._insert("evidence", f"evidence/{event_id}", image, 1, event_id, offline, props)
            if events:
                self._raise_counter("seq", int(events[-1][0]["seq"]))
            if scan is not None:
                self._insert("scan", "scan", dumps_bytes(scan), 1, None, offline, None)
            evicted = self._enforce_caps()
        if evicted.get("event"):
            self.counters.set_queued_events(self._events)
        return events

    def _room_for(self, scan: dict[str, Any] | None, events: list[EventToQueue]) -> list[EventToQueue]:
        """Evict (inside the caller's transaction) the least valuable other messages to make room
        for ``scan`` and ``events``; returns the events as they will be queued.

        Older images make room for the new ones (as many bytes); with too few to evict, the
        events go without their images (the last resort), and their own small rows take the
        place of what can be evicted."""
        json_bytes = sum(len(dumps_bytes(p)) for p, _, _ in events) + (len(dumps_bytes(scan)) if scan else 0)
        image_bytes = sum(len(image) for _, image, _ in events if image is not None)
        evictable = int(
            self._db.execute("SELECT COALESCE(SUM(bytes), 0) FROM messages WHERE kind != 'event'").fetchone()[0]
        )
        stripped = 0
        if image_bytes > evictable:
            stripped = sum(1 for _, image, _ in events if image is not None)
            events = [
                ({**p, "evidence": None, "evidence_reason": "disk_full"}, None, None)
                if image is not None
                else (p, None, pr)
                for p, image, pr in events
            ]
            image_bytes = 0
        evicted: dict[str, int] = {}
        freed = 0
        while freed < (image_bytes or json_bytes):  # images take the place of images; small rows of anything
            row = self._db.execute(
                "SELECT id, kind, bytes, event_id FROM messages WHERE kind != 'event' ORDER BY rank, id LIMIT 1"
            ).fetchone()
            if row is None:
                break
            self._evict(row, evicted)
            freed += int(row[2])
        for p, _, _ in events:
            if p.get("evidence_reason") == "disk_full" and isinstance(p.get("event_id"), str):
                self._note_dropped(p["event_id"], "evidence", "disk_full")
        for kind, n in evicted.items():
            self.evicted[kind] = self._bump(f"evicted.{kind}", n)
        logger.error(
            "outbox: the disk is full: evicted %s to queue %d events%s",
            ", ".join(f"{n} {k}" for k, n in evicted.items()) or "nothing",
            len(events),
            f" ({stripped} without their images: too few older ones to make room)" if stripped else "",
            extra={"journal": {"OUTBOX_EVICTED": sum(evicted.values())}},
        )
        return events

    def _lost_while_queueing(self, first: int, n: int, exc: BaseException) -> None:
        """Reserved numbers whose events could not be queued: a gap, announced now."""
        last = first + n - 1
        self._count_loss(f"could not queue: {exc}", events=n, messages=None, seq_upto=last)
        with contextlib.suppress(sqlite3.Error):  # lowered again at the next delivery or start
            self.counters.set_queued_events(self._events)
        logger.error(
            "%d events (seq %d-%d) could not be queued and are lost: %s",
            n,
            first,
            last,
            exc,
            extra={"journal": {"DESKWATCH_EVENT": "outbox_lost", "OUTBOX_LOST_EVENTS": n}},
        )

    def _disk_full(self, exc: BaseException) -> None:
        """A write failed for lack of room (``exc``): give back the room kept for this, and from
        now until the disk has room again make room before each write (:meth:`_room_for`) and
        let the WALs be written over rather than grown (:meth:`_after_write`)."""
        released = self._space.release()
        first = not self._short_of_room
        self._short_of_room = True
        self._checkpoint()
        if released or first:
            logger.error(
                "outbox: the disk is full (%s)%s; older images, health, results and scans make room for the "
                "events until it has room again",
                exc,
                f"; gave back the {self._space.size // 1024} KiB kept for this" if released else "",
            )

    def _checkpoint(self) -> None:
        """Copy both WALs into their files, so that the next writes go over them instead of growing them."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        with contextlib.suppress(sqlite3.Error):
            self.counters.checkpoint()

    def _after_write(self) -> None:
        """After a write went through: write down the losses kept in memory, and keep room
        for the next full disk again once there is room for it."""
        with self._lock:  # the publisher and the scans both come here: write each loss down once
            if self._short_of_room:
                self._checkpoint()
            if self._unrecorded:
                self._write_down_losses()
            if not self._space.present and self._space.ensure() and self._short_of_room:
                self._short_of_room = False
                logger.info("the disk has room again: %d KiB are kept for when it is full", self._space.size // 1024)

    def _count_loss(self, reason: str, *, events: int, messages: int | None, seq_upto: int | None = None) -> None:
        """Write down a loss in the counters, or keep it in memory while the disk has no room."""
        at = self._clock()
        try:
            self.counters.record_loss(reason, events=events, messages=messages, seq_upto=seq_upto, at=at)
        except sqlite3.Error as exc:
            if seq_upto is None:  # the last number handed out then, not when it is written down
                with contextlib.suppress(sqlite3.Error):
                    seq_upto = self.counters.seq
            with self._lock:
                self._unrecorded.append(_UnrecordedLoss(at, reason, events, messages, seq_upto))
            logger.error(
                "could not write down the loss of %d events (%s): kept in memory and reported in health until "
                "it can be",
                events,
                exc,
            )

    def _write_down_losses(self) -> sqlite3.Error | None:
        """Write down the losses kept in memory, oldest first, while the counters take them (under the
        lock); returns what the disk said when it would not take one."""
        while self._unrecorded:
            loss = self._unrecorded[0]
            try:
                self.counters.record_loss(
                    loss.reason, events=loss.events, messages=loss.messages, seq_upto=loss.seq_upto, at=loss.at
                )
            except sqlite3.Error as exc:
                return exc
            self._unrecorded.pop(0)
        return None

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """One write transaction; on rollback the in-memory totals are re-read."""
        return transaction(self._db, on_rollback=self._reload_totals)

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
            evicted = self._enforce_caps()
        if evicted.get("event"):
            self.counters.set_queued_events(self._events)
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
        *,
        created: float | None = None,
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
                self._clock() if created is None else created,
                len(data),
                event_id,
                int(offline),
                json.dumps(props) if props else None,
            ),
        )
        self._count += 1
        self._bytes += len(data)
        self._events += kind == "event"
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def _reload_totals(self) -> None:
        row = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(kind = 'event'), 0) FROM messages"
        ).fetchone()
        self._count, self._bytes, self._events = int(row[0]), int(row[1]), int(row[2])

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
            evicted = self.enforce_caps()
            if evicted:  # what was deleted leaves no copy in the log either
                truncate_wal(self._db)
            return evicted

    def expire_set_aside(self, max_age_s: float) -> int:
        """Retention of what is kept for inspection: damaged messages taken out of the queue,
        and outbox files moved aside as unreadable, older than ``max_age_s`` (by when their
        content was queued, where that is known) are deleted, and an image's bytes that a
        damaged row still holds (kept before they no longer were) are dropped. Returns how
        many rows and files went; the losses stay counted."""
        cutoff = self._clock() - max_age_s
        with self._lock:
            with self._transaction():
                rows = self._db.execute(
                    "DELETE FROM damaged WHERE found < ? OR (typeof(created) IN ('integer', 'real') AND created < ?)",
                    (cutoff, cutoff),
                ).rowcount
                self._db.execute("DELETE FROM dropped WHERE at < ?", (cutoff,))  # the audit trail's rows are gone too
                images = self._db.execute(
                    f"UPDATE damaged SET payload = NULL WHERE payload IS NOT NULL AND NOT {INSPECTABLE_SQL}"
                ).rowcount
            files = remove_set_aside(self.path, cutoff)
            if rows or images:
                truncate_wal(self._db)
        for f in files:
            logger.info("retention: deleted %s (an unreadable outbox kept for inspection)", f.name)
        return int(rows) + len(files)

    def enforce_caps(self) -> dict[str, int]:
        """Apply the age cap (and size caps) now; returns what was evicted by kind.

        On a full disk SQLite cannot even delete: the room kept for that is given back first
        (:meth:`_disk_full`), so that evidence past retention goes when it is due, full or not."""
        with self._lock:
            self._make_age_index()
            try:
                evicted = self._apply_caps()
            except sqlite3.OperationalError as exc:
                if not is_disk_full(exc, self.path.parent):
                    raise
                self._disk_full(exc)
                evicted = self._apply_caps()
            if evicted.get("event"):
                self.counters.set_queued_events(self._events)
            self._after_write()
            return evicted

    def _apply_caps(self) -> dict[str, int]:
        with self._transaction():
            self._follow_clock_jump()
            return self._enforce_caps()

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
        # Through messages_by_created, so that a long queue costs no more than a short one: the
        # rows older than the later of the two limits, of which evidence goes at its own.
        oldest_kept, evidence_kept = now - self.max_age_s, now - self.evidence_max_age_s
        aged = self._db.execute(
            f"SELECT id, kind, bytes, event_id FROM messages {f'INDEXED BY {AGE_INDEX} ' if self._age_index else ''}"
            "WHERE created < ? AND (created < ? OR kind = 'evidence') ORDER BY id",
            (max(oldest_kept, evidence_kept), oldest_kept),
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
            self._say_evicted(evicted)
        return evicted

    def _say_evicted(self, evicted: dict[str, int]) -> None:
        """A WARNING for what the caps evicted, at most one every :data:`CAP_WARNING_SECONDS`
        (with what went since the last one): at the cap, every health message and scan queued
        evicts one older message, and a long outage wrote a line for each (1,440 a day from
        health alone). A kind not evicted since the hour began is said at once (the events that
        go once the health messages are gone). The others are DEBUG lines; every eviction is
        counted (health)."""
        for kind, n in evicted.items():
            self._cap_unsaid[kind] = self._cap_unsaid.get(kind, 0) + n
        now = self._mono()
        # within the hour, only a kind not evicted since the last line is news: the health messages
        # that go first matter little, the worker's findings going after them are lost for good
        new_kind = not set(evicted) <= self._cap_said_kinds
        if self._cap_said_at is not None and now - self._cap_said_at < CAP_WARNING_SECONDS and not new_kind:
            logger.debug("outbox cap reached: evicted %s", _kinds(evicted))
            return
        since = "" if self._cap_line_at is None else f" in the last {(now - self._cap_line_at) / 60:.0f} min"
        logger.warning(
            "outbox cap reached (%d messages, %d bytes queued): evicted %s%s (the oldest of the least valuable "
            "kind first); totals %s",
            self._count,
            self._bytes,
            _kinds(self._cap_unsaid),
            since,
            self.evicted,
            extra={"journal": {"OUTBOX_EVICTED": sum(self._cap_unsaid.values())}},
        )
        if self._cap_said_at is None or now - self._cap_said_at >= CAP_WARNING_SECONDS:
            self._cap_said_at, self._cap_said_kinds = now, set()  # a new hour (a new kind keeps its count)
        self._cap_said_kinds |= set(self._cap_unsaid)
        self._cap_line_at, self._cap_unsaid = now, {}

    def _evict(self, row: tuple[int, str, int, str | None], evicted: dict[str, int]) -> None:
        row_id, kind, size, event_id = row
        self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
        self._count -= 1
        self._bytes -= int(size)
        self._events -= kind == "event"
        if row_id in self._acked_unsaved:  # delivered: its delete is done, and nothing was lost
            self._acked_unsaved.discard(row_id)
            return
        evicted[kind] = evicted.get(kind, 0) + 1
        if kind == "evidence" and event_id:
            self._mark_evidence_evicted(event_id)
        if kind in ("event", "evidence") and event_id:
            self._note_dropped(event_id, kind, "evicted")

    def _note_dropped(self, event_id: str, kind: str, reason: str) -> None:
        """An event or its image that leaves the queue unsent: the worker's history must not
        take it for sent (:func:`dropped_event_ids`). In the caller's transaction."""
        self._db.execute(
            "INSERT OR REPLACE INTO dropped (event_id, kind, reason, at) VALUES (?, ?, ?, ?)",
            (event_id, kind, reason, self._clock()),
        )

    def _mark_evidence_evicted(self, event_id: str, reason: str = "evicted") -> bytes | None:
        """Rewrite the queued event of a dropped image to ``evidence: null`` so that consumers
        do not wait for a JPEG that never comes; returns the event's new payload.

        An event whose own JSON is damaged is left as it is (:meth:`pending` takes it out when
        the publisher reaches it): failing here would fail the caps and the new event with them."""
        row = self._db.execute(
            "SELECT id, payload FROM messages WHERE kind = 'event' AND event_id = ?", (event_id,)
        ).fetchone()
        if row is None:
            return None
        try:
            payload = json.loads(row[1])
            payload["evidence"] = None
            payload["evidence_reason"] = reason
            data = dumps_bytes(payload)
        except (ValueError, TypeError) as exc:
            logger.warning("queued event %s is damaged (%s): left for the publisher to take out", event_id, exc)
            return None
        self._db.execute("UPDATE messages SET payload = ?, bytes = ? WHERE id = ?", (data, len(data), row[0]))
        self._bytes += len(data) - len(row[1])
        return data

    def discard_all(self, reason: str, note: str) -> dict[str, int]:
        """Take every queued message out of the queue unsent; returns how many of each kind.

        For a device moved to another site (:mod:`deskwatch.handover`): what it queued there
        names the old site, its certificate and topics are now the new site's, and that
        collector refuses a payload naming another site. Counted in ``health.outbox.lost``
        (``reason``: the events' ``seq`` gap is explained); events and images noted for
        'deskwatch history' (``note``)."""
        with self._lock:
            with self._transaction():
                rows = self._db.execute("SELECT kind, event_id FROM messages").fetchall()
                for kind, event_id in rows:
                    if kind in ("event", "evidence") and event_id:
                        self._note_dropped(str(event_id), str(kind), note)
                self._db.execute("DELETE FROM messages")
                self._reload_totals()
            counts: dict[str, int] = {}
            for kind, _ in rows:
                counts[str(kind)] = counts.get(str(kind), 0) + 1
            if rows:
                self._count_loss(reason, events=counts.get("event", 0), messages=len(rows))
                self.counters.set_queued_events(0)
            self._after_write()
        return counts

    # -- reading and acknowledging --------------------------------------------------------

    def pending(self, after_id: int = 0, limit: int = 100) -> list[QueuedMessage]:
        """Queued messages with id > ``after_id``, oldest first.

        Damaged rows are taken out of the queue here, where the publisher meets them (see
        "Damaged messages" above), and the ones behind them are returned instead."""
        out: list[QueuedMessage] = []
        with self._lock:
            while len(out) < limit:
                # the kinds left for a newer version are not read again at every call (the publisher
                # asks twice a second when idle: 1000 of them cost 6 ms a call read and skipped here)
                left = sorted(self._left_for_newer)
                rows = self._db.execute(
                    "SELECT id, kind, topic, payload, qos, created, event_id, offline, props FROM messages "
                    f"WHERE id > ? AND (kind IS NULL OR kind NOT IN ({','.join('?' * len(left))})) ORDER BY id LIMIT ?",
                    (after_id, *left, limit - len(out)),
                ).fetchall()
                if not rows:
                    break
                damaged: list[tuple[Any, ...]] = []
                bad_props: list[tuple[Any, ...]] = []
                for r in rows:
                    if r[0] in self._acked_unsaved:  # delivered; only its delete is still to be written
                        continue
                    if self._newer_format and self._newer_kind(r[0], r[1]):
                        continue
                    try:
                        check_row(*r[1:7], kinds=EVICTION_RANK)
                    except DamagedRow as exc:
                        damaged.append((*r, str(exc)))
                        continue
                    try:
                        props = parse_props(r[8])
                    except DamagedRow as exc:
                        bad_props.append((*r, str(exc)))
                        props = None
                    out.append(
                        QueuedMessage(
                            id=r[0],
                            kind=r[1],
                            topic=r[2],
                            payload=r[3],
                            qos=r[4],
                            created=float(r[5]),
                            event_id=r[6],
                            replay=bool(r[7]) or r[0] <= self._replay_upto,
                            props=props,
                        )
                    )
                after_id = int(rows[-1][0])
                if damaged or bad_props:
                    rewritten = self._set_aside(damaged, bad_props)
                    out = [
                        dataclasses.replace(m, payload=rewritten[m.event_id])
                        if m.kind == "event" and m.event_id in rewritten
                        else m
                        for m in out
                    ]
        return out

    def _newer_kind(self, row_id: int, kind: Any) -> bool:
        """A message of a kind this version does not know, in a file a newer version wrote: that
        version queued it and sends it when it is installed again. Taken for damage it was taken
        out of the queue and counted lost. Caps and retention still apply to it."""
        if kind in EVICTION_RANK or not isinstance(kind, str) or not _KIND_NAME.fullmatch(kind):
            return False
        if kind not in self._left_for_newer:
            self._left_for_newer.add(kind)
            logger.warning(
                "outbox message %d is of kind %r, which a newer deskwatch queued (the outbox is at its format): "
                "left in the queue for it, not sent by this version (an update was rolled back; the newer "
                "version sends it once installed again)",
                row_id,
                kind,
            )
        return True

    def _set_aside(self, damaged: list[tuple[Any, ...]], bad_props: list[tuple[Any, ...]]) -> dict[str, bytes]:
        """Take damaged rows (``(*row, why)``) out of the queue into ``damaged``, drop damaged
        properties, count the loss and say it once. Returns the events rewritten because
        their image was taken out (event id -> new payload)."""
        rewritten: dict[str, bytes] = {}
        try:
            with self._transaction():
                for row_id, kind, _topic, _payload, _qos, _created, event_id, _offline, _props, why in damaged:
                    self._db.execute(
                        "INSERT OR REPLACE INTO damaged (id, found, why, kind, topic, payload, qos, created, event_id, "
                        f"props) SELECT id, ?, CASE WHEN {INSPECTABLE_SQL} THEN ? ELSE ? || ' (its ' || length(payload) "
                        f"|| ' bytes not kept)' END, kind, topic, CASE WHEN {INSPECTABLE_SQL} THEN payload END, qos, "
                        "created, event_id, props FROM messages WHERE id = ?",
                        (self._clock(), why, why, row_id),
                    )
                    self._db.execute("DELETE FROM messages WHERE id = ?", (row_id,))
                    if kind == "evidence" and isinstance(event_id, str):
                        data = self._mark_evidence_evicted(event_id, "damaged")
                        if data is not None:
                            rewritten[event_id] = data
                for row in bad_props:
                    self._db.execute("UPDATE messages SET props = NULL WHERE id = ?", (row[0],))
                self._db.execute(
                    "DELETE FROM damaged WHERE id NOT IN (SELECT id FROM damaged ORDER BY id DESC LIMIT ?)",
                    (DAMAGED_KEPT,),
                )
                self._reload_totals()
        except sqlite3.OperationalError:  # e.g. the disk is full: skipped for now, taken out at the next read
            first = [r[0] for r in (*damaged, *bad_props) if r[0] not in self._not_set_aside]
            if first:
                logger.exception("could not take damaged outbox messages %s out of the queue; skipping them", first)
            self._not_set_aside.update(first)
            return {}
        for row_id, kind, topic, _payload, _qos, _created, event_id, _offline, _props, why in damaged:
            logger.error(
                "outbox message %d (%s) is damaged on the disk: %s. Taken out of the queue (kept in the outbox's "
                "'damaged' table) and counted in health.outbox.lost; the messages behind it go on",
                row_id,
                label(kind, event_id),
                why,
                extra={
                    "journal": {"DESKWATCH_EVENT": "outbox_lost", "OUTBOX_LOST_EVENTS": int("event" in (kind, topic))}
                },
            )
        for row_id, kind, _topic, _payload, _qos, _created, event_id, _offline, _props, why in bad_props:
            logger.warning(
                "outbox message %d (%s): %s (damaged on the disk); it is sent without them "
                "(the event's sha256 still verifies an image)",
                row_id,
                label(kind, event_id),
                why,
            )
        if damaged:
            events = sum(1 for r in damaged if "event" in (r[1], r[2]))  # a damaged kind: its topic tells
            first_row = damaged[0]
            self._count_loss(
                f"{len(damaged)} queued messages damaged on the disk (e.g. {first_row[0]}, "
                f"{label(first_row[1], first_row[6])}: {first_row[-1]})",
                events=events,
                messages=len(damaged) - events,
                seq_upto=self._counter("seq"),
            )
            if events:
                self.counters.set_queued_events(self._events)
        return rewritten

    def ack_many(self, ids: Iterable[int]) -> int:
        """Delete acknowledged messages in one transaction (one fsync). Returns how many were
        acknowledged (deleted now, or kept as acknowledged until the disk takes the delete).

        A disk that cannot take the delete (turned read-only under a failing SD card; full,
        after the room kept for it is given back) keeps the acknowledged ids in memory:
        :meth:`pending` skips them, so they are not sent again and again over the same
        connection, and the next acknowledgement tries to delete them again. A restart
        before that sends them once more, as after a power cut (consumers de-duplicate)."""
        fresh = list(ids)
        with self._lock:
            before = len(self._acked_unsaved)
            ids = sorted(self._acked_unsaved.union(fresh)) if self._acked_unsaved else fresh
            if not ids:
                return 0
            try:
                try:
                    deleted = self._delete_acked(ids)
                except sqlite3.OperationalError as exc:
                    if not is_disk_full(exc, self.path.parent):
                        raise
                    self._disk_full(exc)  # the room kept for this is given back: a delete fits in it
                    deleted = self._delete_acked(ids)
            except sqlite3.DatabaseError as exc:
                if is_damaged(exc):
                    raise
                self._acked_unsaved.update(fresh)
                if not self._ack_trouble:
                    self._ack_trouble = True
                    logger.error(
                        "outbox: could not delete %d delivered messages: %s; they are not sent again while the "
                        "daemon runs (once more after a restart; consumers drop the copies by event_id)",
                        len(self._acked_unsaved),
                        disk_trouble(self.path.parent, exc),
                        extra={"journal": {"DESKWATCH_EVENT": "outbox_ack_unsaved"}},
                    )
                return len(self._acked_unsaved) - before
            if self._ack_trouble:
                self._ack_trouble = False
                logger.info("outbox: delivered messages are deleted again (%d kept until now)", before)
            self._acked_unsaved.clear()
            return max(0, deleted - before)

    def _delete_acked(self, ids: list[int]) -> int:
        """Delete these rows in one transaction (under the lock); returns how many there were."""
        events = 0
        with self._transaction():
            deleted = 0
            for chunk in _chunks(ids, 500):
                marks = ",".join("?" * len(chunk))
                row = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(bytes), 0), COALESCE(SUM(kind = 'event'), 0) "
                    f"FROM messages WHERE id IN ({marks})",
                    chunk,
                ).fetchone()
                self._db.execute(f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                deleted += int(row[0])
                events += int(row[2])
                self._count -= int(row[0])
                self._bytes -= int(row[1])
                self._events -= int(row[2])
        if events:
            with contextlib.suppress(sqlite3.Error):  # lowered again at the next delivery or start
                self.counters.set_queued_events(self._events)
        return deleted

    def ack(self, message_id: int) -> None:
        self.ack_many([message_id])

    # -- reporting ------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Messages waiting to be sent (kept in memory: no query, cheap enough for every loop tick).
        Delivered ones whose delete the disk refused (:meth:`ack_many`) are not waiting: counted,
        a read-only card's status said "outbox 100 queued" and health an ever older backlog, for
        a queue the broker had taken whole."""
        return max(0, self._count - len(self._acked_unsaved))

    def stats(self) -> dict[str, Any]:
        with self._lock:
            by_kind = dict(self._db.execute("SELECT kind, COUNT(*) FROM messages GROUP BY kind").fetchall())
            size = self._bytes
            if self._acked_unsaved:  # delivered: not waiting (see depth)
                oldest = next(
                    (
                        created
                        for row_id, created in self._db.execute("SELECT id, created FROM messages ORDER BY created, id")
                        if row_id not in self._acked_unsaved
                    ),
                    None,
                )
                for chunk in _chunks(sorted(self._acked_unsaved), 500):
                    marks = ",".join("?" * len(chunk))
                    for kind, n, nbytes in self._db.execute(
                        f"SELECT kind, COUNT(*), SUM(bytes) FROM messages WHERE id IN ({marks}) GROUP BY kind", chunk
                    ):
                        by_kind[kind] = by_kind.get(kind, 0) - int(n)
                        size -= int(nbytes or 0)
            else:
                oldest = self._db.execute("SELECT MIN(created) FROM messages").fetchone()[0]
            return {
                "depth": self.depth,
                "bytes": max(0, size),
                "oldest_age_s": round(max(0.0, self._clock() - oldest), 1) if oldest is not None else 0.0,
                "by_kind": {k: int(by_kind.get(k, 0)) for k in KINDS},
                "evicted": dict(self.evicted),
                "lost": self._lost_summary(),
                "last_seq": self.counters.seq,
            }

    def _lost_summary(self) -> dict[str, Any]:
        """``health.outbox.lost``: what the counters hold, and what they had no room for yet."""
        summary = self.counters.lost_summary()
        with self._lock:
            unrecorded = list(self._unrecorded)
        if unrecorded:
            summary["events"] += sum(loss.events for loss in unrecorded)
            summary["messages"] += sum(loss.messages or 0 for loss in unrecorded)
            last = unrecorded[-1]
            summary["last"] = {
                "at": last.at,
                "reason": last.reason,
                "events": last.events,
                "seq_upto": last.seq_upto if last.seq_upto is not None else self.counters.seq,
            }
        return summary

    def close(self) -> None:
        with self._lock:
            refused = self._write_down_losses() if self._unrecorded else None
            for loss in self._unrecorded:  # the words the disk's trouble deserves: a read-only card has room
                logger.error(
                    "the loss of %d events was never written down (%s): %s",
                    loss.events,
                    disk_trouble(self.path.parent, refused) if refused is not None else "the disk refused it",
                    loss.reason,
                )
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._db.close()
            self.counters.close()


def queued_event_ids(state_dir: str | os.PathLike[str]) -> dict[str, set[str]]:
    """Per event id, the kinds still waiting in the outbox ("event", "evidence"); read-only.

    For ``deskwatch history`` while the daemon runs: it never writes and takes no lock
    the daemon would wait for. An absent or unreadable outbox reads as empty.
    """
    rows = _read(
        state_dir, "SELECT event_id, kind FROM messages WHERE event_id IS NOT NULL", "cannot read the outbox %s: %s"
    )
    out: dict[str, set[str]] = {}
    for event_id, kind in rows:
        out.setdefault(str(event_id), set()).add(str(kind))
    return out


def dropped_event_ids(state_dir: str | os.PathLike[str]) -> dict[str, dict[str, str]]:
    """Per event id, what of it left the queue unsent and why ("event"/"evidence" -> "evicted",
    "disk_full", "damaged"); read-only, as :func:`queued_event_ids`. Kept as long as the
    messages it speaks of could have been (retention)."""
    rows = _read(
        state_dir,
        "SELECT event_id, kind, reason FROM dropped UNION ALL SELECT event_id, kind, 'damaged' FROM damaged"
        " WHERE typeof(event_id) = 'text' AND kind IN ('event', 'evidence')",
        # an outbox from before the device kept this, or unreadable
        "cannot read what left the outbox %s unsent: %s",
    )
    out: dict[str, dict[str, str]] = {}
    for event_id, kind, reason in rows:
        out.setdefault(str(event_id), {})[str(kind)] = str(reason)
    return out


def _read(state_dir: str | os.PathLike[str], sql: str, failed: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql`` in the outbox of ``state_dir``, read as a reader reads a file the daemon
    writes (:func:`deskwatch_contract.sqlite.connect_read_only`: quoted, never created, as the
    file's owner under root); an absent or unreadable outbox has none (``failed`` says why)."""
    path = Path(state_dir) / FILENAME
    if not path.exists():
        return []
    try:
        db = connect_read_only(path, timeout=2.0)
        try:
            return list(db.execute(sql).fetchall())
        finally:
            db.close()
    except (sqlite3.Error, OSError) as exc:
        logger.warning(failed, path, exc)
        return []


def _size(payload: Any) -> str:
    return f"its {len(payload)} bytes" if isinstance(payload, (bytes, str)) else "its payload"


def _chunks(items: list[int], n: int) -> Iterable[list[int]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _kinds(counts: dict[str, int]) -> str:
    """``3 evidence, 1 health``: least valuable kind first (a kind a newer version queued, left
    for it after a rollback and aged out, first of all: this version has no rank for it)."""
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items(), key=lambda kv: EVICTION_RANK.get(kv[0], -1)))
