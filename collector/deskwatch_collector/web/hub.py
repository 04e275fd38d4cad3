"""Counts the writer's commits and wakes coroutines waiting for the next one.

The CLI hands one to the intake (``on_stored``) and to :class:`SupervisorServer`. No route
waits on it since the first landing's live stream was removed (the console polls); it
goes when the CLI stops making it.

:meth:`Hub.notify` may be called from any thread: it bumps a version and sets every
waiter's :class:`asyncio.Event` through its loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Hub:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def version(self) -> int:
        return self._version

    def notify(self, event_ids: list[str] | None = None) -> None:
        with self._lock:
            self._version += 1
            waiters = list(self._waiters)
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def wait(self, seen: int, timeout: float) -> int:
        """Return the current version once it differs from ``seen``, or after ``timeout`` seconds."""
        if self._version != seen:
            return self._version
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.add(waiter)
        try:
            if self._version == seen:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter[1].wait(), timeout)
        finally:
            with self._lock:
                self._waiters.discard(waiter)
        return self._version
