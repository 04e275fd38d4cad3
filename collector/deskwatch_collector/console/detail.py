"""One event as the console shows it: why it was raised, what the scan checked, what else
its device reported lately, and every review action and contest.
"""

from __future__ import annotations

import json
from typing import Any

from deskwatch_collector.auth import User
from deskwatch_collector.console.queue import EVENT_COLUMNS, event_row, scope
from deskwatch_collector.console.vocab import reason_label, rule_label
from deskwatch_collector.store import Tx

HISTORY = 10


def find_event(tx: Tx, user: User, event_id: str, *, kept_from: float) -> dict[str, Any] | None:
    where, params = scope(user)
    row = tx.one(
        f"SELECT {EVENT_COLUMNS}, e.payload, e.scan_id, e.seq FROM events e"
        f" LEFT JOIN evidence v ON v.event_id = e.event_id WHERE {where} AND e.event_id = ?",
        (*params, event_id),
    )
    if row is None:
        return None
    ev = event_row(row[:-3], kept_from)
    payload = _json(row[-3])
    ev["scan_id"], ev["seq"] = row[-2], int(row[-1])
    ev["detail"] = str(payload.get("detail") or "")
    ev["policy"] = payload.get("policy") if isinstance(payload.get("policy"), dict) else {}
    ev["detections"] = [_detection(d) for d in payload.get("detections") or [] if isinstance(d, dict)]
    picture = payload.get("evidence") if isinstance(payload.get("evidence"), dict) else None
    ev["picture_size"] = (picture.get("width"), picture.get("height")) if picture else None
    ev["picture_bytes"] = picture.get("bytes") if picture else None
    return ev


def _json(text: Any) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _detection(d: dict[str, Any]) -> dict[str, Any]:
    box = d.get("box")
    ok = isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
    x0, y0, x1, y1 = [min(1.0, max(0.0, float(v))) for v in box] if isinstance(box, list) and ok else [0.0] * 4
    return {
        "label": str(d.get("label", "?"))[:40],
        "score": d.get("score") if isinstance(d.get("score"), (int, float)) else None,
        "box": [x0, y0, max(0.0, x1 - x0), max(0.0, y1 - y0)] if ok else None,  # x, y, w, h in 0..1
        "facing": d.get("facing") if isinstance(d.get("facing"), (int, float)) else None,
        "identity": d.get("identity") if d.get("identity") in ("worker", "unknown") else None,
    }


def scan_of(tx: Tx, site: str, device_id: str, scan_id: str) -> dict[str, Any] | None:
    row = tx.one(
        "SELECT trigger, started_at, finished_at, outcome, payload FROM scans"
        " WHERE site = ? AND device_id = ? AND scan_id = ?",
        (site, device_id, scan_id),
    )
    if row is None:
        return None
    payload = _json(row[4])
    checks = [
        {
            "rule": str(c.get("rule", "?")),
            "label": rule_label(str(c.get("rule", "?"))),
            "outcome": str(c.get("outcome", "?")),
            "reason": str(c.get("reason") or ""),
        }
        for c in payload.get("checks") or []
        if isinstance(c, dict)
    ]
    return {
        "trigger": row[0],
        "started_at": row[1],
        "finished_at": row[2],
        "outcome": row[3],
        "checks": checks,
        "persons": payload.get("persons"),
        "bystanders": payload.get("bystanders"),
        "frames": payload.get("frames"),
        "durations_ms": payload.get("durations_ms") if isinstance(payload.get("durations_ms"), dict) else {},
    }


def device_history(
    tx: Tx, user: User, site: str, device_id: str, *, kept_from: float, limit: int = HISTORY
) -> list[dict[str, Any]]:
    """The device's latest events the account may see, newest first (``kept_from``: see :func:`event_row`)."""
    where, params = scope(user)
    rows = tx.rows(
        f"SELECT {EVENT_COLUMNS} FROM events e LEFT JOIN evidence v ON v.event_id = e.event_id"
        f" WHERE {where} AND e.site = ? AND e.device_id = ? ORDER BY e.detected_ts DESC, e.id DESC LIMIT ?",
        (*params, site, device_id, limit),
    )
    return [event_row(r, kept_from) for r in rows]


def trail(tx: Tx, event_id: str) -> list[dict[str, Any]]:
    rows = tx.rows(
        "SELECT action, reason, note, actor, role, at FROM review_log WHERE event_id = ? ORDER BY id", (event_id,)
    )
    return [
        {"action": a, "reason": r, "reason_label": reason_label(r), "note": n, "actor": who, "role": role, "at": at}
        for a, r, n, who, role, at in rows
    ]
