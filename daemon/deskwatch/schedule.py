"""When scans happen: shift windows in the worker's time zone, and scan times inside them.

Pure and clock-injected. Shift windows are wall-clock (a shift is "09:00-17:30 in
Europe/Berlin", DST included); waiting is monotonic (:class:`ScanPlanner`), so a wall
clock that jumps (NTP sync after boot, a wrong RTC) neither floods nor starves scans.

Modes:
- ``random``: a Poisson process over *shift time* at ``scans_per_hour`` with a minimum
  gap: each gap is ``min_gap + Exp(mean = 3600/rate - min_gap)``, so the long-run rate
  is exactly the configured one and, the exponential being memoryless, the time since
  the last scan tells the worker nothing about the next.
- ``interval``: every ``interval_seconds`` of shift time (demos, technicians).
- ``fixed``: at the listed local times on shift days (the ``uk`` profile's scheduled
  desk checks).
Nothing is ever scheduled outside a shift.
"""

from __future__ import annotations

import logging
import math
import random
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from deskwatch_contract.configfile import Report, setting

log = logging.getLogger(__name__)

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HHMM = r"([01]\d|2[0-3]):[0-5]\d|24:00"


@dataclass(frozen=True)
class ShiftConfig:
    """One working window, repeated on the listed weekdays."""

    days: list[str] = setting(doc="Weekdays: mon tue wed thu fri sat sun.", example=["mon", "tue", "wed", "thu", "fri"])
    start: str = setting(
        doc="Local start time, HH:MM.",
        pattern=_HHMM,
        hint='must be a time as HH:MM, e.g. "09:00" (quoted)',
        example="09:00",
    )
    end: str = setting(
        doc="Local end time, HH:MM (24:00 for midnight; earlier than start means the shift runs past midnight).",
        pattern=_HHMM,
        hint='must be a time as HH:MM, e.g. "17:30" (quoted)',
        example="17:30",
    )

    def validate(self, report: Report) -> None:
        for d in self.days:
            if d not in DAYS:
                report("days", f"'{d}' is not a weekday; use {' '.join(DAYS)}")
        if not self.days:
            report("days", "list at least one weekday")
        if self.start == "24:00":  # the listed day's end: the shift would be the next day's (24:00-00:00: none)
            report("start", 'is the end of the day: a shift that starts at midnight starts at "00:00"')
        elif self.start == self.end:
            report("end", "equals start: the shift would be empty (use 00:00-24:00 for all day)")


def _default_shifts() -> list[ShiftConfig]:
    return [ShiftConfig(days=["mon", "tue", "wed", "thu", "fri"], start="09:00", end="17:00")]


