"""Turn validated messages into rows, inside the caller's transaction.

- Events are de-duplicated by ``event_id`` (the device re-sends after an outage).
- ``seq`` is tracked per device: a jump past ``last_seq + 1`` is logged and recorded in
  ``seq_gaps`` when it is seen; :func:`missing_seqs` gives the authoritative gaps at any
  time from the stored rows (late, out-of-order arrivals fill them).
- Evidence is stored only if its bytes hash to the ``evidence.sha256`` of its event.
  With shared subscriptions the JPEG can reach a collector before its event (or another
  collector entirely), so it is kept as ``pending`` until the event arrives and is then
  verified, or deleted (and the deletion recorded) on a mismatch.
- Evidence already past the retention when it arrives (a device replaying a long outage's
  outbox) is not kept: its deletion is recorded with reason ``retention``, as the purge
  would have recorded it, so a photo is never held longer than ``retention_days``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter, deque
from collections.abc import Set
from datetime import datetime
from typing import Any

from deskwatch_collector import MAX_RETENTION_DAYS
from deskwatch_collector.retention import DAY
from deskwatch_collector.store import Tx
from deskwatch_collector.validate import UNSTORABLE_TEXT, Message, Rejected
from deskwatch_contract.jsonutil import dumps

logger = logging.getLogger(__name__)


class IngestStats:
    """Thread-safe counters (stored/duplicate per kind, rejected per reason) and batch timings."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._batch_ms: deque[float] = deque(maxlen=5000)

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counts[key] += n

    def batch(self, seconds: float, size: int) -> None:
        with self._lock:
            self._batch_ms.append(seconds * 1000)
            self.counts["batches"] += 1
            self.counts["batched_messages"] += size

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            out: dict[str, Any] = dict(self.counts)
            timings = sorted(self._batch_ms)
        if timings:
            out["batch_ms_p50"] = round(timings[len(timings) // 2], 2)
            out["batch_ms_p95"] = round(timings[min(len(timings) - 1, int(len(timings) * 0.95))], 2)
        return out


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


_dumps = dumps


RAW_KEPT_BYTES = 64 * 1024  # of each rejected message, for inspection
RAW_KEPT_PER_SOURCE_DAY = 200  # rejects per device per day that keep their bytes (the rest: counted only)


def _source(topic: str) -> str | None:
    parts = topic.split("/")
    return "/".join(parts[2:4])[:140] if len(parts) >= 4 and parts[0] == "deskwatch" else None


def _storable(text: str) -> str:
    """``text`` with U+0000 and lone surrogates written as escapes (``\\x00``, ``\\ud800``)."""
    return UNSTORABLE_TEXT.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


def record_reject(tx: Tx, topic: str, reason: str, detail: str, raw: bytes, now: float) -> None:
    """Keep a refused message: its reason (counted by ``report``) and, within a per-device
    quota, its first 64 KiB, so an operator can see what a device actually sent."""
    # A reject must always be storable, or the writer would retry it for ever: a topic from
    # an AMQP routing key (any string) may hold what a text column cannot.
    topic, detail = _storable(topic), _storable(detail)
    source = _source(topic)
    # A refused photo is not kept: it shows a person, and nothing will ever verify it.
    keep: bytes | None = None if "/evidence/" in topic else raw[:RAW_KEPT_BYTES]
    if source is not None:
        row = tx.one(
            "SELECT COUNT(*) FROM rejects WHERE source = ? AND received_at > ? AND raw IS NOT NULL",
            (source, now - 86400),
        )
        if row is not None and int(row[0]) >= RAW_KEPT_PER_SOURCE_DAY:
            keep = None
    tx.execute(
        "INSERT INTO rejects (topic, reason, detail, size, received_at, source, raw) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (topic[:300], reason, detail[:300], len(raw), now, source, keep),
    )


def apply(
    tx: Tx,
    msg: Message,
    received_at: float,
    now: float,
    known_devices: Set[tuple[str, str]] = frozenset(),
    deferred_scans: list[tuple[Any, ...]] | None = None,
    retention_days: float = MAX_RETENTION_DAYS,
) -> str:
    """Store one message; returns ``stored``, ``duplicate``, ``updated``, ``stale``, ``deferred``
    or ``expired`` (a photo already past ``retention_days``: not kept, its deletion recorded).

    Raises :class:`Rejected`. ``known_devices``: (site, device_id) pairs already committed to
    ``devices`` (saves a statement). With ``deferred_scans`` a scan record is appended there
    for :func:`flush_scans` instead of being inserted now.
    """
    kind = msg.topic.kind
    kept_from = now - retention_days * DAY
    if kind == "event":
        return _event(tx, msg, received_at, now, kept_from)
    if kind == "evidence":
        return _evidence(tx, msg, received_at, now, kept_from)
    if kind == "scan":
        return _scan(tx, msg, received_at, known_devices, deferred_scans)
    if kind == "status":
        return _status(tx, msg, received_at)
    if kind == "health":
        return _health(tx, msg, received_at)
    raise Rejected("bad_topic", kind)


def _ensure_device(tx: Tx, site: str, device_id: str) -> None:
    tx.execute(
        "INSERT INTO devices (site, device_id) VALUES (?, ?) ON CONFLICT (site, device_id) DO NOTHING",
        (site, device_id),
    )


def _event(tx: Tx, msg: Message, received_at: float, now: float, kept_from: float) -> str:
    p = msg.payload
    assert p is not None
    site, device = msg.topic.site, msg.topic.device_id
    ev = p["evidence"]
    sha = ev["sha256"] if isinstance(ev, dict) else None
    detected_ts = epoch(p["detected_at"])
    seq = int(p["seq"])
    inserted = tx.execute(
        "INSERT INTO events (event_id, site, device_id, worker_id, type, scan_id, seq, detected_at, detected_ts,"
        " confidence, replayed, evidence_sha256, evidence_reason, payload, received_at, stored_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        (
            p["event_id"].lower(),
            site,
            device,
            p["worker_id"],
            p["type"],
            p["scan_id"],
            seq,
            p["detected_at"],
            detected_ts,
            float(p["confidence"]),
            1 if p["replayed"] else 0,
            sha,
            p.get("evidence_reason"),
            _dumps(p),
            received_at,
            now,
        ),
    )
    if inserted == 0:
        return "duplicate"
    # One round trip: the upsert hands back the last_seq it replaced (every SET expression
    # reads the old row, on SQLite as on PostgreSQL).
    row = tx.one(
        "INSERT INTO devices (site, device_id, last_seq, seq_before, last_event_at) VALUES (?, ?, ?, 0, ?)"
        " ON CONFLICT (site, device_id) DO UPDATE SET seq_before = devices.last_seq,"
        " last_seq = CASE WHEN excluded.last_seq > devices.last_seq THEN excluded.last_seq ELSE devices.last_seq END,"
        " last_event_at = excluded.last_event_at RETURNING seq_before",
        (site, device, seq, received_at),
    )
    last = int(row[0]) if row and row[0] is not None else 0
    if last > 0 and seq > last + 1:
        tx.execute(
            "INSERT INTO seq_gaps (site, device_id, after_seq, got_seq, seen_at) VALUES (?, ?, ?, ?, ?)",
            (site, device, last, seq, now),
        )
        logger.warning(
            "seq gap from %s/%s: got %d after %d (%d missing so far)",
            site,
            device,
            seq,
            last,
            seq - last - 1,
            extra={"journal": {"EVENT_ID": p["event_id"], "DEVICE_ID": device}},
        )
    # Evidence that arrived first is settled now (one statement; a mismatch is rare and deleted).
    captured = min(detected_ts, received_at)
    settled = tx.one(
        "UPDATE evidence SET captured_ts = ?, state = CASE WHEN sha256 = ? THEN 'verified' ELSE 'mismatch' END"
        " WHERE event_id = ? AND state = 'pending' RETURNING state",
        (captured, sha, p["event_id"].lower()),
    )
    if settled is not None and settled[0] == "mismatch":
        _delete_evidence(tx, p["event_id"].lower(), now, "sha256_mismatch")
        logger.warning("evidence for event %s does not match its sha256: deleted", p["event_id"])
    elif settled is not None and captured < kept_from:
        _delete_evidence(tx, p["event_id"].lower(), now, "retention")
    return "stored"


ORPHAN_MAX_PHOTOS = 32
ORPHAN_MAX_BYTES = 4 * 1024 * 1024
"""Per device: evidence held ``pending`` (its event not stored yet) beyond this is refused
(``orphan_quota``), so a device that may publish cannot fill the disk with photos that no
event will ever claim. A device has a few photos in flight at most."""


def _evidence(tx: Tx, msg: Message, received_at: float, now: float, kept_from: float) -> str:
    """The one path a photo takes into the database: checked against its event, or held
    ``pending`` (within the device's quota) until the event arrives. A photo taken before
    ``kept_from`` is past the retention already: recorded as deleted, never stored."""
    event_id = msg.topic.event_id
    assert event_id is not None and msg.data is not None and msg.sha256 is not None
    row = tx.one(
        "SELECT evidence_sha256, detected_ts, site, device_id FROM events WHERE event_id = ?",
        (event_id,),
    )
    state, captured = "pending", received_at
    if row is not None:
        if (row[2], row[3]) != (msg.topic.site, msg.topic.device_id):
            raise Rejected("source_mismatch", f"evidence for an event of {row[2]}/{row[3]}")
        if row[0] is None:
            raise Rejected("evidence_unexpected", f"event {event_id} declares no evidence")
        if row[0] != msg.sha256:
            raise Rejected("evidence_sha256", f"event {event_id} declares another sha256")
        # A device clock ahead of time must not keep a photo past the retention: never later than arrival.
        state, captured = "verified", min(float(row[1]), received_at)
        if captured < kept_from:
            return _expired(tx, msg, event_id, captured, now)
    else:
        held = tx.one(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM evidence WHERE site = ? AND device_id = ?"
            " AND state = 'pending'",
            (msg.topic.site, msg.topic.device_id),
        )
        photos, size = (int(held[0]), int(held[1])) if held else (0, 0)
        if photos >= ORPHAN_MAX_PHOTOS or size + len(msg.data) > ORPHAN_MAX_BYTES:
            raise Rejected("orphan_quota", f"{photos} photos ({size} bytes) already wait for their events")
    inserted = tx.execute(
        "INSERT INTO evidence (event_id, site, device_id, sha256, bytes, data, state, captured_ts, received_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (event_id) DO NOTHING",
        (
            event_id,
            msg.topic.site,
            msg.topic.device_id,
            msg.sha256,
            len(msg.data),
            msg.data,
            state,
            captured,
            received_at,
        ),
    )
    return "stored" if inserted else "duplicate"


def _expired(tx: Tx, msg: Message, event_id: str, captured: float, now: float) -> str:
    """Account for a photo that arrived past the retention as the purge would have deleted it
    (each arrival: a copy re-sent later is recorded again, and again not kept)."""
    assert msg.data is not None and msg.sha256 is not None
    tx.execute(
        "INSERT INTO evidence_deletions (event_id, site, device_id, sha256, bytes, captured_ts, deleted_at, reason)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, 'retention')",
        (event_id, msg.topic.site, msg.topic.device_id, msg.sha256, len(msg.data), captured, now),
    )
    return "expired"


def _delete_evidence(tx: Tx, event_id: str, now: float, reason: str) -> None:
    tx.execute(
        "INSERT INTO evidence_deletions (event_id, site, device_id, sha256, bytes, captured_ts, deleted_at, reason)"
        " SELECT event_id, site, device_id, sha256, bytes, captured_ts, ?, ? FROM evidence WHERE event_id = ?",
        (now, reason, event_id),
    )
    tx.execute("DELETE FROM evidence WHERE event_id = ?", (event_id,))


def reconcile_pending(tx: Tx, now: float) -> tuple[int, int]:
    """Settle evidence left ``pending`` although its event is stored; returns (verified, deleted).

    Two collectors can race: one stores the JPEG while the other's transaction inserting the
    event is not yet committed, so neither sees the other's row. This pass closes the gap.
    """
    rows = tx.rows(
        "SELECT v.event_id, v.sha256, e.evidence_sha256, e.detected_ts FROM evidence v"
        " JOIN events e ON e.event_id = v.event_id WHERE v.state = 'pending'"
    )
    verified = deleted = 0
    for event_id, sha, declared, detected_ts in rows:
        if declared is not None and declared == sha:
            tx.execute(
                "UPDATE evidence SET state = 'verified', captured_ts = ? WHERE event_id = ?",
                (min(float(detected_ts), now), event_id),
            )
            verified += 1
        else:
            _delete_evidence(tx, event_id, now, "sha256_mismatch")
            deleted += 1
    return verified, deleted


SCAN_INSERT = (
    "INSERT INTO scans (site, device_id, scan_id, trigger, started_at, finished_at, outcome, findings, replayed,"
    " payload, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (site, device_id, scan_id) DO NOTHING"
)


def _scan(
    tx: Tx,
    msg: Message,
    received_at: float,
    known_devices: Set[tuple[str, str]],
    deferred: list[tuple[Any, ...]] | None,
) -> str:
    p = msg.payload
    assert p is not None
    row = (
        msg.topic.site,
        msg.topic.device_id,
        p["scan_id"],
        p["trigger"],
        p["started_at"],
        p["finished_at"],
        p["outcome"],
        ",".join(p["findings"]),
        1 if p["replayed"] else 0,
        _dumps(p),
        received_at,
    )
    if (msg.topic.site, msg.topic.device_id) not in known_devices:
        _ensure_device(tx, msg.topic.site, msg.topic.device_id)
    if deferred is not None:
        deferred.append(row)
        return "deferred"
    return "stored" if tx.execute(SCAN_INSERT, row) else "duplicate"


def flush_scans(tx: Tx, rows: list[tuple[Any, ...]]) -> int:
    """Insert the scan records deferred by :func:`apply` in one ``executemany``; returns how many were new.

    Scans are the most frequent message and depend on nothing else in the batch; on
    PostgreSQL ``executemany`` pipelines them in one round trip.
    """
    return tx.executemany(SCAN_INSERT, rows) if rows else 0


STATUS_REORDER_SECONDS = 600.0
"""How late a status may arrive and still be taken for a reordering (a Last Will behind
the next connection's ``online``). Past this, the newest arrival wins."""
CLOCK_SKEW_SECONDS = 600.0


def _status(tx: Tx, msg: Message, received_at: float) -> str:
    """Keep the device's newest status, by run and session, without letting anything pin it.

    A status belongs to a run of the daemon (``since``, its start time) and a connection
    (``session``, a persisted counter). It replaces the stored one when it is newer by
    (``since``, ``session``), so a Last Will from an older connection or an older run, arriving
    late, does not flap the device offline. It also replaces it when it is *older* by that
    order but arrives more than :data:`STATUS_REORDER_SECONDS` after the stored one: no
    reordering is that slow, so the device's counter or clock went back (re-provisioned,
    reflashed, a Pi without a real-time clock) or the stored status was forged with a huge
    session; either way the newest arrival is the truth. A ``since`` in the future is refused.
    """
    p = msg.payload
    assert p is not None
    site, device = msg.topic.site, msg.topic.device_id
    since_ts, session = epoch(p["since"]), int(p["session"])
    if since_ts > received_at + CLOCK_SKEW_SECONDS:
        raise Rejected("bad_time", f"status since {p['since']} is in the future")
    _ensure_device(tx, site, device)
    row = tx.one(
        f"SELECT since, session, status_at FROM devices WHERE site = ? AND device_id = ?{tx.for_update}",
        (site, device),
    )
    if row is not None and row[1] is not None and row[2] is not None:
        stored_key = (epoch(str(row[0])), int(row[1]))
        newer = (since_ts, session) >= stored_key
        if not newer and received_at - float(row[2]) <= STATUS_REORDER_SECONDS:
            return "stale"
    tx.execute(
        "UPDATE devices SET state = ?, session = ?, version = ?, profile = ?, since = ?, reasons = ?, status_at = ?"
        " WHERE site = ? AND device_id = ?",
        (
            p["state"],
            session,
            p["version"],
            p["profile"],
            p["since"],
            json.dumps(p.get("reasons") or []),
            received_at,
            site,
            device,
        ),
    )
    return "updated"


def _health(tx: Tx, msg: Message, received_at: float) -> str:
    p = msg.payload
    assert p is not None
    tx.execute(
        "INSERT INTO devices (site, device_id, health, health_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (site, device_id) DO UPDATE SET health = excluded.health, health_at = excluded.health_at",
        (msg.topic.site, msg.topic.device_id, _dumps(p), received_at),
    )
    return "updated"


def missing_seqs(tx: Tx, site: str | None = None) -> dict[tuple[str, str], list[tuple[int, int]]]:
    """Per device, the ranges of ``seq`` never stored between the first and last one seen."""
    where, params = ("WHERE site = ?", (site,)) if site else ("", ())
    rows = tx.rows(
        "SELECT site, device_id, prev, seq FROM ("
        " SELECT site, device_id, seq, LAG(seq) OVER (PARTITION BY site, device_id ORDER BY seq) AS prev"
        f" FROM events {where}) AS s WHERE prev IS NOT NULL AND seq > prev + 1 ORDER BY site, device_id, seq",
        params,
    )
    out: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for s, d, prev, seq in rows:
        out.setdefault((s, d), []).append((int(prev) + 1, int(seq) - 1))
    return out
