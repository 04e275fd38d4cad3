"""The long-shift soak (``make soak``): its simulated clock and its verdicts (the soak itself
runs for minutes and is not part of ``make test``)."""

from __future__ import annotations

import threading
import time

from deskwatch_dev.soak import HOUR, START, SimClock, check_delivery, growth


def test_the_simulated_clock_moves_on_by_the_wait_and_stops_at_every_hour() -> None:
    hours: list[float] = []
    clock = SimClock(START, hours.append)
    t0, real0 = clock.monotonic(), time.monotonic()
    assert clock.wait(threading.Event(), 3 * HOUR + 60) is False
    assert time.monotonic() - real0 < 1.0  # three hours of waiting cost no real time
    assert clock.monotonic() - t0 >= 3 * HOUR + 60
    assert [round(h - START.timestamp()) for h in hours] == [3600, 7200, 10800]
    assert abs((clock.now() - START).total_seconds() - (3 * HOUR + 60)) < 1.0
    stop = threading.Event()
    stop.set()
    before = clock.monotonic()
    assert clock.wait(stop, HOUR) is True and clock.monotonic() - before < 1.0  # an event set: no time passes


def test_growth_that_levels_off_passes_and_growth_that_goes_on_does_not() -> None:
    assert growth([100, 140, 150, 150, 151, 150, 150, 151, 150], tolerance=2) == 0
    assert growth([100, 110, 120, 130, 140, 150, 160, 170, 180], tolerance=2) > 0


def test_delivery_check_names_duplicates_reordering_and_uncounted_losses() -> None:
    ok = [{"seq": n} for n in (1, 2, 3, 4)]
    assert check_delivery(ok, {"evicted": {}}) == []
    problems = check_delivery([{"seq": 1}, {"seq": 3}, {"seq": 2}, {"seq": 3}, {"seq": 6}], {"evicted": {}})
    assert any("twice" in p for p in problems)
    assert any("out of order" in p for p in problems)
    assert any("never received" in p for p in problems)
    assert check_delivery([{"seq": 1}, {"seq": 3}], {"evicted": {"event": 1}}) == []