@dataclass(frozen=True)
class ScheduleConfig:
    """When the device may look: never outside a shift."""

    timezone: str = setting("UTC", doc="IANA time zone of the desk, e.g. Europe/Berlin.", example="Europe/Berlin")
    shifts: list[ShiftConfig] = setting(
        default_factory=_default_shifts, doc="Working windows. Scans happen only inside them."
    )
    mode: Literal["random", "interval", "fixed"] = setting(
        "random",
        doc="random (unpredictable times at scans_per_hour), interval (every interval_seconds: demos and technicians) or fixed (at fixed_times: the uk profile).",
    )
    scans_per_hour: float = setting(2.0, doc="random mode: average scans per hour of shift.", minimum=0.1, maximum=60.0)
    min_gap_minutes: float = setting(5.0, doc="random mode: least time between two scans.", minimum=0.0, maximum=240.0)
    interval_seconds: int = setting(300, doc="interval mode: seconds between scans.", minimum=5, maximum=86_400)
    fixed_times: list[str] = setting(
        default_factory=list,
        doc="fixed mode: local times (HH:MM) of the scheduled checks on shift days.",
        example=["10:30", "15:00"],
    )
    remote_scans_per_hour: int = setting(
        3,
        doc="On-demand scans (cmd/scan from the central side) allowed per hour, and only inside a shift; more are refused and audited. 0: never.",
        minimum=0,
        maximum=12,
    )
    require_synced_clock: bool = setting(
        True,
        doc="Open the camera only while the wall clock is known to be right (synchronised by NTP). A Raspberry Pi has no clock of its own: booted without network, it shows the time it was switched off, and whether the worker's shift is on cannot be told; scheduled and on-demand scans are skipped (the status says why) until the clock is synchronised. A system that cannot tell counts as synchronised. false: scan by the clock as it is (a development machine or a VM whose clock nobody synchronises).",
    )

    def validate(self, report: Report) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            report("timezone", f"unknown time zone '{self.timezone}'; use an IANA name such as Europe/London")
        mean_gap = 3600.0 / self.scans_per_hour
        if self.mode == "random" and self.min_gap_minutes * 60 >= 0.9 * mean_gap:
            report(
                "min_gap_minutes",
                f"must be well below the mean gap of {mean_gap / 60:.1f} min that scans_per_hour implies",
            )
        if self.mode == "fixed":
            if not self.fixed_times:
                report("fixed_times", "fixed mode needs at least one time, e.g. ['10:30', '15:00']")
            for t in self.fixed_times:
                if not re.fullmatch(_HHMM, t):
                    report("fixed_times", f"'{t}' is not HH:MM")
                elif self.shifts and not any(_shift_holds(s, t) for s in self.shifts):
                    report(
                        "fixed_times",
                        f"'{t}' is in no shift: the device never scans outside shifts, so that check would never "
                        "happen; move it into a shift or drop it",
                    )
        if not self.shifts:
            report("shifts", "list at least one shift; the device never scans outside shifts")


def _hhmm(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def _shift_holds(shift: ShiftConfig, text: str) -> bool:
    """Does the shift's clock window hold the time of day ``text`` (on some day: a shift past
    midnight holds the small hours)? A shift whose own times are broken holds nothing (its own
    error is reported)."""
    if not (re.fullmatch(_HHMM, shift.start) and re.fullmatch(_HHMM, shift.end)):
        return False
    t, start, end = _hhmm(text), _hhmm(shift.start), _hhmm(shift.end)
    return start <= t < end if start < end else (t >= start or t < end)


class ShiftCalendar:
    """Shift windows as UTC intervals, computed from local times with DST."""

    def __init__(self, cfg: ScheduleConfig):
        self.tz = ZoneInfo(cfg.timezone)
        # per weekday index: list of (start_minute, end_minute) where end may exceed 1440
        self._daily: dict[int, list[tuple[int, int]]] = {i: [] for i in range(7)}
        for shift in cfg.shifts:
            start, end = _hhmm(shift.start), _hhmm(shift.end)
            if end <= start:
                end += 24 * 60  # runs past midnight
            for d in shift.days:
                self._daily[DAYS.index(d)].append((start, end))

    def _local(self, day: date, minute: int) -> datetime:
        """The instant the worker's clock shows ``minute`` past midnight of ``day``.

        Wall-clock minutes are added in local time, then converted: 09:00 stays 09:00
        across DST. A time the clock skips (the spring-forward gap) is the instant of the
        jump, the first at which the clock shows that time or later: a shift ending at
        02:30 ends when the clock jumps from 02:00 to 03:00 (not at 03:30, an hour of wall
        time later), one starting at 02:30 starts then. In the autumn's repeated hour a time
        is its first occurrence.
        """
        naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
        at = naive.replace(tzinfo=self.tz).astimezone(UTC)  # in a gap: past the jump by the gap's offset
        if at.astimezone(self.tz).replace(tzinfo=None) == naive:
            return at
        return self._jump_before(at, naive.replace(tzinfo=self.tz, fold=1).astimezone(UTC))

    def _jump_before(self, after: datetime, before: datetime) -> datetime:
        """The instant the zone's offset changes between ``before`` and ``after`` (UTC,
        whole seconds; zoneinfo says nothing of its transitions but the offsets)."""
        offset = after.astimezone(self.tz).utcoffset()
        while (after - before).total_seconds() > 1:
            mid = before + timedelta(seconds=(after - before).total_seconds() // 2)
            if mid.astimezone(self.tz).utcoffset() == offset:
                after = mid
            else:
                before = mid
        return after

    def windows(self, start: datetime, horizon_days: int = 15) -> Iterator[tuple[datetime, datetime]]:
        """Merged shift windows (UTC) that end after ``start``, in order."""
        first = start.astimezone(self.tz).date() - timedelta(days=1)
        spans: list[tuple[datetime, datetime]] = []
        for offset in range(horizon_days + 1):
            day = first + timedelta(days=offset)
            for start_min, end_min in self._daily[day.weekday()]:
                spans.append((self._local(day, start_min), self._local(day, end_min)))
        spans.sort()
        merged: list[tuple[datetime, datetime]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], e))
            else:
                merged.append((s, e))
        for s, e in merged:
            if e > start:
                yield s, e

    def in_shift(self, t: datetime) -> bool:
        for s, e in self.windows(t, horizon_days=2):
            if s <= t < e:
                return True
            if s > t:
                break
        return False

    def advance(self, t: datetime, seconds: float) -> datetime | None:
        """The instant ``seconds`` of shift time after ``t`` (None if no shift ahead).

        As far ahead as it takes: rare checks in a short shift (a random gap of 20 h with an
        hour a day) reach past one :meth:`windows` horizon, which is then read on from its
        last window's end. Only a horizon without any shift time means no shift ahead."""
        remaining = seconds
        cursor = t
        while True:
            last_end = None
            for s, e in self.windows(cursor):
                begin = max(s, cursor)
                available = (e - begin).total_seconds()
                if remaining < available:
                    return begin + timedelta(seconds=remaining)
                if available > 0:
                    remaining -= available
                    last_end = e
            if last_end is None:
                return None
            cursor = last_end


