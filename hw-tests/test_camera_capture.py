"""picamera2 capture on the Pi: time to first frame and per-frame latency at the configured size."""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import replace
from typing import Any

import pytest

BURSTS = 5
FRAMES = 10


@pytest.fixture
def picamera2_config(on_pi: str, deskwatch_config: Any) -> Any:
    pytest.importorskip("picamera2", reason="picamera2 is not installed (apt install python3-picamera2)")
    from picamera2 import Picamera2

    if not Picamera2.global_camera_info():
        pytest.skip("no camera module detected by libcamera (check the ribbon cable, `rpicam-hello --list-cameras`)")
    return replace(deskwatch_config.camera, backend="picamera2")


def test_capture_latency(picamera2_config: Any, results: Any) -> None:
    from deskwatch.camera import open_camera

    cfg = picamera2_config
    opens, frames = [], []
    for _ in range(BURSTS):
        camera = open_camera(cfg)
        t0 = time.perf_counter()
        camera.open()
        try:
            image = camera.capture()
            opens.append(time.perf_counter() - t0)
            assert image.shape == (cfg.height, cfg.width, 3) and image.dtype.name == "uint8"
            for _ in range(FRAMES):
                t1 = time.perf_counter()
                camera.capture()
                frames.append(time.perf_counter() - t1)
        finally:
            camera.close()
    p95 = statistics.quantiles(frames, n=20)[18]
    results.record(
        "picamera2_capture",
        size=f"{cfg.width}x{cfg.height}",
        open_to_first_frame_ms=[round(x * 1000) for x in opens],
        frame_ms_median=round(statistics.median(frames) * 1000, 1),
        frame_ms_p95=round(p95 * 1000, 1),
    )
    assert max(opens) < cfg.open_timeout_seconds, "opening the camera takes longer than camera.open_timeout_seconds"
    # a burst spreads burst_frames over burst_seconds: every frame must come well within its slot
    slot = cfg.burst_seconds / max(1, cfg.burst_frames - 1) if cfg.burst_frames > 1 else 1.0
    assert p95 < slot, f"p95 frame latency {p95 * 1000:.0f} ms exceeds the burst slot {slot * 1000:.0f} ms"


def test_burst_with_the_daemon_code(picamera2_config: Any, results: Any) -> None:
    from deskwatch.camera import open_camera, take_burst
    from deskwatch.schedule import SystemClock

    cfg = picamera2_config
    t0 = time.perf_counter()
    frames = take_burst(open_camera(cfg), cfg.burst_frames, cfg.burst_seconds, SystemClock())
    took = time.perf_counter() - t0
    results.record("burst", frames=len(frames), seconds=round(took, 2), planned_seconds=cfg.burst_seconds)
    assert len(frames) == cfg.burst_frames
    assert took < cfg.burst_seconds + cfg.open_timeout_seconds


def test_burst_in_flight_with_the_scanner_code(picamera2_config: Any, results: Any) -> None:
    """The scanner takes each burst in a thread of its own (``BurstInFlight``) and analyses a
    frame while the next is captured: picamera2 opened, read and closed from that thread, the
    pace kept while the consumer is busy, the camera free again afterwards."""
    from deskwatch.camera import BurstInFlight, open_camera
    from deskwatch.schedule import SystemClock

    cfg = picamera2_config
    slot = cfg.burst_seconds / max(1, cfg.burst_frames - 1) if cfg.burst_frames > 1 else 0.0
    busy = 0.8 * slot  # an analysis that takes most of the gap between two frames
    seen, stamps = [], []
    t0 = time.perf_counter()
    with BurstInFlight(open_camera(cfg), cfg.burst_frames, cfg.burst_seconds, SystemClock()) as burst:
        for frame in burst:
            assert frame.image.shape == (cfg.height, cfg.width, 3) and frame.image.dtype.name == "uint8"
            seen.append(frame.index)
            stamps.append(frame.captured_at)
            time.sleep(busy)
    took = time.perf_counter() - t0
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(stamps)]
    results.record(
        "burst_in_flight",
        frames=len(seen),
        seconds=round(took, 2),
        burst_seconds=round(burst.seconds, 2),
        gaps_s=[round(g, 3) for g in gaps],
    )
    assert burst.error is None, f"the burst thread failed: {burst.error!r}"
    assert seen == list(range(cfg.burst_frames))
    assert all(g < slot + 0.25 for g in gaps), f"the burst lost its pace while frames were analysed: {gaps}"
    camera = open_camera(cfg)  # closed by the burst thread: free for the next scan
    camera.open()
    try:
        assert camera.capture().shape == (cfg.height, cfg.width, 3)
    finally:
        camera.close()


def test_a_burst_left_early_frees_the_camera_at_once(picamera2_config: Any, results: Any) -> None:
    """A scan settled before its burst's last frames (policy.end_settled_bursts) leaves the
    burst: picamera2 must take no frame after that and be closed within DONE_POLL_SECONDS
    (plus the close itself), not at the next frame's time, and be free for the next scan."""
    from deskwatch.camera import DONE_POLL_SECONDS, BurstInFlight, open_camera
    from deskwatch.schedule import SystemClock

    cfg = picamera2_config
    if cfg.burst_frames < 2:
        pytest.skip("a burst of one frame cannot be left early")
    with BurstInFlight(open_camera(cfg), cfg.burst_frames, cfg.burst_seconds, SystemClock()) as burst:
        for _frame in burst:
            left = time.perf_counter()
            break
    closed_after = time.perf_counter() - left
    results.record("burst_left_early", frames=burst.captured, closed_after_s=round(closed_after, 3))
    assert burst.error is None, f"the burst thread failed: {burst.error!r}"
    assert burst.captured <= 2, f"{burst.captured} frames taken after the consumer left after one"
    # the poll (DONE_POLL_SECONDS) plus picamera2's own stop and close: well under a second
    assert closed_after < DONE_POLL_SECONDS + 1.0, f"camera closed {closed_after:.2f} s after the consumer left"
    camera = open_camera(cfg)
    camera.open()
    try:
        assert camera.capture().shape == (cfg.height, cfg.width, 3)
    finally:
        camera.close()
