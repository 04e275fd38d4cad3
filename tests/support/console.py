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
from typing import Any

import pytest

from deskwatch_collector.console import schema
from deskwatch_collector.ingest import apply
from deskwatch_collector.store import Store
from deskwatch_collector.validate import Validator
from deskwatch_contract.formats import rfc3339
from tests.support.common import REPO

PHOTOS = REPO / "tests" / "data" / "photos"
Message = tuple[str, bytes, dict[str, str]]

# Boxes drawn by hand on the test photos (x0, y0, x1, y1, normalised): what a detector would report.
DETECTIONS = {
    "phone_hand_01.jpg": [
        {"label": "person", "score": 0.93, "box": [0.18, 0.06, 0.86, 1.0], "facing": 0.7, "identity": "worker"},
        {"label": "cell phone", "score": 0.81, "box": [0.42, 0.3, 0.62, 0.62]},
    ],
    "multi_03.jpg": [
        {"label": "person", "score": 0.95, "box": [0.04, 0.1, 0.48, 1.0], "identity": "worker"},
        {"label": "person", "score": 0.91, "box": [0.5, 0.08, 0.97, 1.0], "facing": 0.9, "identity": "unknown"},
    ],
}


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
        checks += [{"rule": r, "outcome": "pass", "reason": ""} for r in others]
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

__all__ = ["DETECTIONS", "T0", "Desk", "Message", "store_messages", "thumbnail"]
