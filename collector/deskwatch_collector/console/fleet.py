"""The fleet: each device's state with the reasons behind it, from its retained status and
its latest health report.

What a supervisor needs to know about a desk, worst first: offline (and since when),
a fault (camera, status reasons), paused (the reason and the time left), clock not
synchronised, no worker enrolled, an outbox backlog, missing events, noisy rules.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from deskwatch_collector.auth import User
from deskwatch_collector.console.timefmt import ago
from deskwatch_collector.store import Tx

STALE_SECONDS = 300.0  # no health for this long: the device is not reporting
BACKLOG_DEPTH = 100
BACKLOG_AGE_SECONDS = 900.0
LEVELS = ("offline", "fault", "paused", "attention", "online")  # worst first
SORT_KEYS = ("state", "device", "site", "last_seen", "version", "profile", "outbox")


@dataclass
class Problem:
    kind: str  # offline, stale, camera, status, paused, clock, enrolment, backlog, gaps, noisy
    text: str
    level: str  # a LEVELS entry


@dataclass
class Device:
    site: str
    device_id: str
    status: str | None
    version: str | None
    profile: str | None
    last_seen: float | None
    health: dict[str, Any]
    health_at: float | None
    missing_events: int
    problems: list[Problem] = field(default_factory=list)
    pause: dict[str, Any] | None = None

    @property
    def level(self) -> str:
        levels = [p.level for p in self.problems] or ["online"]
        return min(levels, key=LEVELS.index)

    @property
    def outbox_depth(self) -> int:
        depth = _object(self.health.get("outbox")).get("depth")
        return int(depth) if isinstance(depth, (int, float)) and math.isfinite(depth) else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "device_id": self.device_id,
            "state": self.level,
            "status": self.status,
            "problems": [{"kind": p.kind, "text": p.text, "level": p.level} for p in self.problems],
            "pause": self.pause,
            "version": self.version,
            "profile": self.profile,
            "last_seen": self.last_seen,
            "health_at": self.health_at,
            "outbox_depth": self.outbox_depth,
            "missing_events": self.missing_events,
        }


def _loads(text: Any) -> Any:
    try:
        return json.loads(text) if text else None
    except (TypeError, ValueError):
        return None


def _number(value: Any) -> float | None:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        else None
    )


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _epoch(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def derive(device: Device, reasons: list[str], now: float) -> None:
    """Fill ``device.problems`` (and ``pause``) from its status and health."""
    h = device.health
    add = device.problems.append
    if device.status == "offline":
        add(Problem("offline", "offline" + (f", last seen {ago(now - device.last_seen)}" if device.last_seen else ""),
                    "offline"))  # fmt: skip
    elif device.health_at is None or now - device.health_at > STALE_SECONDS:
        seen = f"last seen {ago(now - device.last_seen)}" if device.last_seen else "never seen"
        add(Problem("stale", f"not reporting ({seen})", "offline"))
    camera = h.get("camera")
    if isinstance(camera, str) and camera != "ok":
        add(Problem("camera", f"camera: {camera[:120]}", "fault"))
    for reason in reasons:
        if isinstance(reason, str) and not reason.startswith("camera"):
            add(Problem("status", reason[:200], "fault"))
    if h.get("paused") is True:
        pause = _object(h.get("pause"))
        reason = str(pause.get("reason") or "")[:120]
        until = _epoch(pause.get("ends_at"))
        left = None if until is None else until - now
        if left is None:
            text = "paused" + (f": {reason}" if reason else "")
        elif left >= 0:
            text = f"paused: {reason or 'no reason given'}, {math.ceil(left / 60)} min left"
        else:
            text = f"paused: {reason or 'no reason given'}, {math.ceil(-left / 60)} min over the declared time"
        device.pause = {"reason": reason or None, "until": until, "seconds_left": None if left is None else round(left)}
        add(Problem("paused", text, "paused"))
    if h.get("clock_synced") is False:
        add(Problem("clock", "clock not synchronised", "attention"))
    if h.get("identity") == "not_enrolled":
        add(Problem("enrolment", "no worker enrolled", "attention"))
    outbox = _object(h.get("outbox"))
    depth, oldest = _number(outbox.get("depth")), _number(outbox.get("oldest_age_s"))
    if (depth or 0) > BACKLOG_DEPTH or (oldest or 0) > BACKLOG_AGE_SECONDS:
        add(Problem("backlog", f"outbox backlog: {int(depth or 0)} waiting, oldest {ago(oldest or 0).replace(' ago', '')}",
                    "attention"))  # fmt: skip
    if device.missing_events:
        add(Problem("gaps", f"{device.missing_events} events missing (seq gaps)", "attention"))


def missing_counts(tx: Tx, sites: tuple[str, ...], device_id: str | None = None) -> dict[tuple[str, str], int]:
    """Per device, how many ``seq`` numbers between its first and last stored event are missing
    (what :func:`~deskwatch_collector.ingest.missing_seqs` adds up, in one aggregate)."""
    where = f"site IN ({', '.join('?' for _ in sites)})"
    params: list[Any] = list(sites)
    if device_id:
        where += " AND device_id = ?"
        params.append(device_id)
    rows = tx.rows(
        f"SELECT site, device_id, MAX(seq) - MIN(seq) + 1 - COUNT(DISTINCT seq) FROM events WHERE {where}"
        " GROUP BY site, device_id",
        params,
    )
    return {(str(s), str(d)): int(n) for s, d, n in rows if n}


def devices(tx: Tx, user: User, now: float, *, device_id: str | None = None, site: str | None = None) -> list[Device]:
    sites = (site,) if site else user.sites
    where = f"site IN ({', '.join('?' for _ in sites)})"
    params: list[Any] = list(sites)
    if device_id:
        where += " AND device_id = ?"
        params.append(device_id)
    rows = tx.rows(
        "SELECT site, device_id, state, version, profile, reasons, status_at, health, health_at, last_event_at"
        f" FROM devices WHERE {where} ORDER BY site, device_id",
        params,
    )
    missing = missing_counts(tx, sites, device_id)
    out = []
    for s, d, state, version, profile, reasons, status_at, health, health_at, last_event_at in rows:
        health_obj = _loads(health)
        seen = [t for t in (status_at, health_at, last_event_at) if t is not None]
        dev = Device(
            site=s, device_id=d, status=state, version=version, profile=profile,
            last_seen=max(seen) if seen else None, health=health_obj if isinstance(health_obj, dict) else {},
            health_at=health_at, missing_events=missing.get((s, d), 0),
        )  # fmt: skip
        reason_list = _loads(reasons)
        derive(dev, reason_list if isinstance(reason_list, list) else [], now)
        out.append(dev)
    return out


def sort_devices(items: list[Device], key: str, descending: bool) -> list[Device]:
    def k(d: Device) -> Any:
        if key == "state":
            return (LEVELS.index(d.level), d.site, d.device_id)
        if key == "last_seen":
            return (d.last_seen or 0.0, d.device_id)
        if key == "outbox":
            return (d.outbox_depth, d.device_id)
        if key in ("version", "profile", "site"):
            return (getattr(d, key) or "", d.device_id)
        return (d.device_id, d.site)

    return sorted(items, key=k, reverse=descending)


def summary(items: list[Device]) -> dict[str, int]:
    counts = dict.fromkeys(LEVELS, 0)
    for d in items:
        counts[d.level] += 1
    return counts
