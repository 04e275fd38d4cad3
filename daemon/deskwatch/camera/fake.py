"""A camera for unit tests: synthetic or given frames, failures on demand, counted opens."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deskwatch.camera import CameraError
from deskwatch.camera.config import CameraConfig


class FakeCamera:
    name = "fake"

    def __init__(
        self,
        cfg: CameraConfig | None = None,
        frames: Sequence[np.ndarray] | None = None,
        width: int = 320,
        height: int = 240,
    ):
        self.frames = list(frames) if frames is not None else []
        self.width, self.height = width, height
        self.opens = 0
        self.captures = 0
        self.is_open = False
        self.fail_open: Exception | None = None  # set to make open() raise
        self.fail_capture: Exception | None = None

    def open(self) -> None:
        if self.fail_open is not None:
            raise self.fail_open
        self.opens += 1
        self.is_open = True

    def capture(self) -> np.ndarray:
        if not self.is_open:
            raise CameraError("fake camera read while closed")
        if self.fail_capture is not None:
            raise self.fail_capture
        self.captures += 1
        if self.frames:
            return self.frames[(self.captures - 1) % len(self.frames)]
        rng = np.random.default_rng(self.captures)
        return rng.integers(40, 220, (self.height, self.width, 3), dtype=np.uint8)

    def close(self) -> None:
        self.is_open = False
