"""Schedule: nothing outside shifts, the configured rate, unpredictability, clock jumps."""

from __future__ import annotations

import itertools
import random
import threading
from datetime import UTC, datetime, timedelta

import pytest

from deskwatch.schedule import ScanPlanner, Schedule, ScheduleConfig, ShiftConfig, simulate
from tests.support.common import FakeClock

WEEKDAYS = ["mon", "tue", "wed", "thu", "fri"]


def berlin(shifts: list[ShiftConfig] | None = None, **kw: object) -> ScheduleConfig:
    return ScheduleConfig(
        timezone="Europe/Berlin",
        shifts=shifts or [ShiftConfig(WEEKDAYS, "09:00", "12:30"), ShiftConfig(WEEKDAYS, "13:15", "17:30")],
        **kw,  # type: ignore[arg-type]
    )


def test_simulated_week_matches_rate_and_never_leaves_shifts() -> None:
    cfg = berlin(scans_per_hour=3.0, min_gap_minutes=4.0)
    start = datetime(2026, 11, 30, 0, 0, tzinfo=UTC)  # Monday
    totals = []
    for seed in range(20):
        times, rows, outside = simulate(cfg, start, days=7, seed=seed)
        assert outside == 0
        hours = sum(r.shift_hours for r in rows)
        assert hours == pytest.approx(5 * 7.75)
        totals.append(len(times) / hours)
        # no scan in the lunch break or at the weekend
        for t in times:
            local = t.astimezone(Schedule(cfg).calendar.tz)
            assert local.weekday() < 5
            assert not (local.hour == 12 and local.minute >= 30) and not (local.hour == 13 and local.minute < 15)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 4 * 60
    mean_rate = sum(totals) / len(totals)
    assert mean_rate == pytest.approx(3.0, rel=0.05)


def test_scan_times_are_not_predictable_from_the_last_one() -> None:
    """Gaps beyond the minimum are exponential: the coefficient of variation is ~1."""
    cfg = berlin(scans_per_hour=4.0, min_gap_minutes=2.0)
    start = datetime(2026, 11, 30, tzinfo=UTC)
    times, _, _ = simulate(cfg, start, days=28, seed=3)
    cal = Schedule(cfg).calendar
    rests = []
    for a, b in itertools.pairwise(times):
        if cal.in_shift(a) and (b - a) < timedelta(hours=2) and b.date() == a.date():
            rests.append((b - a).total_seconds() - 120)
    mean = sum(rests) / len(rests)
    sd = (sum((r - mean) ** 2 for r in rests) / len(rests)) ** 0.5
    assert 0.8 < sd / mean < 1.2


def test_dst_keeps_shifts_on_local_time() -> None:
    cfg = berlin([ShiftConfig(["sun", "mon"], "09:00", "10:00")], mode="interval", interval_seconds=1800)
    sched = Schedule(cfg)
    # 2026-03-29 is the spring-forward Sunday in Berlin: 09:00 CEST is 07:00 UTC.
    t = sched.next_after(datetime(2026, 3, 29, 0, 0, tzinfo=UTC))
    assert t == datetime(2026, 3, 29, 7, 30, tzinfo=UTC)
    t = sched.next_after(datetime(2026, 3, 28, 0, 0, tzinfo=UTC))  # Saturday: none
    assert t == datetime(2026, 3, 29, 7, 30, tzinfo=UTC)


def test_a_shift_ending_in_the_spring_forward_gap_ends_when_the_clock_jumps() -> None:
    """Berlin, Sat 20:00-02:30: on 2026-03-29 the clock jumps from 02:00 CET to 03:00 CEST
    and never shows 02:30 - the shift is over at 03:00 CEST, not an hour of wall time later;
    no interval scan and no fixed check is planned after it."""
    shift = [ShiftConfig(["sat"], "20:00", "02:30")]
    sched = Schedule(berlin(shift, mode="interval", interval_seconds=300), random.Random(1))
    change = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)  # 03:00 CEST
    window = next(iter(sched.calendar.windows(datetime(2026, 3, 28, 12, tzinfo=UTC))))
    assert window == (datetime(2026, 3, 28, 19, 0, tzinfo=UTC), change)
    assert sched.calendar.in_shift(change - timedelta(seconds=1))
    assert not sched.calendar.in_shift(change)
    assert not sched.calendar.in_shift(change + timedelta(minutes=25))  # 03:25 CEST
    nxt = sched.next_after(change - timedelta(minutes=2))
    assert nxt is not None and nxt.astimezone(sched.calendar.tz).date() == datetime(2026, 4, 4).date()
    fixed = Schedule(berlin(shift, mode="fixed", fixed_times=["03:15"]))
    assert fixed.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC)) is None  # 03:15 is never in this shift


def test_a_shift_starting_in_the_spring_forward_gap_starts_when_the_clock_jumps() -> None:
    """Berlin, Sun 02:30-06:00: the clock shows 03:00 CEST right after 01:59:59 CET, already
    past 02:30 - the shift starts then (01:00 UTC), not half an hour later."""
    sched = Schedule(berlin([ShiftConfig(["sun"], "02:30", "06:00")], mode="interval", interval_seconds=300))
    change = datetime(2026, 3, 29, 1, 0, tzinfo=UTC)
    assert not sched.calendar.in_shift(change - timedelta(seconds=1))
    assert sched.calendar.in_shift(change)
    assert sched.next_after(datetime(2026, 3, 28, 12, tzinfo=UTC)) == change + timedelta(minutes=5)


