"""``deskwatch-desk run``: sample the idle time and report it at a bounded rate.

:class:`ReportThrottle` decides when a sample is worth a message:

- the first sample, and then every ``every_seconds`` (30 s by default), so the
  appliance's report never goes stale;
- at once when something changed that the appliance acts on: input came back after
  at least ``big_change_seconds`` of idleness (the worker is back: a pause overrun
  must not be reported), or the idle source came back after being unavailable;
- but never two messages less than ``min_gap_seconds`` (5 s, the floor) apart.

The loop also sends pause/resume requests that were queued while the broker was
away (:mod:`deskwatch_desk.requests`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from deskwatch_desk.idle import IdleSource, IdleUnavailable, say_unavailable_once
from deskwatch_desk.messages import activity_report

logger = logging.getLogger(__name__)

MIN_GAP_FLOOR = 5.0


@dataclass
class ReportThrottle:
    every_seconds: float = 30.0
    min_gap_seconds: float = MIN_GAP_FLOOR
    big_change_seconds: float = 60.0
    _last_sent_at: float | None = None
    _last_sent_idle: float | None = None
    _pending_urgent: bool = False

    def __post_init__(self) -> None:
        self.min_gap_seconds = max(MIN_GAP_FLOOR, self.min_gap_seconds)
        self.every_seconds = max(self.min_gap_seconds, self.every_seconds)

    def should_send(self, idle_seconds: float, mono: float) -> bool:
        """Whether to publish the sample taken at monotonic time ``mono``."""
        if self._last_sent_at is None:
            return True
        since_sent = mono - self._last_sent_at
        expected = (self._last_sent_idle or 0.0) + since_sent
        # Input came back after a long idle: the reported idle time would be far too high.
        if expected >= self.big_change_seconds and idle_seconds < expected - self.big_change_seconds / 2:
            self._pending_urgent = True
        if since_sent < self.min_gap_seconds:
            return False
        return self._pending_urgent or since_sent >= self.every_seconds

    def sent(self, idle_seconds: float, mono: float) -> None:
        self._last_sent_at = mono
        self._last_sent_idle = idle_seconds
        self._pending_urgent = False

    def source_returned(self) -> None:
        self._pending_urgent = True


Publish = Callable[[str, dict[str, object]], bool]


class ActivityReporter:
    """Samples ``source`` every ``sample_seconds`` and publishes through ``publish`` when the throttle says so."""

    def __init__(
        self,
        source: IdleSource,
        publish: Publish,
        *,
        throttle: ReportThrottle | None = None,
        sample_seconds: float = 1.0,
        monotonic: Callable[[], float],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        wait: Callable[[threading.Event, float], bool] | None = None,
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        self.source = source
        self.publish = publish
        self.throttle = throttle or ReportThrottle()
        self.sample_seconds = sample_seconds
        self.monotonic = monotonic
        self.now = now
        self.wait = wait or (lambda event, seconds: event.wait(seconds))
        self.on_tick = on_tick
        self.stop = threading.Event()
        self.sent = 0
        self._source_ok = True
        self._report_problem: str | None = None

    def step(self) -> bool:
        """Take one sample; returns True if a report was published."""
        try:
            idle = self.source.idle_seconds()
        except IdleUnavailable as exc:
            if self._source_ok:
                say_unavailable_once(f"{self.source.name} (while running)", str(exc))
                logger.warning("idle source %s stopped answering: %s", self.source.name, exc)
            self._source_ok = False
            return False
        if not self._source_ok:
            logger.info("idle source %s answers again", self.source.name)
            self._source_ok = True
            self.throttle.source_returned()
        mono = self.monotonic()
        if not self.throttle.should_send(idle, mono):
            return False
        try:
            payload = activity_report(idle, self.now(), self.source.name)
        except ValueError as exc:
            # what the appliance would refuse: no report (its idle rule then skips), said once
            if str(exc) != self._report_problem:
                logger.warning("idle time not reported: %s", exc)
                self._report_problem = str(exc)
            return False
        self._report_problem = None
        if not self.publish("activity", payload):
            logger.debug("activity not sent (broker away); the next sample will try again")
            return False
        self.throttle.sent(idle, mono)
        self.sent += 1
        logger.debug("activity sent: idle %.1f s", idle)
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            self.step()
            if self.on_tick is not None:
                self.on_tick()
            self.wait(self.stop, self.sample_seconds)
