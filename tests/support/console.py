"""Console test data: contract payloads stored through the collector's real validation and
ingest, so the queue, reports and fleet read rows exactly as the subscriber writes them.

- :class:`Desk`: one appliance (site, device, worker) that makes ``event``/``scan``/
  ``evidence``/``status``/``health`` messages with chosen times, rules and detections.
- :func:`store_messages`: validates and applies them in one transaction.
- ``console_store(backend)``: a migrated store with the console's schema on SQLite or
  PostgreSQL (fixture).
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest

from deskwatch_collector.console import schema
from deskwatch_collector.ingest import apply
from deskwatch_collector.store import Store
from deskwatch_collector.validate import Validator
from deskwatch_contract.formats import rfc3339
from tests.support.common import REPO
from tests.support.web import PASSWORD

PHOTOS = REPO / "tests" / "data" / "photos"
Message = tuple[str, bytes, dict[str, str]]

# What the project's own detectors (int8 NanoDet, BlazeFace full range) report on these
# photos, rounded: the boxes an appliance would send with the finding (x0, y0, x1, y1).
DETECTIONS = {
    "phone_01.jpg": [
        {"label": "person", "score": 0.86, "box": [0.185, 0.254, 0.856, 1.0], "facing": 0.8, "identity": "worker"},
        {"label": "cell phone", "score": 0.34, "box": [0.45, 0.473, 0.495, 0.543]},
        {"label": "person", "score": 0.54, "box": [0.776, 0.365, 0.996, 1.0]},
    ],
    "multi_03.jpg": [
        {"label": "person", "score": 0.77, "box": [0.04, 0.277, 0.444, 1.0]},
        {"label": "person", "score": 0.75, "box": [0.52, 0.189, 0.932, 1.0]},
        {"label": "face", "score": 0.92, "box": [0.643, 0.303, 0.759, 0.51], "facing": 0.9, "identity": "unknown"},
        {"label": "face", "score": 0.88, "box": [0.074, 0.355, 0.194, 0.569], "facing": 0.85, "identity": "worker"},
    ],
    "eat_02.jpg": [
        {"label": "person", "score": 0.85, "box": [0.342, 0.087, 0.919, 0.993]},
        {"label": "cake", "score": 0.43, "box": [0.629, 0.672, 0.907, 0.999]},
        {"label": "face", "score": 0.89, "box": [0.522, 0.229, 0.711, 0.566], "identity": "worker"},
    ],
}


@cache
def thumbnail(name: str, size: tuple[int, int] = (320, 240)) -> tuple[bytes, int, int]:
    """A test photo as the appliance sends it: scaled into 320x240, JPEG, no EXIF."""
    from PIL import Image

    with Image.open(PHOTOS / name) as im:
        img = im.convert("RGB")
    img.thumbnail(size)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=70)
    return out.getvalue(), img.width, img.height


@dataclass
class Desk:
    site: str
    device_id: str
    worker_id: str
    seq: int = 0
    session: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return f"deskwatch/v1/{self.site}/{self.device_id}/"

    def _src(self, kind: str) -> dict[str, Any]:
        return {"schema": f"deskwatch.{kind}/1", "site": self.site, "device_id": self.device_id}

    def finding(
        self,
        rule: str,
        at: datetime,
        *,
        photo: str | None = None,
        detections: list[dict[str, Any]] | None = None,
        detail: str = "",
        confidence: float = 0.8,
        others: tuple[str, ...] = (),
    ) -> list[Message]:
        """A scan that found ``rule``: event, picture (if ``photo``), then the scan record."""
        self.seq += 1
        event_id, scan_id = str(uuid.uuid4()), str(uuid.uuid4())
        jpeg = thumbnail(photo) if photo else None
        event = {
            **self._src("event"),
            "event_id": event_id,
            "seq": self.seq,
            "type": rule,
            "scan_id": scan_id,
            "detected_at": rfc3339(at),
            "worker_id": self.worker_id,
            "confidence": confidence,
            "detections": detections if detections is not None else DETECTIONS.get(photo or "", []),
            "detail": detail or f"{rule} in 4 of 5 frames",
            "policy": {"profile": "full", "rule": rule},
            "evidence": None,
            "evidence_reason": "rule",
            "replayed": False,
        }
        out: list[Message] = []
        if jpeg is not None:
            data, w, h = jpeg
            digest = hashlib.sha256(data).hexdigest()
            event["evidence"] = {"sha256": digest, "bytes": len(data), "width": w, "height": h,
                                 "content_type": "image/jpeg"}  # fmt: skip
            event["evidence_reason"] = None
        out.append((self.prefix + "event", json.dumps(event).encode(), {}))
        if jpeg is not None:
            props = {"content-type": "image/jpeg", "sha256": event["evidence"]["sha256"], "event_id": event_id}
            out.append((self.prefix + f"evidence/{event_id}", jpeg[0], props))
        checks = [{"rule": rule, "outcome": "violation", "reason": event["detail"]}]
        checks += [{"rule": r, "outcome": "pass", "reason": ""} for r in others if r != rule]
        scan = {
            **self._src("scan"),
            "scan_id": scan_id,
            "trigger": "schedule",
            "started_at": rfc3339(at),
            "finished_at": rfc3339(at + timedelta(seconds=2)),
            "outcome": "violation",
            "frames": 5,
            "checks": checks,
            "findings": [rule],
            "persons": 1,
            "bystanders": 0,
            "durations_ms": {"total": 2100.0},
            "error": None,
            "replayed": False,
        }
        out.append((self.prefix + "scan", json.dumps(scan).encode(), {}))
        self.sent.append(event)
        return out

    def status(self, state: str = "online", reasons: list[str] | None = None, version: str = "0.2.0") -> Message:
        self.session += 1
        payload = {
            **self._src("status"),
            "state": state,
            "session": self.session,
            "version": version,
            "profile": "full",
            "models": {"nanodet": "0" * 64},
            "since": "2026-11-28T08:00:00.000Z",
            "reasons": reasons or [],
        }
        return (self.prefix + "status", json.dumps(payload).encode(), {})

    def health(self, at: datetime, **extra: Any) -> Message:
        payload = {
            **self._src("health"),
            "at": rfc3339(at),
            "uptime_s": 3600.0,
            "scans": 12,
            "scans_failed": 0,
            "last_scan_at": rfc3339(at),
            "inference_ms": {"p50": 150.0, "p95": 300.0},
            "camera": "ok",
            "cpu_temp_c": 52.0,
            "disk_free_bytes": 10**10,
            "clock_synced": True,
            "paused": False,
            "pause": None,
            "identity": "enrolled",
            "outbox": {"depth": 0, "bytes": 0, "oldest_age_s": 0.0, "evicted": {}},
            **extra,
        }
        return (self.prefix + "health", json.dumps(payload).encode(), {})


def store_messages(store: Store, messages: list[Message], received_at: float) -> None:
    validator = Validator()
    with store.transaction() as tx:
        for topic, payload, props in messages:
            apply(tx, validator.check(topic, payload, props), received_at, received_at)


@pytest.fixture
def console_store(store_factory: Callable[[str], Store]) -> Callable[[str], Store]:
    """``console_store("sqlite" | "postgresql")``: a collector store with the console's schema."""

    def make(backend: str = "sqlite") -> Store:
        store = store_factory(backend)
        schema.migrate(store)
        return store

    return make


