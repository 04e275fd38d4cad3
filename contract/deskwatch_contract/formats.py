"""The contract's value formats, one home for every side: times are RFC 3339 in UTC
with milliseconds and a ``Z``; ids (``event_id``, ``scan_id``, ``request_id`` made by
deskwatch) are UUIDv7, time-ordered and unique without coordination."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with milliseconds and a ``Z``: ``2026-11-29T10:15:02.123Z``."""
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts.microsecond // 1000:03d}Z"


def new_id(now: datetime | None = None) -> str:
    """A UUIDv7: time-ordered, unique without coordination, sortable in a database."""
    ms = int((now or utcnow()).timestamp() * 1000)
    rand = uuid.uuid4().int
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= (rand & ((1 << 12) - 1)) << 64  # rand_a
    value |= 0b10 << 62  # RFC 4122 variant
    value |= (rand >> 12) & ((1 << 62) - 1)  # rand_b
    return str(uuid.UUID(int=value))
