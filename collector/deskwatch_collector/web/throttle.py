"""Sign-in throttling and bounded password hashing.

:class:`LoginThrottle` counts every attempt as a failure *before* the password is hashed
(a success refunds it), so parallel guesses cannot slip past the limit while their hashes
run. Three limits, chosen so that neither side can lock the other out:

- per user *and* address (``per_pair``): one client guessing one account;
- per address (``per_address``): one client trying many accounts (an office NAT gets
  several users' worth);
- per user (``per_user``): many addresses guessing one account.

A pair that has signed in successfully before (a *known* address for that user) is held
only to ``per_pair``: an attacker elsewhere who exhausts alice's per-user budget, or a
colleague behind the same NAT who exhausts the address budget, does not lock alice out
of her usual address. Every table is an LRU map with at most ``max_keys`` keys, and each
key keeps at most ``limit`` timestamps, so memory stays bounded whatever user names an
attacker invents.

:class:`HashGate` runs password hashes on a fixed number of threads with a short queue;
past that it answers "busy" at once instead of letting memory grow (scrypt takes 16 MiB
per hash).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class ThrottleLimits:
    per_pair: int = 5
    per_address: int = 30
    per_user: int = 20
    window: float = 300.0
    max_keys: int = 10_000
    known_seconds: float = 30 * 86400.0


class _Windows:
    """Recent failure times per key; least recently used keys are forgotten past ``max_keys``."""

    def __init__(self, limit: int, window: float, max_keys: int) -> None:
        self.limit, self.window, self.max_keys = limit, window, max_keys
        self._times: OrderedDict[object, deque[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def full(self, key: object, now: float) -> bool:
        times = self._times.get(key)
        if times is None:
            return False
        while times and now - times[0] > self.window:
            times.popleft()
        return len(times) >= self.limit

    def add(self, key: object, now: float) -> None:
        times = self._times.get(key)
        if times is None:
            times = self._times[key] = deque(maxlen=self.limit)
            while len(self._times) > self.max_keys:
                self._times.popitem(last=False)
        else:
            self._times.move_to_end(key)
        times.append(now)

    def refund(self, key: object, at: float) -> None:
        times = self._times.get(key)
        if times is not None and at in times:
            times.remove(at)


@dataclass(frozen=True)
class Attempt:
    """One counted sign-in attempt; pass it to :meth:`LoginThrottle.succeeded` on success."""

    username: str
    address: str
    at: float
    keys: tuple[tuple[str, object], ...] = field(default=())


class LoginThrottle:
    def __init__(self, limits: ThrottleLimits | None = None) -> None:
        self.limits = limits = limits or ThrottleLimits()
        self._lock = threading.Lock()
        self._tables = {
            "pair": _Windows(limits.per_pair, limits.window, limits.max_keys),
            "address": _Windows(limits.per_address, limits.window, limits.max_keys),
            "user": _Windows(limits.per_user, limits.window, limits.max_keys),
        }
        self._known: OrderedDict[tuple[str, str], float] = OrderedDict()

    def keys_held(self) -> int:
        """How many keys the throttle remembers (bounded by ``4 * max_keys``)."""
        with self._lock:
            return sum(len(t) for t in self._tables.values()) + len(self._known)

    def _is_known(self, pair: tuple[str, str], now: float) -> bool:
        seen = self._known.get(pair)
        return seen is not None and now - seen <= self.limits.known_seconds

    def attempt(self, username: str, address: str, now: float) -> Attempt | None:
        """Count an attempt as failed now; ``None`` (and nothing counted) when a limit is reached."""
        username = username[:64]
        pair = (username, address)
        checks: list[tuple[str, object]] = [("pair", pair)]
        with self._lock:
            if not self._is_known(pair, now):
                checks += [("address", address), ("user", username)]
            if any(self._tables[table].full(key, now) for table, key in checks):
                return None
            for table, key in checks:
                self._tables[table].add(key, now)
        return Attempt(username, address, now, tuple(checks))

    def cancel(self, attempt: Attempt) -> None:
        """The attempt never ran (the server was busy): it does not count."""
        with self._lock:
            for table, key in attempt.keys:
                self._tables[table].refund(key, attempt.at)

    def succeeded(self, attempt: Attempt, now: float) -> None:
        """The password was right: refund the attempt and remember the address for this user."""
        with self._lock:
            for table, key in attempt.keys:
                self._tables[table].refund(key, attempt.at)
            pair = (attempt.username, attempt.address)
            self._known[pair] = now
            self._known.move_to_end(pair)
            while len(self._known) > self.limits.max_keys:
                self._known.popitem(last=False)


class HashBusy(Exception):
    """Too many password hashes are running or waiting; the caller should answer 503."""


class HashGate:
    """At most ``workers`` hashes at once and ``queue`` more waiting, per process."""

    def __init__(self, workers: int = 2, queue: int = 8) -> None:
        self.workers, self.queue = workers, queue
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="collector-hash")
        self._admitted = 0
        self._lock = threading.Lock()

    @property
    def admitted(self) -> int:
        return self._admitted

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        with self._lock:
            if self._admitted >= self.workers + self.queue:
                raise HashBusy
            self._admitted += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            with self._lock:
                self._admitted -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
