"""The Raspberry Pi camera module through picamera2 (``pip install 'deskwatch[pi]'``).

picamera2 needs libcamera's Python bindings, which exist only on Raspberry Pi OS;
it is imported when this backend is opened, never at package import. One
configuration is made on the first open and kept; each scan only starts and stops
the camera (a full reconfiguration costs ~0.5 s), reading the low-resolution
stream at the configured size, and discards the frames of ``camera.warmup_seconds``
after each start (its auto exposure resumes from the last scan's, minutes ago and
maybe in another light). Captured requests are always released.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from deskwatch.camera import CameraError
from deskwatch.camera.config import CameraConfig


class PiCamera:
    name = "picamera2"

    def __init__(self, cfg: CameraConfig, monotonic: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        self.number = int(cfg.source) if cfg.source and cfg.source.isdigit() else 0
        self._monotonic = monotonic  # what the warm-up is timed by (a test's clock)
        self._cam: Any = None
        self._started = False

    def _ensure_configured(self) -> Any:
        if self._cam is not None:
            return self._cam
        try:
            from picamera2 import Picamera2  # type: ignore[import-not-found]
        except ImportError as exc:
            raise CameraError(
                f"picamera2 is not importable ({exc}): on Raspberry Pi OS install python3-picamera2 "
                "or pip install 'deskwatch[pi]'; elsewhere use camera.backend v4l2 or replay"
            ) from None
        cam = None
        try:
            cam = Picamera2(self.number)
            config = cam.create_video_configuration(
                main={"size": (self.cfg.width, self.cfg.height), "format": "RGB888"},
                lores=None,
                buffer_count=2,
            )
            cam.configure(config)
        except (IndexError, RuntimeError) as exc:
            if cam is not None:
                self._release(cam)
            raise CameraError(
                f"camera {self.number} not available ({exc}): check the ribbon cable and camera_auto_detect in config.txt"
            ) from None
        self._cam = cam
        return cam

    def open(self) -> None:
        cam = self._ensure_configured()
        try:
            cam.start()
        except RuntimeError as exc:
            self._release(cam)  # give the camera back, or every retry would find it busy
            raise CameraError(f"camera {self.number} failed to start: {exc}") from None
        self._started = True
        try:
            self._warm_up(cam)
        except BaseException:
            self.close()  # the burst closes only a camera that opened
            raise

    def _warm_up(self, cam: Any) -> None:
        """Discard the frames of the first ``camera.warmup_seconds`` after the start, so that
        the burst's frames are taken once the exposure has settled: dark or blown-out frames
        are a covered camera or a dark room to the light check. ``capture_metadata`` waits
        for each frame and hands its buffer straight back."""
        end = self._monotonic() + self.cfg.warmup_seconds
        while self._monotonic() < end:
            try:
                cam.capture_metadata()
            except RuntimeError as exc:
                raise CameraError(f"camera {self.number} read failed: {exc}") from None

    def capture(self) -> np.ndarray:
        if not self._started:
            raise CameraError("camera read while stopped")
        try:
            with self._cam.captured_request() as request:
                # "RGB888" in libcamera is BGR byte order in memory.
                bgr = request.make_array("main")
        except RuntimeError as exc:
            raise CameraError(f"camera {self.number} read failed: {exc}") from None
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def _release(self, cam: Any) -> None:
        with contextlib.suppress(Exception):
            cam.close()
        self._cam = None
        self._started = False

    def close(self) -> None:
        if self._cam is not None and self._started:
            try:
                self._cam.stop()
            finally:
                self._started = False
