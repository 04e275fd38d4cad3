"""USB camera unplug and replug: the daemon's camera code fails cleanly and recovers.

Needs a technician: run with ``--interactive`` and follow the prompts. (The CSI camera
module must never be unplugged with power on; this test is for USB webcams, v4l2.)
"""

from __future__ import annotations

import glob
import time
from dataclasses import replace
from typing import Any

import pytest

WAIT = 60.0


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.5)
    return False


def test_unplug_and_replug(on_pi: str, deskwatch_config: Any, results: Any, request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("interactive"):
        pytest.skip("needs a technician to pull the USB camera: run with --interactive")
    cfg = deskwatch_config.camera
    if cfg.backend != "v4l2":
        pytest.skip(f"camera.backend is {cfg.backend}: unplug/replug applies to USB (v4l2) cameras only")
    from deskwatch.camera import CameraError, open_camera, take_burst
    from deskwatch.schedule import SystemClock

    cam_cfg = replace(cfg, open_timeout_seconds=5.0)
    assert take_burst(open_camera(cam_cfg), 1, 0.0, SystemClock()), "camera does not work before the test"
    before = set(glob.glob("/dev/video*"))
    print(f"\n>>> unplug the USB camera now (waiting {WAIT:.0f} s)", flush=True)
    assert wait_for(lambda: set(glob.glob("/dev/video*")) != before, WAIT), "no /dev/video* node disappeared"
    t0 = time.perf_counter()
    with pytest.raises(CameraError):
        take_burst(open_camera(cam_cfg), 1, 0.0, SystemClock())
    fail_s = time.perf_counter() - t0
    print(f">>> plug the camera back in (waiting {WAIT:.0f} s)", flush=True)
    assert wait_for(lambda: set(glob.glob("/dev/video*")) >= before, WAIT), "the camera did not come back"
    t1 = time.perf_counter()
    frames = []
    while not frames and time.perf_counter() - t1 < 30:
        try:
            frames = take_burst(open_camera(cam_cfg), 1, 0.0, SystemClock())
        except CameraError:
            time.sleep(1)
    results.record(
        "camera_replug", failure_detected_s=round(fail_s, 2), recovered_after_s=round(time.perf_counter() - t1, 2)
    )
    assert frames, "no frame within 30 s after replugging"
