"""Replay camera: frames from an image, a directory of images, or a video file.

For the demo, for technicians reproducing a scene, and for tests. Each capture
returns the next frame in order and wraps around at the end; the position is kept
across opens, so consecutive scans walk through the material. Each open starts at a
multiple of ``camera.burst_frames``: material laid out one burst per scene keeps one
scene per scan even when a scan takes fewer frames (a settled burst, a shutdown), as a
real camera does not keep the moments it did not capture for the next scan.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from deskwatch.camera import CameraError
from deskwatch.camera.config import CameraConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}


def load_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as RGB uint8, with a clear error for anything else."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except FileNotFoundError:
        raise CameraError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise CameraError(f"{path}: not a readable image ({exc})") from None
    except Image.DecompressionBombError as exc:  # not an OSError: it would have escaped the scan
        raise CameraError(f"{path}: image too large to replay ({exc})") from None


class ReplayCamera:
    name = "replay"

    def __init__(self, cfg: CameraConfig):
        if not cfg.source:
            raise CameraError("replay camera needs camera.source (image, directory or video)")
        self.source = Path(cfg.source)
        self.burst = max(1, cfg.burst_frames)
        self.opens = 0
        self._position = 0
        self._files: list[Path] = []
        self._video: Any = None
        self._open = False

    def open(self) -> None:
        src = self.source
        self._position = -(-self._position // self.burst) * self.burst  # the next burst's first frame
        if src.is_dir():
            self._files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise CameraError(f"{src}: no images (*.jpg, *.png, ...) in this directory")
        elif src.suffix.lower() in VIDEO_SUFFIXES:
            self._video = self._open_video(src)
        elif src.is_file():
            self._files = [src]
        else:
            raise CameraError(f"{src}: no such file or directory")
        self._open = True
        self.opens += 1

    def _open_video(self, src: Path) -> Any:
        try:
            import cv2
        except ImportError:
            raise CameraError(
                "video replay needs OpenCV: pip install opencv-python-headless (a deskwatch dependency: reinstall deskwatch)"
            ) from None
        if not src.is_file():
            raise CameraError(f"{src}: no such video file")
        cap = cv2.VideoCapture(str(src))
        if not cap.isOpened():
            raise CameraError(f"{src}: OpenCV cannot decode this video")
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if count > 0:
            cap.set(cv2.CAP_PROP_POS_FRAMES, self._position % count)
        return cap

    def capture(self) -> np.ndarray:
        if not self._open:
            raise CameraError("replay camera read while closed")
        if self._video is not None:
            import cv2

            ok, bgr = self._video.read()
            if not ok:  # end of the video: wrap around
                self._video.set(cv2.CAP_PROP_POS_FRAMES, 0)
                self._position = 0
                ok, bgr = self._video.read()
                if not ok:
                    raise CameraError(f"{self.source}: video has no readable frames")
            self._position += 1
            return np.ascontiguousarray(bgr[:, :, ::-1])
        path = self._files[self._position % len(self._files)]
        self._position += 1
        return load_image(path)

    def close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        self._open = False
