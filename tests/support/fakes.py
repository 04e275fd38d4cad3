"""Stand-ins for one stage at a time: detector outputs, delivery, notifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from deskwatch.domain import Box, Detection, Face, Frame, FrameAnalysis
from deskwatch.vision.light import LightConfig, measure_light


class ScriptedVision:
    """Real light check; detections come from a script (frame -> detections/faces)."""

    def __init__(self, script: Callable[[Frame], tuple[list[Detection], list[Face]]] | None = None):
        self.script = script or (lambda f: ([Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0))], []))
        self.analyzed = 0
        self.closer_looks = 0  # frames the phone stage was asked for
        self.identity_enabled = True  # faces may get an identity result: a burst waits for one

    def analyze(self, frame: Frame, *, look_closer: bool = True) -> FrameAnalysis:
        self.analyzed += 1
        self.closer_looks += look_closer
        light = measure_light(frame.image, LightConfig())
        dets, faces = ([], []) if light.low_light or light.obstructed else self.script(frame)
        return FrameAnalysis(frame.index, light, list(dets), list(faces), {"objects": 1.0})

    def model_hashes(self) -> dict[str, str]:
        return {"scripted": "0" * 64}


class RecordingDelivery:
    """Keeps what would be published; commands are delivered by calling ``command``."""

    def __init__(self) -> None:
        self.events: list[tuple[dict[str, Any], bytes | None]] = []
        self.scans: list[dict[str, Any]] = []
        self.health: list[dict[str, Any]] = []
        self.degraded: str | None = None
        self.handler: Callable[[str, dict[str, Any]], None] | None = None
        self.reviews_handler: Callable[[bytes], None] | None = None
        self.started = self.stopped = False
        self.outbox = None  # no durable queue: retention has nothing to purge
        self._n = 0

    def start(self) -> None:
        self.started = True

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped = True

    def wait_first_attempt(self, timeout: float) -> bool:
        return self.started

    def send_event(self, payload: dict[str, Any], evidence: bytes | None) -> str:
        self._n += 1
        payload = dict(payload, event_id=payload.get("event_id") or f"ev-{self._n}", seq=self._n)
        self.events.append((payload, evidence))
        return str(payload["event_id"])

    def send_scan(
        self, payload: dict[str, Any] | None, events: Sequence[tuple[dict[str, Any], bytes | None]] = ()
    ) -> list[str]:
        ids = [self.send_event(event, image) for event, image in events]
        if payload is not None:
            self.scans.append(payload)
        return ids

    def send_health(self, payload: dict[str, Any]) -> None:
        self.health.append(payload)

    def set_degraded(self, reason: str | Sequence[str] | None) -> None:
        self.degraded = "; ".join(reason) if isinstance(reason, (list, tuple)) else reason  # type: ignore[arg-type]

    def on_command(self, handler: Callable[[str, dict[str, Any]], None]) -> None:
        self.handler = handler

    def on_reviews(self, handler: Callable[[bytes], None]) -> None:
        self.reviews_handler = handler

    def command(self, kind: str, body: dict[str, Any]) -> None:
        assert self.handler is not None
        self.handler(kind, body)

    def stats(self) -> dict[str, Any]:
        return {"outbox_depth": 0, "broker": "connected"}

    def outbox_depth(self) -> int:
        return 0

    def state(self) -> str:
        return "degraded" if self.degraded else "online"

    def progress(self) -> float:
        return 1e18  # always fresh


class SilentNotifier:
    def __init__(self) -> None:
        self.sent: list[str] = []

    def ready(self, status: str | None = None) -> bool:
        self.sent.append("READY=1")
        return True

    def status(self, text: str) -> bool:
        self.sent.append("STATUS=" + text)
        return True

    def watchdog(self) -> bool:
        self.sent.append("WATCHDOG=1")
        return True

    def stopping(self, status: str | None = None) -> bool:
        self.sent.append("STOPPING=1")
        return True
