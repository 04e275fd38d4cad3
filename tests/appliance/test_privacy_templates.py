"""End to end through the real daemon, vision and a real Mosquitto: no byte stream the
broker receives contains the enrolled worker's face template, while the identity
check demonstrably ran (an unrecognised person was reported, with evidence)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deskwatch.app import Daemon, Parts
from deskwatch.camera.fake import FakeCamera
from deskwatch.config import load_config
from deskwatch.domain import Frame, utcnow
from tests.support.common import PHOTOS, FakeClock
from tests.support.fakes import SilentNotifier
from tests.support.mosquitto import Broker, Collector

pytestmark = [pytest.mark.slow, pytest.mark.broker]


def load(name: str) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(PHOTOS / name).convert("RGB")))


def needles(templates: np.ndarray) -> list[bytes]:
    """Every way a template could travel: raw float64/float32 bytes (whole and any
    8-value window), base64 of them, and the numbers as JSON text."""
    out: list[bytes] = []
    for row in templates:
        for arr in (row.astype("<f8"), row.astype("<f4")):
            raw = arr.tobytes()
            out.append(raw[: arr.itemsize * 8])
            out.append(raw[arr.itemsize * 64 : arr.itemsize * 72])
            out.append(base64.b64encode(raw[: arr.itemsize * 12])[:16])
        for digits in (3, 4, 6, 8):
            out.append(json.dumps([round(float(v), digits) for v in row[:3]])[1:-1].encode())
        out.append(repr(float(row[0])).encode())
    return [n for n in out if len(n) >= 8]


def test_no_published_byte_stream_contains_a_face_template(tmp_path: Path, mosquitto: Broker) -> None:
    from deskwatch.app import build_vision
    from deskwatch.vision.identity import read_templates, save_templates

    state = tmp_path / "state"
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(f"""
device: {{id: desk-a, site: acme, worker_id: w-1}}
state_dir: {state}
mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: {{enabled: false}}, reconnect_min_seconds: 0.1}}
camera: {{backend: replay, source: {PHOTOS / "face_01.jpg"}, burst_frames: 3, burst_seconds: 0.2}}
schedule:
  shifts: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}}]
  mode: interval
  interval_seconds: 60
policy: {{rules: {{unrecognized_person: {{consecutive_checks: 1}}}}}}
""")
    cfg = load_config(str(cfg_path))
    try:
        vision = build_vision(cfg)
    except Exception as exc:
        pytest.skip(f"vision pipeline unavailable: {exc}")
    # Enrol the worker of face_01 (the technician's `deskwatch enroll` does the same).
    worker = load("face_01.jpg")
    face = vision.analyze(Frame(worker, utcnow())).faces[0]
    embedder = vision._embedder
    save_templates(
        str(state),
        "w-1",
        np.asarray([embedder.embed(worker, face)]),
        backend=embedder.backend,
        model_sha256=embedder.model_sha256,
    )
    stored, _problem = read_templates(str(state), "w-1")
    assert stored is not None
    templates = stored.encodings

    seen = Collector(mosquitto, "#")
    frames = [load("face_03.jpg")] * 3 + [load("face_02.jpg")] * 3 + [load("multi_08.jpg")] * 3
    camera = FakeCamera(frames=frames)
    daemon = Daemon(cfg, clock=FakeClock(), parts=Parts(camera=camera, vision=vision, notifier=SilentNotifier()))
    assert daemon.run(max_scans=3, install_signals=False) == 0
    assert seen.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("/scan")]) >= 3, timeout=15)
    seen.close()

    events = [json.loads(m.payload) for m in seen.messages if m.topic.endswith("/event")]
    assert "unrecognized_person" in {e["type"] for e in events}, "the identity check must have run"
    assert any("/evidence/" in m.topic for m in seen.messages)
    assert camera.opens == 3 and not camera.is_open  # one open per scan, closed after

    found = [(m.topic, n) for m in seen.messages for n in needles(templates) if n in m.payload]
    assert found == []
    for m in seen.messages:  # and no JSON payload carries a 128-number vector at all
        if m.payload[:1] == b"{":
            text = m.payload.decode()
            assert '"encoding"' not in text and '"template' not in text
            lists = [v for v in json.loads(text).values() if isinstance(v, list)]
            assert all(len(v) < 128 for v in lists)