def test_the_autumn_repeat_hour_is_unchanged() -> None:
    """On the fall-back night a shift ending at 02:30 ends at the first 02:30 (CEST)."""
    cal = Schedule(berlin([ShiftConfig(["sat"], "20:00", "02:30")])).calendar
    window = next(iter(cal.windows(datetime(2026, 10, 24, 12, tzinfo=UTC))))
    assert window == (datetime(2026, 10, 24, 18, 0, tzinfo=UTC), datetime(2026, 10, 25, 0, 30, tzinfo=UTC))


def test_overnight_shift_runs_past_midnight() -> None:
    cfg = ScheduleConfig(
        timezone="UTC", shifts=[ShiftConfig(["fri"], "22:00", "02:00")], mode="interval", interval_seconds=3600
    )
    sched = Schedule(cfg)
    fri = datetime(2026, 12, 4, 21, 0, tzinfo=UTC)
    times = []
    t = fri
    for _ in range(4):
        nxt = sched.next_after(t)
        assert nxt is not None
        times.append(nxt)
        t = nxt
    assert [x.hour for x in times[:3]] == [23, 0, 1]
    assert times[3].date() == datetime(2026, 12, 11).date()  # next Friday night


def test_fixed_times_only_on_shift_days() -> None:
    cfg = ScheduleConfig(
        timezone="Europe/London",
        shifts=[ShiftConfig(WEEKDAYS, "09:00", "17:00")],
        mode="fixed",
        fixed_times=["10:30", "15:00", "18:00"],
    )
    sched = Schedule(cfg)
    t = datetime(2026, 12, 4, 15, 30, tzinfo=UTC)  # Friday afternoon
    nxt = sched.next_after(t)
    assert nxt == datetime(2026, 12, 7, 10, 30, tzinfo=UTC)  # Monday; 18:00 is outside the shift


def test_no_shift_means_no_scan() -> None:
    cfg = ScheduleConfig(timezone="UTC", shifts=[ShiftConfig(["mon"], "09:00", "10:00")], mode="random")
    sched = Schedule(cfg, random.Random(1))
    t = datetime(2026, 11, 30, 9, 59, 59, tzinfo=UTC)
    nxt = sched.next_after(t)
    assert nxt is not None and nxt.weekday() == 0 and nxt > t + timedelta(days=6)


def test_a_gap_longer_than_the_next_two_weeks_of_shifts_is_still_planned() -> None:
    """Rare checks in a short shift: a random gap (or an interval) can be more shift time
    than the next 15 days hold. The scan is further ahead, not cancelled: a None here left
    the planner waiting for ever (no scan again until a restart)."""
    short = [ShiftConfig(WEEKDAYS, "09:00", "10:00")]
    cfg = ScheduleConfig(timezone="Europe/London", shifts=short, scans_per_hour=0.1, min_gap_minutes=5.0)
    t = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    for seed in range(200):
        nxt = Schedule(cfg, random.Random(seed)).next_after(t)
        assert nxt is not None and Schedule(cfg).calendar.in_shift(nxt), seed
    saturdays = ScheduleConfig(
        timezone="UTC", shifts=[ShiftConfig(["sat"], "10:00", "12:00")], mode="interval", interval_seconds=39600
    )
    # 11 h of shift time from this Saturday's start: five whole Saturdays and an hour of the sixth
    nxt = Schedule(saturdays).next_after(datetime(2026, 12, 5, 10, 0, tzinfo=UTC))
    assert nxt == datetime(2027, 1, 9, 11, 0, tzinfo=UTC)


def planner_for(clock: FakeClock, **kw: object) -> ScanPlanner:
    cfg = ScheduleConfig(
        timezone="UTC", shifts=[ShiftConfig(["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "00:00", "24:00")], **kw
    )  # type: ignore[arg-type]
    return ScanPlanner(Schedule(cfg, random.Random(5)), clock)


def run_planner(clock: FakeClock, planner: ScanPlanner, seconds: float, on_tick: object = None) -> list[datetime]:
    scans: list[datetime] = []
    end = clock.monotonic() + seconds
    stop = threading.Event()
    while clock.monotonic() < end:
        wait = min(planner.seconds_until_due(), 5.0)
        clock.wait(stop, wait)
        if callable(on_tick):
            on_tick()
        if planner.seconds_until_due() <= 0 and planner.take_due():
            scans.append(clock.now())
    return scans


def test_forward_clock_jump_does_not_flood(clock: FakeClock) -> None:
    planner = planner_for(clock, mode="random", scans_per_hour=6.0, min_gap_minutes=1.0)
    planner.plan()
    jumped = []

    def jump() -> None:
        if not jumped and clock.monotonic() > 1000 + 600:
            clock.jump_wall(6 * 3600)  # NTP corrects a wrong RTC by six hours
            jumped.append(True)

    scans = run_planner(clock, planner, 3600, jump)
    assert jumped
    # six hours of "missed" scans are not fired at once: the rate stays ~6/h
    assert 2 <= len(scans) <= 14
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(scans) if (b - a).total_seconds() < 3 * 3600]
    assert min(gaps) >= 60


def test_backward_clock_jump_does_not_starve(clock: FakeClock) -> None:
    planner = planner_for(clock, mode="interval", interval_seconds=300)
    planner.plan()
    jumped = []

    def jump() -> None:
        if not jumped and clock.monotonic() > 1000 + 400:
            clock.jump_wall(-5 * 3600)
            jumped.append(True)

    scans = run_planner(clock, planner, 3600, jump)
    assert jumped and 10 <= len(scans) <= 13  # still one every 5 minutes
