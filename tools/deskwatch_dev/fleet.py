"""Simulated appliances that publish the real contract payloads (tests and the load tool).

Payloads come from :mod:`deskwatch.delivery.payloads` with a real ``Source`` per device;
topics, QoS, retain flags and MQTT 5 properties match what ``Delivery`` publishes, with
``seq`` per device as the outbox assigns it. Evidence is a real JPEG (noise, ~20 KB).
"""

from __future__ import annotations

import hashlib
import io
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from deskwatch.delivery.payloads import Source, event_payload, health_payload, scan_payload, status_payload
from deskwatch.domain import Box, CheckOutcome, Detection, Finding, ScanRecord, new_id, utcnow
from deskwatch_contract.jsonutil import dumps_bytes

FINDING_TYPES = ("phone_use", "away_from_desk", "extra_person", "eating", "idle_input")


@dataclass(frozen=True)
class Outgoing:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties | None
    event_id: str | None = None  # set on event messages


def device_source(site: str, device_id: str, worker_id: str) -> Source:
    return Source(site, device_id, worker_id, "full")


@cache
def evidence_jpegs(count: int = 8, target_bytes: int = 20_000) -> tuple[bytes, ...]:
    """``count`` distinct JPEGs of about ``target_bytes`` each (noise over a gradient)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    out = []
    for i in range(count):
        h, w = 240, 320
        base = np.linspace(0, 200, w, dtype=np.float32)[None, :, None].repeat(h, 0).repeat(3, 2)
        noise = rng.normal(0, 18 + i, (h, w, 3)).astype(np.float32)
        img = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        for quality in (95, 90, 85, 80, 75, 70, 60, 50, 40, 30):
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=quality)
            if buf.tell() <= target_bytes * 1.15:
                break
        out.append(buf.getvalue())
    return tuple(out)


_json = dumps_bytes


def _props(content_type: str, user: dict[str, str] | None = None) -> Properties:
    props = Properties(PacketTypes.PUBLISH)
    props.ContentType = content_type
    if content_type == "application/json":
        props.PayloadFormatIndicator = 1
    if user:
        props.UserProperty = list(user.items())
    return props


class SimDevice:
    """One appliance: its config, persisted-like ``seq`` and session counters."""

    def __init__(self, site: str, device_id: str, worker_id: str, rng: random.Random | None = None) -> None:
        self.cfg = device_source(site, device_id, worker_id)
        self.prefix = self.cfg.prefix
        self.seq = 0
        self.session = 0
        self.rng = rng or random.Random(zlib.crc32(device_id.encode()))  # the same every run
        self.started = utcnow()

    def status(self, state: str = "online", reasons: list[str] | None = None) -> Outgoing:
        if state != "offline":
            self.session += 1
        payload = status_payload(
            self.cfg,
            state=state,
            session=max(1, self.session),
            version="0.1.0-sim",
            models={"nanodet": "0" * 64},
            since=self.started,
            reasons=reasons,
        )
        return Outgoing(self.prefix + "status", _json(payload), 1, True, _props("application/json"))

    def scan(self, findings: list[Finding] | None = None, now: datetime | None = None) -> tuple[ScanRecord, Outgoing]:
        now = now or utcnow()
        record = ScanRecord(
            scan_id=new_id(now),
            trigger="schedule",
            started_at=now,
            finished_at=now,
            frames=5,
            checks=[CheckOutcome("phone_use", "violation" if findings else "pass")],
            findings=list(findings or []),
            persons=1,
            durations_ms={"capture": 2000.0, "inference": 180.0},
        )
        payload = scan_payload(self.cfg, record)
        return record, Outgoing(self.prefix + "scan", _json(payload), 1, False, _props("application/json"))

    def violation(
        self,
        *,
        with_evidence: bool = True,
        finding_type: str | None = None,
        now: datetime | None = None,
        jpeg: bytes | None = None,
    ) -> list[Outgoing]:
        """A scan with one finding: ``event``, then ``evidence/{id}``, then ``scan`` (the device's order)."""
        finding = Finding(
            type=finding_type or self.rng.choice(FINDING_TYPES),
            confidence=round(self.rng.uniform(0.55, 0.98), 3),
            frame_index=2,
            detections=[Detection("cell phone", 0.81, Box(0.4, 0.5, 0.5, 0.62))],
            detail="simulated",
        )
        record, scan_msg = self.scan([finding], now)
        if with_evidence and jpeg is None:
            jpeg = self.rng.choice(evidence_jpegs())
        elif not with_evidence:
            jpeg = None
        payload = event_payload(self.cfg, finding, record, None, None if jpeg else "not_allowed")
        self.seq += 1
        payload["seq"] = self.seq
        out = []
        if jpeg is not None:
            digest = hashlib.sha256(jpeg).hexdigest()
            payload["evidence"] = {"sha256": digest, "bytes": len(jpeg), "width": 320, "height": 240,
                                   "content_type": "image/jpeg"}  # fmt: skip
            payload["evidence_reason"] = None
        event_id = str(payload["event_id"])
        out.append(Outgoing(self.prefix + "event", _json(payload), 1, False, _props("application/json"), event_id))
        if jpeg is not None:
            user = {"content-type": "image/jpeg", "sha256": hashlib.sha256(jpeg).hexdigest(), "event_id": event_id}
            out.append(Outgoing(self.prefix + f"evidence/{event_id}", jpeg, 1, False, _props("image/jpeg", user)))
        out.append(scan_msg)
        return out

    def health(self) -> Outgoing:
        stats = {
            "uptime_s": (utcnow() - self.started).total_seconds(),
            "scans": self.seq,
            "inference_ms": {"p50": 42.0, "p95": 61.0},
            "camera": "ok",
            "cpu_temp_c": 51.2,
            "disk_free_bytes": 10_000_000_000,
            "clock_synced": True,
            "outbox": {"depth": 0, "bytes": 0, "oldest_age_s": 0.0, "evicted": {}},
            "mqtt": {"protocol": "5", "reconnects": 0, "published": self.seq},
        }
        return Outgoing(
            self.prefix + "health", _json(health_payload(self.cfg, stats)), 0, False, _props("application/json")
        )


def fleet(n: int, sites: int = 10, prefix: str = "desk") -> Iterator[SimDevice]:
    for i in range(n):
        yield SimDevice(f"site-{i % sites:02d}", f"{prefix}-{i:05d}", f"w-{i:05d}", random.Random(i))
