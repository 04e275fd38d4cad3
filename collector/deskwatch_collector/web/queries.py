"""The page's read queries, scoped in SQL to what the signed-in account may see.

A supervisor sees the events and devices of the sites on the account; a worker only the
events that name their ``worker_id``. Functions take an open :class:`Tx`; the routes run
them on a database thread (``WebContext.read``).
"""

from __future__ import annotations

import json
from typing import Any

from .. import auth
from ..ingest import missing_seqs
from ..store import Tx


def _json_or(text: str | None, default: Any) -> Any:
    """A stored JSON column; NaN/Infinity from before validation refused them become null."""
    if not text:
        return default
    try:
        return json.loads(text, parse_constant=lambda _: None)
    except ValueError:
        return default


EVENT_COLUMNS = (
    "e.id, e.event_id, e.site, e.device_id, e.worker_id, e.type, e.detected_at, e.confidence, e.seq, e.replayed,"
    " e.evidence_reason, e.review_state, e.review_note, e.reviewed_by, e.reviewed_at, e.contest_note,"
    " e.contested_at, e.evidence_sha256, v.state"
)


def scope_sql(user: auth.User) -> tuple[str, list[Any]]:
    marks = ", ".join("?" for _ in user.sites)
    sql, params = f"e.site IN ({marks})", list(user.sites)
    if not user.is_supervisor:
        sql += " AND e.worker_id = ?"
        params.append(user.worker_id or "")
    return sql, params


def _event_json(row: tuple[Any, ...]) -> dict[str, Any]:
    (rid, event_id, site, device, worker, typ, detected, conf, seq, replayed, reason, state, note, by, at, contest,
     contested_at, sha, ev_state) = row  # fmt: skip
    has_photo = sha is not None and ev_state == "verified"
    if sha is not None and ev_state is None:
        reason = reason or "purged or not received"
    return {
        "id": rid,
        "event_id": event_id,
        "site": site,
        "device_id": device,
        "worker_id": worker,
        "type": typ,
        "detected_at": detected,
        "confidence": conf,
        "seq": seq,
        "replayed": bool(replayed),
        "evidence_url": f"/evidence/{event_id}" if has_photo else None,
        "evidence_reason": reason,
        "review_state": state,
        "review_note": note,
        "reviewed_by": by,
        "reviewed_at": at,
        "contest_note": contest,
        "contested_at": contested_at,
    }


def query_events(tx: Tx, user: auth.User, *, after_id: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    scope, params = scope_sql(user)
    rows = tx.rows(
        f"SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
        f" WHERE {scope} AND e.id > ? ORDER BY e.id DESC LIMIT ?",
        (*params, after_id, limit),
    )
    return [_event_json(r) for r in rows]


def query_event(tx: Tx, user: auth.User, event_id: str) -> dict[str, Any] | None:
    scope, params = scope_sql(user)
    row = tx.one(
        f"SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
        f" WHERE {scope} AND e.event_id = ?",
        (*params, event_id),
    )
    return _event_json(row) if row else None


def query_fleet(tx: Tx, user: auth.User, now: float) -> list[dict[str, Any]]:
    marks = ", ".join("?" for _ in user.sites)
    rows = tx.rows(
        "SELECT site, device_id, state, session, version, profile, since, reasons, status_at, health, health_at,"
        f" last_seq, last_event_at FROM devices WHERE site IN ({marks}) ORDER BY site, device_id",
        list(user.sites),
    )
    gaps: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for site in user.sites:
        gaps.update(missing_seqs(tx, site))
    out = []
    for (
        site,
        device,
        state,
        session,
        version,
        profile,
        since,
        reasons,
        status_at,
        health,
        health_at,
        last_seq,
        _,
    ) in rows:
        missing = sum(b - a + 1 for a, b in gaps.get((site, device), []))
        out.append(
            {
                "site": site,
                "device_id": device,
                "state": state,
                "session": session,
                "version": version,
                "profile": profile,
                "since": since,
                "reasons": _json_or(reasons, []),
                "status_at": status_at,
                "health": _json_or(health, None),
                "health_at": health_at,
                "health_age_s": (now - health_at) if health_at else None,
                "last_seq": last_seq,
                "missing_events": missing,
            }
        )
    return out
