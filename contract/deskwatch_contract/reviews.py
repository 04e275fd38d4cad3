"""The ``reviews`` message: what the collector holds about one device's recent findings.

The collector publishes it retained on ``deskwatch/v1/{site}/{device_id}/reviews`` each
time a finding of the device is stored, reviewed or contested; the device keeps the
latest and shows it to the worker (``deskwatch history``): was the finding received,
how was it reviewed, was it contested, is the picture still kept and until when.

:func:`build` is the collector's side, :func:`parse` the device's. The device trusts
nothing it receives: at most 256 KiB, a JSON object with this kind's ``schema``, its
own site and device id, at most 500 findings, every field checked; a bad message is
rejected whole (the previous list stays) with a reason for one log line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from deskwatch_contract import schema_id
from deskwatch_contract.formats import rfc3339
from deskwatch_contract.jsonutil import JsonRejected, loads_object

MAX_BYTES = 256 * 1024
MAX_FINDINGS = 500
MAX_REASON = 200
STATES = ("open", "acknowledged", "dismissed")
PICTURES = ("kept", "deleted", "none")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")


class ReviewsRejected(ValueError):
    """A ``reviews`` message the device will not use (the message says why)."""


@dataclass(frozen=True)
class ReviewedFinding:
    event_id: str
    state: str  # open, acknowledged (upheld), dismissed
    contested: bool
    picture: str  # kept, deleted, none
    reason: str | None = None
    wrong: bool | None = None
    reviewed_at: str | None = None  # RFC 3339
    picture_until: str | None = None  # RFC 3339

    def as_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "state": self.state,
            "reason": self.reason,
            "wrong": self.wrong,
            "reviewed_at": self.reviewed_at,
            "contested": self.contested,
            "picture": self.picture,
            "picture_until": self.picture_until,
        }


@dataclass(frozen=True)
class Reviews:
    site: str
    device_id: str
    at: str
    retention_days: float
    findings: list[ReviewedFinding]


def build(
    site: str, device_id: str, at: datetime, retention_days: float, findings: list[ReviewedFinding]
) -> dict[str, Any]:
    """The payload (the newest ``MAX_FINDINGS`` findings, as given: newest first)."""
    return {
        "schema": schema_id("reviews"),
        "site": site,
        "device_id": device_id,
        "at": rfc3339(at),
        "retention_days": retention_days,
        "findings": [f.as_json() for f in findings[:MAX_FINDINGS]],
    }


def _time(value: Any, key: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise ReviewsRejected(f"{key} must be an RFC 3339 time or null")
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ReviewsRejected(f"{key} is not a real time") from None
    return value


def _finding(item: Any, i: int) -> ReviewedFinding:
    where = f"findings[{i}]"
    if not isinstance(item, dict):
        raise ReviewsRejected(f"{where} must be an object")
    event_id, state, picture = item.get("event_id"), item.get("state"), item.get("picture")
    if not isinstance(event_id, str) or not UUID.fullmatch(event_id):
        raise ReviewsRejected(f"{where}.event_id must be a UUID")
    if state not in STATES:
        raise ReviewsRejected(f"{where}.state must be one of {', '.join(STATES)}")
    if picture not in PICTURES:
        raise ReviewsRejected(f"{where}.picture must be one of {', '.join(PICTURES)}")
    contested, wrong, reason = item.get("contested"), item.get("wrong"), item.get("reason")
    if not isinstance(contested, bool):
        raise ReviewsRejected(f"{where}.contested must be true or false")
    if wrong is not None and not isinstance(wrong, bool):
        raise ReviewsRejected(f"{where}.wrong must be true, false or null")
    if reason is not None and (not isinstance(reason, str) or len(reason) > MAX_REASON):
        raise ReviewsRejected(f"{where}.reason must be text of at most {MAX_REASON} characters, or null")
    if reason is not None and any(ord(c) < 32 for c in reason):
        raise ReviewsRejected(f"{where}.reason contains control characters")
    return ReviewedFinding(
        event_id=event_id.lower(),
        state=str(state),
        contested=contested,
        picture=str(picture),
        reason=reason,
        wrong=wrong,
        reviewed_at=_time(item.get("reviewed_at"), f"{where}.reviewed_at"),
        picture_until=_time(item.get("picture_until"), f"{where}.picture_until"),
    )


def parse(raw: bytes, site: str, device_id: str) -> Reviews:
    """A checked ``reviews`` message for this device; raises :class:`ReviewsRejected`."""
    try:
        obj = loads_object(raw, max_bytes=MAX_BYTES, max_depth=6)
    except JsonRejected as exc:
        raise ReviewsRejected(str(exc)) from None
    if obj.get("schema") != schema_id("reviews"):
        raise ReviewsRejected(f"schema must be {schema_id('reviews')!r}")
    if obj.get("site") != site or obj.get("device_id") != device_id:
        raise ReviewsRejected("it names another device")
    days = obj.get("retention_days")
    if isinstance(days, bool) or not isinstance(days, (int, float)) or not 0 < days <= 20:
        raise ReviewsRejected("retention_days must be a number above 0 and at most 20")
    items = obj.get("findings")
    if not isinstance(items, list) or len(items) > MAX_FINDINGS:
        raise ReviewsRejected(f"findings must be a list of at most {MAX_FINDINGS}")
    at = _time(obj.get("at"), "at")
    if at is None:
        raise ReviewsRejected("at is required")
    return Reviews(site, device_id, at, float(days), [_finding(item, i) for i, item in enumerate(items)])
