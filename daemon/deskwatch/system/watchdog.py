"""A systemd watchdog that only pings while the daemon makes real progress.

A thread that pings on a timer proves nothing: the process is alive while the scan
loop hangs in a camera read. :class:`ProgressWatchdog` sends ``WATCHDOG=1`` only
while *every* registered component (scan loop, publisher, ...) has shown progress
within its allowance. Components either call :meth:`beat` themselves or are
:meth:`watch`-ed through a probe returning the monotonic time of their last
progress (``Delivery.progress``). When one stalls, the pings stop and systemd
restarts the daemon after ``WatchdogSec``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

Clock = Callable[[], float]


class Pinger(Protocol):
    def watchdog(self) -> bool: ...


@dataclass
class _Component:
    allowance: float
    last: float
    probe: Callable[[], float] | None = None
    stalled: bool = False


class ProgressWatchdog:
    """Pings ``notifier.watchdog()`` from :meth:`tick` while all components are fresh.

    ``clock`` is monotonic seconds (``time.monotonic``); ``stall_after`` the default
    allowance for components that do not give their own.
    """

    def __init__(self, notifier: Pinger, clock: Clock = time.monotonic, stall_after: float = 60.0):
        if stall_after <= 0:
            raise ValueError("stall_after must be positive")
        self.notifier = notifier
        self.clock = clock
        self.stall_after = stall_after
        self._components: dict[str, _Component] = {}
        self._lock = threading.Lock()

    def register(self, component: str, allowance: float | None = None) -> None:
        """Start watching ``component``; it counts as fresh now."""
        with self._lock:
            self._components[component] = _Component(allowance or self.stall_after, self.clock())

    def watch(self, component: str, probe: Callable[[], float], allowance: float | None = None) -> None:
        """Watch a component through ``probe()``: the clock time of its last progress."""
        with self._lock:
            self._components[component] = _Component(allowance or self.stall_after, self.clock(), probe=probe)

    def unregister(self, component: str) -> None:
        with self._lock:
            self._components.pop(component, None)

    def beat(self, component: str) -> None:
        """``component`` made progress now (registers it on first use)."""
        now = self.clock()
        with self._lock:
            entry = self._components.get(component)
            if entry is None:
                self._components[component] = _Component(self.stall_after, now)
            else:
                entry.last = now

    def stalled(self) -> dict[str, float]:
        """Components past their allowance, with the seconds since their last progress."""
        now = self.clock()
        out: dict[str, float] = {}
        with self._lock:
            for name, entry in self._components.items():
                last = entry.last
                if entry.probe is not None:
                    try:
                        last = max(last, float(entry.probe()))
                    except Exception:
                        log.exception("watchdog probe for %s failed", name)
                age = now - last
                if age > entry.allowance:
                    out[name] = age
        return out

    def tick(self) -> bool:
        """Ping systemd if every component is fresh; True when a ping was sent."""
        stalled = self.stalled()
        with self._lock:
            for name, entry in self._components.items():
                was, now_stalled = entry.stalled, name in stalled
                entry.stalled = now_stalled
                if now_stalled and not was:
                    log.error(
                        "%s made no progress for %.0f s (allowed %.0f s): stopping watchdog pings "
                        "so systemd restarts the daemon",
                        name,
                        stalled[name],
                        entry.allowance,
                        extra={"journal": {"DESKWATCH_EVENT": "watchdog_stall", "COMPONENT": name}},
                    )
                elif was and not now_stalled:
                    log.info("%s is making progress again; watchdog pings resume", name)
        if stalled:
            return False
        return bool(self.notifier.watchdog())


class WatchdogThread(threading.Thread):
    """Calls :meth:`ProgressWatchdog.tick` every ``interval`` seconds until stopped."""

    def __init__(self, watchdog: ProgressWatchdog, interval: float) -> None:
        super().__init__(name="watchdog", daemon=True)
        self.watchdog = watchdog
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.watchdog.tick()
            except Exception:
                log.exception("watchdog tick failed")
            self._stop_event.wait(self.interval)

    def stop(self, timeout: float = 2.0) -> None:
        self._stop_event.set()
        self.join(timeout)


def tick_interval(watchdog_seconds: float | None, default: float = 10.0) -> float:
    """How often to tick: a third of systemd's timeout (so one late tick is harmless)."""
    if not watchdog_seconds:
        return default
    return max(0.5, watchdog_seconds / 3)
