"""Cameras: one small interface, several backends, and the burst a scan takes.

Backends are found by their ``camera.backend`` name; each imports its hardware
library only when selected, so the package imports and tests on any machine:

- ``picamera2``: the Raspberry Pi camera module (needs libcamera: Pi only);
- ``v4l2``: USB webcams through OpenCV;
- ``replay``: an image, a directory of images or a video file (demos, tests);
- ``fake`` (tests only): synthetic frames with failure injection.

Privacy: a camera is opened for a scan's burst and closed right after
(:func:`take_burst`, or :class:`BurstInFlight`, which hands the frames over one by one as
they are captured); no frame is captured outside a scan.
"""

from __future__ import annotations

import importlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Protocol

import numpy as np

from deskwatch.camera.config import CameraConfig
from deskwatch.domain import Frame
from deskwatch.schedule import Clock

__all__ = [
    "BACKENDS",
    "DONE_POLL_SECONDS",
    "BurstInFlight",
    "Camera",
    "CameraError",
    "Turned",
    "open_camera",
    "take_burst",
    "turned",
]


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
    """Build (not open) the configured backend, its pictures turned upright (``camera.rotation``)."""
    module, _, cls = BACKENDS[cfg.backend].partition(":")
    factory = getattr(importlib.import_module(module), cls)
    camera: Camera = factory(cfg)
    return Turned(camera, cfg.rotation) if cfg.rotation else camera


def turned(image: np.ndarray, degrees: int) -> np.ndarray:
    """``image`` turned ``degrees`` (a multiple of 90) clockwise, as a new contiguous array."""
    return np.ascontiguousarray(np.rot90(image, -(degrees // 90) % 4))


class Turned:
    """A camera whose pictures are turned ``degrees`` clockwise (a camera mounted upside
    down or on its side): everything after the camera sees the scene upright."""

    def __init__(self, camera: Camera, degrees: int):
        if degrees % 90:
            raise ValueError(f"a camera is turned by a multiple of 90 degrees, not {degrees}")
        self.camera, self.degrees = camera, degrees % 360
        self.name = camera.name

    def open(self) -> None:
        self.camera.open()

    def capture(self) -> np.ndarray:
        return turned(self.camera.capture(), self.degrees)

    def close(self) -> None:
        self.camera.close()


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
    out: list[Frame] = []
    _capture(camera, frames, seconds, clock, stop or threading.Event(), out.append)
    return out


def _capture(
    camera: Camera,
    frames: int,
    seconds: float,
    clock: Clock,
    stop: threading.Event,
    deliver: Callable[[Frame], None],
    done: threading.Event | None = None,
) -> None:
    """The burst itself: each frame to ``deliver`` as soon as it is captured. A set ``stop``
    (shutdown) ends it at once, even mid-wait; a set ``done`` (the consumer needs no more
    frames) ends it within ``DONE_POLL_SECONDS``, the camera closed, no frame taken after."""
    gap = seconds / (frames - 1) if frames > 1 else 0.0
    camera.open()
    try:
        start = clock.monotonic()
        for i in range(frames):
            if i and _wait_for(start + i * gap, clock, stop, done):
                break
            image = camera.capture()
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise CameraError(f"camera delivered an unexpected frame: shape {image.shape}, dtype {image.dtype}")
            deliver(Frame(np.ascontiguousarray(image), clock.now(), i))
            del image  # the frame is the consumer's now: this thread keeps no reference while it waits
    finally:
        camera.close()


DONE_POLL_SECONDS = 0.1  # how soon a burst whose consumer left notices it, mid-wait


def _wait_for(deadline: float, clock: Clock, stop: threading.Event, done: threading.Event | None) -> bool:
    """Wait until ``deadline`` (monotonic); True when the burst is to end instead: ``stop``
    (waited on, so that shutdown ends it at once) or ``done`` (looked at every
    DONE_POLL_SECONDS: a settled scan closes the camera about then, not at the next frame)."""
    while (wait := deadline - clock.monotonic()) > 0:
        if done is not None and done.is_set():
            return True
        if clock.wait(stop, wait if done is None else min(wait, DONE_POLL_SECONDS)):
            return True
    return stop.is_set() or (done is not None and done.is_set())


class BurstInFlight:
    """:func:`take_burst` in a thread of its own, each frame handed over as soon as it is
    captured, so that a scan analyses a frame while the burst goes on and need not hold
    the frames it is done with (issue 13: five 1280x720 frames are 13.8 MB).

    The burst keeps its pace whatever the consumer does (``frames`` over ``seconds``, as
    :func:`take_burst`); a consumer slower than the camera finds the frames waiting.
    Iterating yields the frames in order and ends when the burst does: after the last
    frame, after a set ``stop``, or where the camera failed (``error`` then says how, the
    exception :func:`take_burst` would have raised). Leaving the ``with`` block ends the
    burst: no frame is taken after it (a scan settled before the burst's last frames does
    not keep the camera open for them); it waits for the camera to be closed, dropping
    frames taken but not consumed::

        with BurstInFlight(camera, 5, 2.0, clock, stop) as burst:
            for frame in burst:
                ...
        if burst.error is not None: ...
    """

    def __init__(self, camera: Camera, frames: int, seconds: float, clock: Clock, stop: threading.Event | None = None):
        self.captured = 0  # frames captured so far
        self.seconds = 0.0  # the burst's length, camera opened to camera closed (once ended)
        self.error: BaseException | None = None
        self._frames: queue.SimpleQueue[Frame | None] = queue.SimpleQueue()  # None: the burst ended
        self._ended = False  # the consumer has seen the end
        self._done = threading.Event()  # the consumer left: take no more frames
        self._thread = threading.Thread(
            target=self._run,
            args=(camera, frames, seconds, clock, stop or threading.Event()),
            name="burst",
            daemon=True,
        )

    def __enter__(self) -> BurstInFlight:
        self._thread.start()
        return self

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self._frames.get()) is not None:
            yield frame
            del frame  # a frame the consumer let go is not held here while the next one comes
        self._ended = True

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._done.set()
        while not self._ended:  # the rest of the burst, taken by nobody
            self._ended = self._frames.get() is None
        self._thread.join()

    def _deliver(self, frame: Frame) -> None:
        self.captured += 1
        self._frames.put(frame)

    def _run(self, camera: Camera, frames: int, seconds: float, clock: Clock, stop: threading.Event) -> None:
        t0 = time.perf_counter()
        try:
            _capture(camera, frames, seconds, clock, stop, self._deliver, self._done)
        except BaseException as exc:  # handed to the scan, which decides as it did with take_burst
            self.error = exc
        finally:
            self.seconds = time.perf_counter() - t0
            self._frames.put(None)
