"""The viewer's time zone and how the console prints times: always with the zone's name.

The browser tells its IANA zone (a cookie the page's script sets, or ``tz=`` on the API);
anything unknown falls back to UTC, never to the server's zone.

A stored time no calendar can show (year 10000 in UTC: the collector refuses such times
now, but rows stored before it did remain) is shown at the calendar's edge, never fails
the page: one row must not take a queue down.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+){0,2}$")


@cache
def _known() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str | None) -> ZoneInfo:
    """The zone called ``name``, or UTC when it is missing or not a known IANA name."""
    if name and len(name) <= 64 and ZONE_NAME.match(name) and name in _known():
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return ZoneInfo("UTC")


# The instants every zone can show: a day inside the years 1 to 9999 that datetime knows.
_FIRST_SHOWN = datetime(1, 1, 2, tzinfo=UTC)
_LAST_SHOWN = datetime(9999, 12, 30, tzinfo=UTC)


def _utc(ts: float) -> datetime:
    """``ts`` as a UTC datetime, held to the span every zone can show (see the module's docstring)."""
    try:
        t = datetime.fromtimestamp(ts, UTC)
    except (ValueError, OverflowError, OSError):
        return _LAST_SHOWN if ts > 0 else _FIRST_SHOWN
    return min(max(t, _FIRST_SHOWN), _LAST_SHOWN)


def local(ts: float, tz: ZoneInfo) -> datetime:
    return _utc(ts).astimezone(tz)


def show(ts: float | None, tz: ZoneInfo, seconds: bool = False) -> str:
    """``2026-11-29 10:15 CET`` (the zone's abbreviation; the offset where it has none)."""
    if ts is None:
        return ""
    t = local(ts, tz)
    name = t.tzname() or ""
    if not name or name[0] in "+-":  # zones without an abbreviation: "UTC-03", "UTC+0530"
        name = "UTC" + (name or t.strftime("%z"))
    return t.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M") + " " + name


def iso_utc(ts: float) -> str:
    return _utc(ts).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def day_start(d: date, tz: ZoneInfo) -> float:
    """The instant a local calendar day starts (DST-aware)."""
    return datetime.combine(d, time(0), tzinfo=tz).timestamp()


def day_end(d: date, tz: ZoneInfo) -> float:
    """The instant the local day after ``d`` starts: a date range's ``to`` is inclusive."""
    return day_start(d + timedelta(days=1), tz)


def offset_spans(since: float, until: float, tz: ZoneInfo) -> list[tuple[float, float, int]]:
    """``[since, until)`` cut where ``tz`` changes its UTC offset: ``(start, end, offset in
    seconds)`` pieces, in order - one for a range without a change. ``(ts + offset) // 86400``
    is then the local day of a time inside a piece, as a database can count it."""

    def offset(ts: float) -> int:
        return int(local(ts, tz).utcoffset().total_seconds())  # type: ignore[union-attr]

    spans: list[tuple[float, float, int]] = []
    start, current, probe = since, offset(since), since
    while probe < until:
        nxt = min(probe + _OFFSET_PROBE, until)
        if offset(nxt) != current:
            # Offsets change at a whole second: the first second of the new one.
            lo, hi = math.floor(probe), math.ceil(nxt)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == current else (lo, mid)
            if hi < until:
                spans.append((start, float(hi), current))
                start, current = float(hi), offset(hi)
        probe = nxt
    spans.append((start, until, current))
    return spans


_OFFSET_PROBE = 6 * 3600  # no zone changes its offset twice within six hours


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 90:
        return f"{s} s ago"
    if s < 90 * 60:
        return f"{round(s / 60)} min ago"
    if s < 36 * 3600:
        return f"{round(s / 3600)} h ago"
    return f"{round(s / 86400)} days ago"
