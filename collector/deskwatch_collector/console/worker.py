"""A worker's own findings: the picture that was sent, how it was reviewed, when it goes.

Pictures are deleted ``retention_days`` after they were taken (see :mod:`..retention`);
the page says how many days are left, and why there is no picture when there is none.
"""

from __future__ import annotations

import math
from typing import Any

from deskwatch_collector.auth import User
from deskwatch_collector.console.queue import Filters, Page, page
from deskwatch_collector.store import Tx

DAY = 86400.0

EVIDENCE_REASONS = {
    "not_allowed": "the rules for this finding send no picture",
    "rule": "the rules for this finding send no picture",
    "profile": "your employer's profile sends no pictures",
    "disabled": "pictures are switched off on your device",
    "no_frame": "there was no picture to send",
    "too_large": "the picture was too large to send",
    "evicted": "the picture was dropped while the network was down",
    "disk_full": "the device's disk was full",
    "failed": "the picture could not be made",
    "deleted or not received": "the picture has been deleted",
}


def days_left(captured_ts: float | None, retention_days: float, now: float) -> int | None:
    """Whole days left until the picture is deleted (0: less than a day), or None without a
    picture. Rounded down: a picture deleted in two hours is not "deleted in 1 day" (a worker
    who means to contest it before then must not be told there is more time than there is)."""
    if captured_ts is None:
        return None
    return max(0, math.floor((captured_ts + retention_days * DAY - now) / DAY))


def findings(tx: Tx, user: User, retention_days: float, now: float, *, before: str | None = None,
             after: str | None = None, limit: int = 50) -> Page:  # fmt: skip
    f = Filters(user=user, view="all")  # scope(user): a worker account sees only its own
    p = page(tx, f, kept_from=now - retention_days * DAY, before=before, after=after, limit=limit)
    for ev in p.events:
        annotate(ev, retention_days, now)
    return p


def annotate(ev: dict[str, Any], retention_days: float, now: float) -> None:
    ev["days_left"] = days_left(ev.get("captured_ts"), retention_days, now) if ev["has_picture"] else None
    captured = ev.get("captured_ts")
    ev["deleted_ts"] = float(captured) + retention_days * DAY if ev["has_picture"] and captured is not None else None
    reason = ev.get("evidence_reason")
    ev["no_picture_why"] = (
        None if ev["has_picture"] else EVIDENCE_REASONS.get(reason or "", reason or "no picture was sent")
    )
