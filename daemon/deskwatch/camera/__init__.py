"""Cameras: one small interface, several backends, and the burst a scan takes.

Backends are found by their ``camera.backend`` name; each imports its hardware
library only when selected, so the package imports and tests on any machine:

- ``picamera2``: the Raspberry Pi camera module (needs libcamera: Pi only);
- ``v4l2``: USB webcams through OpenCV;
- ``replay``: an image, a directory of images or a video file (demos, tests);
- ``fake`` (tests only): synthetic frames with failure injection.

Privacy: a camera is opened for a scan's burst and closed right after
(:func:`take_burst`); no frame is captured outside a scan.
"""

from __future__ import annotations

import importlib
import threading
from typing import Protocol

import numpy as np

from deskwatch.camera.config import CameraConfig
from deskwatch.domain import Frame
from deskwatch.schedule import Clock

__all__ = ["BACKENDS", "Camera", "CameraError", "open_camera", "take_burst"]


class CameraError(Exception):
    """The camera could not deliver a frame; the message says what to check."""


class Camera(Protocol):
    name: str

    def open(self) -> None: ...

    def capture(self) -> np.ndarray:
        """One RGB uint8 HxWx3 frame."""
        ...

    def close(self) -> None: ...


BACKENDS = {
    "replay": "deskwatch.camera.replay:ReplayCamera",
    "v4l2": "deskwatch.camera.v4l2:V4l2Camera",
    "picamera2": "deskwatch.camera.pi:PiCamera",
    "fake": "deskwatch.camera.fake:FakeCamera",
}


def open_camera(cfg: CameraConfig) -> Camera:
    """Build (not open) the configured backend."""
    module, _, cls = BACKENDS[cfg.backend].partition(":")
    factory = getattr(importlib.import_module(module), cls)
    camera: Camera = factory(cfg)
    return camera


def take_burst(
    camera: Camera,
    frames: int,
    seconds: float,
    clock: Clock,
    stop: threading.Event | None = None,
) -> list[Frame]:
    """Open the camera, take ``frames`` frames spread over ``seconds``, close it.

    Raises :class:`CameraError` if the camera cannot be opened or read. A set
    ``stop`` event ends the burst early (shutdown); the frames so far are returned.
    """
    stop = stop or threading.Event()
    gap = seconds / (frames - 1) if frames > 1 else 0.0
    out: list[Frame] = []
    camera.open()
    try:
        start = clock.monotonic()
        for i in range(frames):
            if i:
                wait = start + i * gap - clock.monotonic()
                if wait > 0 and clock.wait(stop, wait):
                    break
            image = camera.capture()
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise CameraError(f"camera delivered an unexpected frame: shape {image.shape}, dtype {image.dtype}")
            out.append(Frame(np.ascontiguousarray(image), clock.now(), i))
    finally:
        camera.close()
    return out
