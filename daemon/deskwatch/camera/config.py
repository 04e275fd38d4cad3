"""The ``camera`` config section."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from deskwatch_contract.configfile import Report, setting


@dataclass(frozen=True)
class CameraConfig:
    """Which camera to read and how a scan's burst is taken."""

    backend: Literal["picamera2", "v4l2", "replay"] = setting(
        "picamera2",
        doc="picamera2 (Raspberry Pi camera module), v4l2 (USB webcam through OpenCV) or replay (image files, a directory of them, or a video: for demos and tests).",
    )
    source: str | None = setting(
        None,
        doc="replay: path of an image, a directory of images (read in name order, cycling) or a video file; v4l2: device path or index such as /dev/video0 or 0; picamera2: camera number (default 0).",
        example="/dev/video0",
    )
    width: int = setting(
        1280, doc="Capture width in pixels (picamera2/v4l2 ask the camera for this size).", minimum=160, maximum=4096
    )
    height: int = setting(720, doc="Capture height in pixels.", minimum=120, maximum=3072)
    rotation: Literal[0, 90, 180, 270] = setting(
        0,
        doc="Degrees the camera's picture is turned clockwise to stand upright, before anything looks at it: 180 for a camera module mounted upside down (its ribbon cable leaving at the top), 90 or 270 for one on its side. The selftest's orientation row says which is needed. Upside down the detectors misread people: on the repo's photos turned over, 3 of 42 desks with somebody at them were called empty, a mouth holding nothing was eating a sandwich, a phone in the hand was at the ear. Costs one copy of each frame (~1 ms at 1280x720).",
    )
    burst_frames: int = setting(
        5, doc="Frames per scan. A finding must persist across the burst.", minimum=1, maximum=30
    )
    burst_seconds: float = setting(2.0, doc="Time over which the burst's frames are spread.", minimum=0.0, maximum=30.0)
    warmup_seconds: float = setting(
        1.0,
        doc="picamera2/v4l2: how long the frames after the camera starts are discarded before the burst's first frame, so that its auto exposure has settled. A USB webcam's first frames after it is opened (for each burst) are often black, and black frames in a burst look like a covered camera (camera_obstructed); the Pi camera's exposure starts from the last scan's, maybe in another light. Part of opening the camera (open_timeout_seconds). 0 keeps the very first frame.",
        minimum=0.0,
        maximum=5.0,
    )
    open_timeout_seconds: float = setting(
        10.0,
        doc="How long opening the camera and delivering a frame may take. Longer counts as hung: the selftest fails the camera, and the daemon's watchdog allowance for a scan is built from it (a hung read stops the pings and systemd restarts the daemon).",
        minimum=1.0,
        maximum=120.0,
    )
    retry_max_seconds: float = setting(
        300.0, doc="Longest wait between attempts to reopen a failed camera.", minimum=5.0, maximum=3600.0
    )

    def validate(self, report: Report) -> None:
        if self.backend == "replay" and not self.source:
            report("source", "the replay backend needs a source: an image file, a directory of images or a video file")
