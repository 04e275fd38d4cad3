"""Replay camera: frames from an image, a directory of images, or a video file.

For the demo, for technicians reproducing a scene, and for tests. Each capture
returns the next frame in order and wraps around at the end; the position is kept
across opens, so consecutive scans walk through the material. Each open starts at a
multiple of ``camera.burst_frames``: material laid out one burst per scene keeps one
scene per scan even when a scan takes fewer frames (a settled burst, a shutdown), as a
real camera does not keep the moments it did not capture for the next scan.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from deskwatch.camera import CameraError
from deskwatch.camera.config import CameraConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v"}
NOT_A_FILE = "not a regular file (a named pipe, a device or a socket named like an image?)"
# the largest frame camera.width x camera.height allow (either way round): a small file can
# hold a far larger image, and each replayed frame is decoded anew
MAX_PIXELS = 4096 * 3072

log = logging.getLogger(__name__)


class UnreadableImage(CameraError):
    """An image file that cannot be used; ``reason`` says why without the path (enrolment
    names the photo its own way)."""

    def __init__(self, path: str | os.PathLike[str], reason: str):
        super().__init__(f"{path}: {reason}")
        self.reason = reason


def load_image(path: str | os.PathLike[str], *, shrink_jpeg: bool = False) -> np.ndarray:
    """An image file as RGB uint8, or :class:`UnreadableImage` saying why not. The one loader
    of image files: the replay camera's, and enrolment's photos.

    Only a regular file is read: a named pipe named like an image blocked its reader until a
    writer came - the burst thread for ever, and the scan waiting for it. It is opened
    without waiting (O_NONBLOCK) and checked as the file it opened (a symlink to an image is
    followed; one swapped for a pipe after a listing is still refused).

    An image larger than the largest camera frame (``MAX_PIXELS``) is refused from its
    header, before it is decoded: a 20 KB PNG of 14000x12000 took ~1.8 GB for every frame
    of every burst. The pixels are copied out once (:func:`to_rgb`).

    ``shrink_jpeg`` (enrolment's photos, taken with a phone at up to ~50 megapixels): a JPEG
    over that size is decoded at 1/2, 1/4 or 1/8 of its size instead (the decoder's own
    scaling, no full decode first), as long as that fits; a face needs far fewer pixels."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise UnreadableImage(path, "file not found") from None
    except OSError as exc:  # a socket (ENXIO), no permission
        raise UnreadableImage(path, f"cannot be read ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UnreadableImage(path, NOT_A_FILE)
            with Image.open(f) as im:
                width, height = im.size
                if shrink_jpeg and width * height > MAX_PIXELS and im.format == "JPEG":
                    # the decoder's largest scale that fits (it picks the smallest at least this size)
                    by = next((n for n in (2, 4, 8) if (width // n) * (height // n) <= MAX_PIXELS), 8)
                    im.draft("RGB", (width // by, height // by))
                    width, height = im.size
                if width * height > MAX_PIXELS:
                    raise UnreadableImage(
                        path,
                        f"too large to decode ({width}x{height}; at most {MAX_PIXELS / 1e6:.1f} megapixels, "
                        "the largest camera frame: scale it down)",
                    )
                return to_rgb(im)
    except (UnidentifiedImageError, OSError) as exc:
        raise UnreadableImage(path, f"not a readable image ({exc})") from None
    except Image.DecompressionBombError as exc:  # not an OSError: it would have escaped the scan
        raise UnreadableImage(path, f"too large to decode ({exc})") from None


def to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded image's pixels as RGB uint8, copied out once.

    Greyscale wider than 8 bits - a 16-bit PNG opens as I;16 (as I in older Pillow) - is
    scaled from its 16-bit range: Pillow's own conversion clips such pixels at 255, and a
    lit scene became a flat white frame, a covered camera to the light check. Its range is
    the container's, never the picture's own, so a dark room stays dark."""
    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        wide = np.asarray(im, dtype=np.float32)
        grey = np.rint(np.clip(wide, 0, 65535) / 257).astype(np.uint8)
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    rgb = im if im.mode == "RGB" else im.convert("RGB")  # convert() copies even an RGB image
    return np.array(rgb, dtype=np.uint8)


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
        self._left_out: list[str] = []  # the folder's entries named like images that are no files

    def open(self) -> None:
        src = self.source
        self._position = -(-self._position // self.burst) * self.burst  # the next burst's first frame
        if src.is_dir():
            named = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            self._files = [p for p in named if p.is_file()]
            left_out = [p.name for p in named if p not in self._files]
            if left_out and left_out != self._left_out:  # once, not at every scan
                log.warning("replay: %s left out: %s", ", ".join(left_out), NOT_A_FILE)
            self._left_out = left_out
            if not self._files:
                raise CameraError(f"{src}: no images (*.jpg, *.png, ...) in this directory")
        elif src.suffix.lower() in VIDEO_SUFFIXES:
            self._video = self._open_video(src)
        elif src.is_file():
            self._files = [src]
        elif src.exists():
            raise CameraError(f"{src}: {NOT_A_FILE}")
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