class Schedule:
    """Pure: given an instant, the next scan time. Randomness comes from ``rng``."""

    def __init__(self, cfg: ScheduleConfig, rng: random.Random | None = None):
        self.cfg = cfg
        self.calendar = ShiftCalendar(cfg)
        self.rng = rng or random.SystemRandom()

    def next_after(self, t: datetime) -> datetime | None:
        cfg = self.cfg
        if cfg.mode == "interval":
            return self.calendar.advance(t, float(cfg.interval_seconds))
        if cfg.mode == "fixed":
            return self._next_fixed(t)
        min_gap = cfg.min_gap_minutes * 60.0
        mean_rest = 3600.0 / cfg.scans_per_hour - min_gap
        gap = min_gap + self.rng.expovariate(1.0 / mean_rest)
        return self.calendar.advance(t, gap)

    def _next_fixed(self, t: datetime) -> datetime | None:
        tz = self.calendar.tz
        local_day = t.astimezone(tz).date()
        for offset in range(15):
            day = local_day + timedelta(days=offset)
            for text in sorted(self.cfg.fixed_times):
                at = self.calendar._local(day, _hhmm(text))
                if at > t and self.calendar.in_shift(at):
                    return at
        return None


class Clock(Protocol):
    """Wall clock for windows, monotonic clock for waiting."""

    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def synchronised(self) -> bool | None:
        """Is the wall clock known to be right (NTP)? None: cannot tell."""
        ...

    def wait(self, event: threading.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` or until ``event`` is set; True if it was set."""
        ...


class SystemClock:
    SYNC_CHECK_SECONDS = 60.0  # the answer changes rarely: once after boot

    def __init__(self) -> None:
        self._synced: tuple[float, bool | None] | None = None  # (monotonic time asked, answer)

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def synchronised(self) -> bool | None:
        """The system's answer (timesyncd's flag, the kernel's NTP state:
        :func:`deskwatch.system.clock.clock_sync`), asked at most once a minute."""
        now = time.monotonic()
        if self._synced is None or now >= self._synced[0] + self.SYNC_CHECK_SECONDS:
            from deskwatch.system.clock import clock_sync

            self._synced = (now, clock_sync().synced)
        return self._synced[1]

    def wait(self, event: threading.Event, seconds: float) -> bool:
        return event.wait(max(0.0, seconds))


@dataclass
class ScanPlanner:
    """Turns the schedule's wall-clock plan into a monotonic deadline.

    If the wall clock moves against the monotonic clock by more than ``jump_tolerance``
    seconds since the plan was made, the plan is re-drawn from the new wall time: a
    forward jump gives one scan, not a burst of overdue ones; a backward jump does not
    leave the device waiting hours for a time that has "not come yet".
    """

    schedule: Schedule
    clock: Clock
    jump_tolerance: float = 120.0
    due_wall: datetime | None = field(default=None, init=False)
    _due_mono: float = field(default=math.inf, init=False)
    _wall_at_plan: datetime | None = field(default=None, init=False)
    _mono_at_plan: float = field(default=0.0, init=False)

    def plan(self) -> datetime | None:
        wall, mono = self.clock.now(), self.clock.monotonic()
        self.due_wall = self.schedule.next_after(wall)
        self._wall_at_plan, self._mono_at_plan = wall, mono
        if self.due_wall is None:
            self._due_mono = math.inf
        else:
            self._due_mono = mono + (self.due_wall - wall).total_seconds()
        return self.due_wall

    def seconds_until_due(self) -> float:
        if self._wall_at_plan is None:
            self.plan()
        wall, mono = self.clock.now(), self.clock.monotonic()
        assert self._wall_at_plan is not None
        drift = (wall - self._wall_at_plan).total_seconds() - (mono - self._mono_at_plan)
        if abs(drift) > self.jump_tolerance:
            log.warning("wall clock moved %+.0f s against the monotonic clock; re-planning scans", drift)
            self.plan()
            wall, mono = self.clock.now(), self.clock.monotonic()
        return max(0.0, self._due_mono - mono)

    def take_due(self) -> bool:
        """Call when the deadline passed: True if a scan should run now. Plans the next."""
        in_shift = self.schedule.calendar.in_shift(self.clock.now())
        self.plan()
        if not in_shift:
            log.info("planned scan fell outside a shift (clock change?); skipped")
        return in_shift


@dataclass
class SimulationRow:
    hour: int
    shift_hours: float
    scans: int


def simulate(
    cfg: ScheduleConfig, start: datetime, days: int, seed: int = 1
) -> tuple[list[datetime], list[SimulationRow], int]:
    """Scan times over ``days`` from ``start``; per local hour-of-day counts; scans outside shifts."""
    sched = Schedule(cfg, random.Random(seed))
    end = start + timedelta(days=days)
    times: list[datetime] = []
    t = start
    while True:
        nxt = sched.next_after(t)
        if nxt is None or nxt >= end:
            break
        times.append(nxt)
        t = nxt
    shift_seconds = [0.0] * 24
    for s, e in sched.calendar.windows(start, horizon_days=days + 1):
        s, e = max(s, start), min(e, end)
        cur = s
        while cur < e:
            local = cur.astimezone(sched.calendar.tz)
            nxt_hour = (local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)).astimezone(UTC)
            stop = min(e, nxt_hour)
            shift_seconds[local.hour] += (stop - cur).total_seconds()
            cur = stop
    counts = [0] * 24
    outside = 0
    for ts in times:
        counts[ts.astimezone(sched.calendar.tz).hour] += 1
        if not sched.calendar.in_shift(ts):
            outside += 1
    rows = [
        SimulationRow(h, shift_seconds[h] / 3600.0, counts[h]) for h in range(24) if shift_seconds[h] > 0 or counts[h]
    ]
    return times, rows, outside
