"""Inference time of every model on this Pi, on real photos at the camera's size."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RUNS = 10
PHOTOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"


def sample_image(cfg: Any) -> np.ndarray:
    """A frame from the desk's own camera; a test photo if the camera is not usable."""
    from PIL import Image

    from deskwatch.camera import CameraError, open_camera, take_burst
    from deskwatch.schedule import SystemClock

    try:
        return take_burst(open_camera(cfg.camera), 1, 0.0, SystemClock())[0].image
    except (CameraError, ImportError, OSError):
        pass
    width, height = cfg.camera.width, cfg.camera.height
    for name in ("single_02.jpg", "single_03.jpg"):
        if (PHOTOS / name).exists():
            return np.asarray(Image.open(PHOTOS / name).convert("RGB").resize((width, height)))
    pytest.skip(f"the camera gave no frame and no test photo is in {PHOTOS}")


def test_per_model_and_per_frame_timing(on_pi: str, deskwatch_config: Any, results: Any) -> None:
    from deskwatch.domain import Frame, utcnow
    from deskwatch.vision.pipeline import build_vision

    cfg = deskwatch_config
    t0 = time.perf_counter()
    vision = build_vision(cfg)
    load_s = time.perf_counter() - t0
    try:
        frame = Frame(sample_image(cfg), utcnow(), 0)
        vision.analyze(frame)  # warm-up
        per_stage: dict[str, list[float]] = {}
        totals = []
        for _ in range(RUNS):
            t1 = time.perf_counter()
            analysis = vision.analyze(frame)
            totals.append((time.perf_counter() - t1) * 1000)
            for stage, ms in analysis.timings_ms.items():
                per_stage.setdefault(stage, []).append(ms)
        results.record(
            "inference",
            models=vision.model_hashes(),
            load_seconds=round(load_s, 2),
            threads=cfg.vision.threads,
            frame_ms_median=round(statistics.median(totals), 1),
            frame_ms_max=round(max(totals), 1),
            stage_ms_median={k: round(statistics.median(v), 1) for k, v in per_stage.items()},
        )
    finally:
        vision.close()
    # a whole burst must be analysed well inside the shortest scan interval (a minute)
    assert statistics.median(totals) * cfg.camera.burst_frames < 30_000
