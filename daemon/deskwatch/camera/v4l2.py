"""USB webcams through OpenCV's V4L2 backend (``pip install opencv-python-headless (a deskwatch dependency: reinstall deskwatch)``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from deskwatch.camera import CameraError
from deskwatch.camera.config import CameraConfig


class V4l2Camera:
    name = "v4l2"

    def __init__(self, cfg: CameraConfig, monotonic: Callable[[], float] = time.monotonic):
        self.cfg = cfg
        source = cfg.source or "0"
        self.device: int | str = int(source) if source.isdigit() else source
        self._monotonic = monotonic  # what the warm-up is timed by (a test's clock)
        self._cap: Any = None

    def open(self) -> None:
        try:
            import cv2
        except ImportError:
            raise CameraError(
                "the v4l2 backend needs OpenCV: pip install opencv-python-headless (a deskwatch dependency: reinstall deskwatch)"
            ) from None
        _quiet(cv2)
        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise CameraError(
                f"cannot open {self.device}: is the webcam plugged in, and is this user in the 'video' group?"
            )
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.cfg.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.cfg.height)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap
        try:
            self._warm_up()
        except BaseException:
            self.close()  # the burst closes only a camera that opened
            raise

    def _warm_up(self) -> None:
        """Discard the frames of the first ``camera.warmup_seconds``: a webcam streams from the
        moment it is opened, before its auto exposure has settled (often black frames for about
        a second), and it is opened anew for each burst - black frames in the burst are a covered
        camera to the light check. ``grab`` takes each frame without decoding it; the camera's
        own pace times the loop."""
        end = self._monotonic() + self.cfg.warmup_seconds
        while self._monotonic() < end:
            if not self._cap.grab():
                raise CameraError(f"{self.device} delivered no frame (unplugged?)")

    def capture(self) -> np.ndarray:
        if self._cap is None:
            raise CameraError("camera read while closed")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise CameraError(f"{self.device} delivered no frame (unplugged?)")
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _quiet(cv2: Any) -> None:
    """OpenCV's own lines below an error stay off stderr: each failed open of an unplugged webcam
    printed a '[ WARN:...] ... can't be used to capture by name' there, which journald files at
    info beside the daemon's own error (which says what to check)."""
    with contextlib.suppress(AttributeError):  # an OpenCV without its logging module
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