T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


@dataclass
class Demo:
    """A site as a supervisor meets it: the desks, their findings, who may sign in."""

    desks: dict[str, Desk]
    events: list[dict[str, Any]]
    now: datetime


def seed_demo(store: Store, now: datetime) -> Demo:
    """Seven desks at two sites in every state the fleet view knows, 60 findings over 25 days
    (pictures made from the test photos), reviews with reasons, a noisy rule, contests; and the
    accounts alice (supervisor of both sites), bob (globex only) and w-1 (the worker at acme/d01)."""
    import random

    from deskwatch_collector import auth
    from deskwatch_collector.console import review

    for name, role, sites, worker in [
        ("alice", "supervisor", ["acme", "globex"], None),
        ("bob", "supervisor", ["globex"], None),
        ("w-1", "worker", ["acme"], "w-1"),
    ]:
        auth.add_user(store, name, PASSWORD, role, sites, worker)  # fmt: skip
    desks = {f"d0{i}": Desk("acme", f"d0{i}", f"w-{i}") for i in range(1, 7)}
    desks["g01"] = Desk("globex", "g01", "w-9")
    rng = random.Random(16)
    msgs: list[Message] = []
    rules = ["phone_use", "phone_use", "extra_person", "away_from_desk", "eating", "idle_input", "low_light"]
    photos = {"phone_use": "phone_01.jpg", "extra_person": "multi_03.jpg", "eating": "eat_02.jpg",
              "away_from_desk": "empty_04.jpg"}  # fmt: skip
    for n in range(60):
        desk = list(desks.values())[n % len(desks)] if n >= 3 else desks["d01"]
        rule = "phone_use" if desk.device_id == "d03" else rng.choice(rules)
        at = now - timedelta(minutes=7 + 11 * n) if n < 8 else now - timedelta(minutes=rng.randrange(25 * 24 * 60))
        msgs += desk.finding(rule, at, photo=photos.get(rule), confidence=round(rng.uniform(0.55, 0.95), 2),
                             others=("eating", "extra_person", "unrecognized_person"))  # fmt: skip
    pause = {"reason": "fetch water", "minutes": 10, "started_at": rfc3339(now - timedelta(minutes=3)),
             "ends_at": rfc3339(now + timedelta(minutes=7)), "source": "mqtt"}  # fmt: skip
    msgs += [d.status() for d in desks.values()]
    msgs += [desks["d04"].status("offline"), desks["d05"].status("degraded", ["camera: no frame from /dev/video0"])]
    msgs += [
        desks["d01"].health(now),
        desks["d02"].health(now, paused=True, pause=pause),
        desks["d03"].health(now, clock_synced=False),
        desks["d05"].health(now, camera="failed: no frame from /dev/video0"),
        desks["d06"].health(now, identity="not_enrolled",
                            outbox={"depth": 412, "bytes": 4_000_000, "oldest_age_s": 2400.0, "evicted": {}}),
        desks["g01"].health(now),
    ]  # fmt: skip
    store_messages(store, msgs, now.timestamp())
    events = [e for d in desks.values() for e in d.sent]
    sup = auth.User("alice", "supervisor", ("acme", "globex"), None)
    with store.transaction() as tx:
        for ev in events:
            at = datetime.fromisoformat(ev["detected_at"].replace("Z", "+00:00"))
            noisy = ev["device_id"] == "d03"  # its phone_use rule is mostly wrong: a noisy rule
            if now - at < timedelta(days=1) or (rng.random() < 0.15 and not noisy):
                continue
            r = rng.random()
            stamp = (at + timedelta(hours=1)).timestamp()
            if r < (0.75 if noisy else 0.12):
                reason = rng.choice(["misread_object", "false_detection", "camera_problem"])
                review.review(tx, sup, ev["event_id"], "dismiss", reason, "", stamp)
            elif r < (0.8 if noisy else 0.2):
                review.review(tx, sup, ev["event_id"], "dismiss", "allowed", "agreed work call", stamp)
            else:
                review.review(tx, sup, ev["event_id"], "acknowledge", None, "", stamp)
        w1 = auth.User("w-1", "worker", ("acme",), "w-1")
        for ev in desks["d01"].sent[1:3]:
            review.contest(tx, w1, ev["event_id"], "I was holding my calculator, not a phone.", now.timestamp() - 600)
    return Demo(desks, events, now)


__all__ = ["DETECTIONS", "PASSWORD", "T0", "Demo", "Desk", "Message", "seed_demo", "store_messages", "thumbnail"]
