"""Sign-in throttling and bounded password hashing.

:class:`LoginThrottle` counts every attempt as a failure *before* the password is hashed
(a success refunds it), so parallel guesses cannot slip past the limit while their hashes
run. Three limits, chosen so that neither side can lock the other out:

- per user *and* address (``per_pair``): one client guessing one account;
- per address (``per_address``): one client trying many accounts (an office NAT gets
  several users' worth);
- per user (``per_user``): many addresses guessing one account.

An IPv6 client is counted by its /64 (one subscriber's or host's prefix: it can use every
address in it), an IPv4 client by its address.

A pair that has signed in successfully before (a *known* address for that user) is held
only to ``per_pair``: an attacker elsewhere who exhausts alice's per-user budget, or a
colleague behind the same NAT who exhausts the address budget, does not lock alice out
of her usual address. Every table is an LRU map with at most ``max_keys`` keys, and each
key keeps at most ``limit`` timestamps, so memory stays bounded whatever user names an
attacker invents.

:class:`SharedThrottle` keeps the same counts in the database, for collectors that share a
PostgreSQL behind a load balancer: each process counting alone gave N collectors N times the
guesses (the server uses it on PostgreSQL; on SQLite, one host, the in-memory one).

:class:`HashGate` runs password hashes on a fixed number of threads with a short queue;
past that it answers "busy" at once instead of letting memory grow (scrypt takes 16 MiB
per hash).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from ..store import Store

T = TypeVar("T")
_THROTTLE_LOCK = 1415926536  # the advisory lock SharedThrottle's transactions take (PostgreSQL)


def client_key(address: str) -> str:
    """The client as the throttle counts it: an IPv6 address by its /64, others as they are."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:192.0.2.7 is the IPv4 client 192.0.2.7
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


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
    token: str = ""  # SharedThrottle: the attempt's rows


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
        username, address = username[:64], client_key(address)
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


class SharedThrottle:
    """:class:`LoginThrottle`'s limits, counted in the database every collector shares.

    Each call is one short write transaction under one advisory lock, so collectors that
    count at the same moment cannot both slip under a limit; rows older than the window go
    at each attempt. Raises :class:`~deskwatch_collector.store.StoreUnavailable` when the
    database is away (no password is checked then either)."""

    def __init__(self, store: Store, limits: ThrottleLimits | None = None) -> None:
        self.store = store
        self.limits = limits = limits or ThrottleLimits()
        self._limit = {"pair": limits.per_pair, "address": limits.per_address, "user": limits.per_user}

    def attempt(self, username: str, address: str, now: float) -> Attempt | None:
        # PostgreSQL's text holds no U+0000, which a guessed name may: written out, one to one.
        username = username[:64].replace("\\", "\\\\").replace("\x00", "\\0")
        address, token = client_key(address), secrets.token_hex(16)
        window = self.limits.window
        with self.store.transaction() as tx:
            self.store.lock(tx, _THROTTLE_LOCK)
            tx.execute("DELETE FROM signin_failures WHERE at < ?", (now - window,))
            seen = tx.one("SELECT seen_at FROM signin_known WHERE username = ? AND address = ?", (username, address))
            checks: list[tuple[str, object]] = [("pair", f"{username} {address}")]
            if seen is None or now - float(seen[0]) > self.limits.known_seconds:
                checks += [("address", address), ("user", username)]
            for kind, key in checks:
                row = tx.one(
                    "SELECT COUNT(*) FROM signin_failures WHERE kind = ? AND key = ? AND at >= ?",
                    (kind, str(key), now - window),
                )
                if row is not None and int(row[0]) >= self._limit[kind]:
                    return None
            for kind, key in checks:
                tx.execute(
                    "INSERT INTO signin_failures (attempt, kind, key, at) VALUES (?, ?, ?, ?)",
                    (token, kind, str(key), now),
                )
        return Attempt(username, address, now, tuple(checks), token)

    def cancel(self, attempt: Attempt) -> None:
        """The attempt never ran (the server was busy, the database away): it does not count."""
        with self.store.transaction() as tx:
            tx.execute("DELETE FROM signin_failures WHERE attempt = ?", (attempt.token,))

    def succeeded(self, attempt: Attempt, now: float) -> None:
        """The password was right: refund the attempt and remember the address for this user."""
        with self.store.transaction() as tx:
            self.store.lock(tx, _THROTTLE_LOCK)
            tx.execute("DELETE FROM signin_failures WHERE attempt = ?", (attempt.token,))
            tx.execute(
                "INSERT INTO signin_known (username, address, seen_at) VALUES (?, ?, ?)"
                " ON CONFLICT (username, address) DO UPDATE SET seen_at = excluded.seen_at",
                (attempt.username, attempt.address, now),
            )
            tx.execute("DELETE FROM signin_known WHERE seen_at < ?", (now - self.limits.known_seconds,))


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
