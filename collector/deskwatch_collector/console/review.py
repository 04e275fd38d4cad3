"""Review actions (supervisors) and contests (workers): the event's current state changes and
a row is added to ``review_log``, in one transaction.

- acknowledge: the finding stands (``acknowledged``; shown as "Upheld").
- dismiss: needs a reason from :data:`.vocab.DISMISS_REASONS` ("other" needs a note).
- reopen: back to ``open`` (a mistaken click is undone, and the trail keeps both).
- contest: the worker says why the finding is wrong; it can be updated, never removed.

Each also marks the device's ``reviews`` list due (:mod:`.reviewfeed`): the device learns
the outcome and shows it to the worker.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

from deskwatch_collector.auth import User
from deskwatch_collector.console.queue import scope
from deskwatch_collector.console.reviewfeed import mark_due
from deskwatch_collector.console.vocab import REASONS
from deskwatch_collector.store import Tx

logger = logging.getLogger(__name__)

MAX_NOTE = 500
ACTIONS = {"acknowledge": "acknowledged", "dismiss": "dismissed", "reopen": "open"}


class ReviewRefused(ValueError):
    """The request cannot be carried out; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def clean_note(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ReviewRefused(400, "note: text, please")
    text = "".join(ch for ch in value if ch in "\n\t" or unicodedata.category(ch)[0] != "C").strip()
    if len(text) > MAX_NOTE:
        raise ReviewRefused(400, f"note: at most {MAX_NOTE} characters")
    return text


def _target(tx: Tx, user: User, event_id: str) -> tuple[str, str]:
    where, params = scope(user)
    row = tx.one(f"SELECT e.site, e.device_id FROM events e WHERE {where} AND e.event_id = ?", (*params, event_id))
    if row is None:
        raise ReviewRefused(404, "no such event")
    return str(row[0]), str(row[1])


def review(tx: Tx, user: User, event_id: str, action: Any, reason: Any, note: str, now: float) -> None:
    if not user.is_supervisor:
        raise ReviewRefused(403, "supervisors only")
    if action not in ACTIONS:
        raise ReviewRefused(400, f"action: one of {', '.join(ACTIONS)}")
    if action == "dismiss":
        if reason not in REASONS:
            raise ReviewRefused(400, f"reason: one of {', '.join(REASONS)}")
        if REASONS[reason].needs_note and not note:
            raise ReviewRefused(400, "note: say why (the reason is 'other')")
    elif reason not in (None, ""):
        raise ReviewRefused(400, "reason: only a dismissal takes a reason")
    else:
        reason = None
    site, device = _target(tx, user, event_id)
    state = ACTIONS[action]
    tx.execute(
        "UPDATE events SET review_state = ?, review_reason = ?, review_note = ?, reviewed_by = ?, reviewed_at = ?"
        " WHERE event_id = ?",
        (state, reason, note or None, user.username if action != "reopen" else None,
         now if action != "reopen" else None, event_id),
    )  # fmt: skip
    _log(tx, event_id, site, device, action, reason, note, user, now)
    mark_due(tx, site, device, now)
    logger.info("event %s %s by %s%s", event_id, state, user.username, f" ({reason})" if reason else "")


def contest(tx: Tx, user: User, event_id: str, note: str, now: float) -> None:
    if user.is_supervisor:
        raise ReviewRefused(403, "only the worker can contest a finding")
    if not note:
        raise ReviewRefused(400, "note: say why the finding is wrong")
    site, device = _target(tx, user, event_id)
    tx.execute(
        "UPDATE events SET contest_note = ?, contested_by = ?, contested_at = ? WHERE event_id = ?",
        (note, user.username, now, event_id),
    )
    _log(tx, event_id, site, device, "contest", None, note, user, now)
    mark_due(tx, site, device, now)
    logger.info("event %s contested by %s", event_id, user.username)


def _log(
    tx: Tx, event_id: str, site: str, device: str, action: str, reason: str | None, note: str, user: User, now: float
) -> None:
    tx.execute(
        "INSERT INTO review_log (event_id, site, device_id, action, reason, note, actor, role, at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (event_id, site, device, action, reason, note or None, user.username, user.role, now),
    )
