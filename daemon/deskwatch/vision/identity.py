"""Identity: face_recognition's 128-d encoder, run only on the faces BlazeFace found.

face_recognition's default path searches the whole frame with dlib's HOG detector
and then encodes; here the search is BlazeFace's (a few ms) and dlib only sees a
crop around each face: the 5-point landmark model aligns it and the ResNet encoder
(the same weights face_recognition uses) turns it into 128 numbers, compared with
the enrolled worker's templates by Euclidean distance (face_recognition's metric,
tolerance 0.6 by default).

The dlib models are loaded directly from ``face_recognition_models`` (importing
``face_recognition`` itself would also load its 100 MB 68-point landmark model and
the CNN detector, which this path never uses).

Templates are biometric data: they stay under ``state_dir/templates`` (directory
0700, files 0600), are never logged and never published.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from deskwatch.domain import Box, Face
from deskwatch.vision.imageops import crop

log = logging.getLogger(__name__)

WORKER_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
CROP_MARGIN = 0.35  # of the face box, each side: room for dlib's aligned 150x150 chip


class IdentityUnavailable(RuntimeError):
    """dlib or face_recognition_models is not installed."""


def _model_path(name: str) -> str:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailable("face_recognition_models is not installed: pip install face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise IdentityUnavailable(f"{path} is missing: reinstall face_recognition_models")
    return str(path)


class FaceEncoder:
    """dlib's 5-point aligner + ResNet encoder (face_recognition's weights)."""

    def __init__(self) -> None:
        try:
            import dlib  # type: ignore[import-untyped]
        except ImportError:
            raise IdentityUnavailable("dlib is not installed: pip install dlib-bin") from None
        self._dlib = dlib
        self._shape = dlib.shape_predictor(_model_path("shape_predictor_5_face_landmarks.dat"))
        self._encoder = dlib.face_recognition_model_v1(_model_path("dlib_face_recognition_resnet_model_v1.dat"))
        self._lock = threading.Lock()
        self.encode_ms = 0.0  # time of the last encoder call

    def encode(self, image: np.ndarray, face_box_px: tuple[int, int, int, int]) -> np.ndarray:
        """128-d encoding of the face in the pixel box (x0, y0, x1, y1) of an RGB image."""
        x0, y0, x1, y1 = face_box_px
        mx, my = int((x1 - x0) * CROP_MARGIN), int((y1 - y0) * CROP_MARGIN)
        cx0, cy0 = max(0, x0 - mx), max(0, y0 - my)
        patch = crop(image, (cx0, cy0, x1 + mx, y1 + my))  # C-contiguous, as dlib needs
        rect = self._dlib.rectangle(x0 - cx0, y0 - cy0, x1 - cx0, y1 - cy0)
        with self._lock:
            t0 = time.perf_counter()
            shape = self._shape(patch, rect)
            descriptor = self._encoder.compute_face_descriptor(patch, shape, 1)
            self.encode_ms = (time.perf_counter() - t0) * 1000.0
        return np.asarray(descriptor, dtype=np.float64)


def face_pixels(face: Face, width: int, height: int) -> tuple[int, int, int, int]:
    """The face box in pixels, made square (dlib's aligner expects a square-ish box)."""
    x0, y0, x1, y1 = (
        face.box.x0 * width,
        face.box.y0 * height,
        face.box.x1 * width,
        face.box.y1 * height,
    )
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (
        int(cx - side / 2),
        int(cy - side / 2),
        int(cx + side / 2),
        int(cy + side / 2),
    )


THUMB = 16  # side of the grey thumbnail that recognises "the same face as a moment ago"
REUSE_IOU = 0.6
REUSE_MAX_DIFF = 0.35  # mean |difference| of the z-scored thumbnails


def face_thumbnail(image: np.ndarray, box_px: tuple[int, int, int, int]) -> np.ndarray:
    """A 16x16 grey, z-scored view of the face: cheap to compare, blind to exposure."""
    from deskwatch.vision.imageops import resize

    patch = crop(image, box_px)
    grey = resize(patch, THUMB, THUMB).astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    return (grey - grey.mean()) / (grey.std() + 1e-3)  # type: ignore[no-any-return]


@dataclass
class _Seen:
    box: Box
    thumb: np.ndarray
    identity: str
    distance: float
    encoded_at: datetime


@dataclass
class IdentityChecker:
    """Marks each face as the enrolled worker or unknown.

    Within a burst the same face is usually at the same place in every frame: when
    ``reuse_seconds`` > 0 and a face overlaps one encoded less than that long ago
    (IoU >= 0.6) and its thumbnail is nearly identical, the earlier answer is reused
    instead of running the encoder (~0.15 s here, ~1 s on a Pi) again.
    """

    encoder: FaceEncoder
    templates: np.ndarray  # N x 128
    tolerance: float = 0.6
    min_face_px: int = 60
    max_faces: int = 3
    reuse_seconds: float = 0.0
    last_ms: float = 0.0  # encoder time of the last check (all faces)
    last_reused: int = 0  # faces whose identity the last check reused
    _seen: list[_Seen] = field(default_factory=list)

    def check(self, image: np.ndarray, faces: list[Face], at: datetime | None = None) -> list[Face]:
        """The faces with ``identity``/``distance`` set on the largest ``max_faces`` of at
        least ``min_face_px``; the others keep identity None (not checked). ``at`` is
        the frame's capture time (no reuse without it)."""
        h, w = image.shape[:2]
        boxes = [face_pixels(f, w, h) for f in faces]
        big = [i for i, b in enumerate(boxes) if b[3] - b[1] >= self.min_face_px]
        chosen = set(sorted(big, key=lambda i: -faces[i].box.area)[: self.max_faces])
        out = []
        seen: list[_Seen] = []
        spent, reused = 0.0, 0
        for i, face in enumerate(faces):
            if i not in chosen:
                out.append(face)
                continue
            thumb = face_thumbnail(image, boxes[i]) if at is not None and self.reuse_seconds > 0 else None
            hit = self._recent(face, thumb, at) if thumb is not None and at is not None else None
            if hit is not None:
                who, distance, encoded_at = hit.identity, hit.distance, hit.encoded_at
                reused += 1
            else:
                encoding = self.encoder.encode(image, boxes[i])
                spent += self.encoder.encode_ms
                distance = round(float(np.linalg.norm(self.templates - encoding, axis=1).min()), 4)
                who = "worker" if distance <= self.tolerance else "unknown"
                encoded_at = at or datetime.min
            if thumb is not None:
                seen.append(_Seen(face.box, thumb, who, distance, encoded_at))
            out.append(replace(face, identity=who, distance=distance))
        self.last_ms, self.last_reused = spent, reused
        self._seen = seen
        return out

    def _recent(self, face: Face, thumb: np.ndarray, at: datetime) -> _Seen | None:
        for s in self._seen:
            age = (at - s.encoded_at).total_seconds()
            near = 0 <= age <= self.reuse_seconds and face.box.iou(s.box) >= REUSE_IOU
            if near and float(np.abs(thumb - s.thumb).mean()) <= REUSE_MAX_DIFF:
                return s
        return None


# -- templates --------------------------------------------------------------------------


def templates_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "templates"


@dataclass(frozen=True)
class IdentityTarget:
    """Whose templates the identity check compares faces with, and where they are kept."""

    state_dir: str
    worker_id: str

    @property
    def path(self) -> Path:
        return template_path(self.state_dir, self.worker_id)

    @property
    def enrolled(self) -> bool:
        return self.path.is_file()


def template_path(state_dir: str | Path, worker: str) -> Path:
    if not WORKER_PATTERN.fullmatch(worker):
        raise ValueError(f"worker id {worker!r} must be 1-64 letters, digits, _ or -")
    return templates_dir(state_dir) / f"{worker}.npz"


def save_templates(state_dir: str | Path, worker: str, encodings: np.ndarray, *, source: str = "") -> Path:
    """Write the worker's templates atomically: directory 0700, file 0600."""
    path = template_path(state_dir, worker)
    directory = path.parent
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                encodings=np.asarray(encodings, dtype=np.float64),
                source=np.array(source),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("stored %d face templates for worker %s", len(encodings), worker)
    return path


def load_templates(state_dir: str | Path, worker: str) -> np.ndarray | None:
    """The worker's templates (N x 128), or None when the worker is not enrolled."""
    try:
        path = template_path(state_dir, worker)
    except ValueError:
        return None
    if not path.is_file():
        return None
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning("face templates %s are mode %o; tightening to 0600", path, mode)
        os.chmod(path, 0o600)
    try:
        with np.load(path, allow_pickle=False) as data:
            enc: Any = data["encodings"]
            arr = np.asarray(enc, dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        log.error("face templates %s cannot be read (%s): enrol the worker again", path, exc)
        return None
    if arr.ndim != 2 or arr.shape[1] != 128 or len(arr) == 0:
        log.error("face templates %s are malformed: enrol the worker again", path)
        return None
    return arr
