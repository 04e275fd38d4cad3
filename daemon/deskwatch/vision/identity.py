"""Identity: is a face the enrolled worker?

A face becomes a 128-number descriptor, compared with the worker's templates by
Euclidean distance; at most ``tolerance`` (0.6) it is the worker, further than
``unknown_distance`` (0.65) somebody else, and in between neither ("uncertain": an
accusation needs a face clearly not the worker's). Two backends make
the descriptor, chosen by ``vision.identity_backend``:

* ``tflite`` (the default): dlib's face recognition ResNet - the weights
  face_recognition uses, as ported by face-api - converted to TFLite with int8
  weights, on a 150x150 chip aligned from MediaPipe's face mesh
  (:class:`deskwatch.vision.faces.FaceAligner`). About 3 ms for the mesh and 3 ms for
  the descriptor per face here, against 80-400 ms for dlib.
* ``face_recognition``: dlib itself (its 5-point aligner and the same ResNet), the
  reference. Its models are loaded from ``face_recognition_models`` directly
  (importing ``face_recognition`` would also load the 100 MB 68-point model).

Templates are biometric data: they stay under ``state_dir/templates`` (directory
0700, files 0600), are never logged and never published. Each file records the
backend and the sha256 of the model that made it; a device whose backend or model
changed refuses to compare against them (:class:`TemplateMismatch`) and asks for a
new enrolment instead.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import logging
import os
import re
import stat
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from deskwatch.domain import Box, Face
from deskwatch.vision.faces import FaceAligner
from deskwatch.vision.imageops import crop
from deskwatch.vision.runtime import Model, sha256_file
from deskwatch_contract.fsowner import as_owner_of

log = logging.getLogger(__name__)

WORKER_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
BACKENDS = ("tflite", "face_recognition")
CROP_MARGIN = 0.35  # of the face box, each side: room for dlib's aligned 150x150 chip
TEMPLATE_FORMAT = 2  # 1: encodings + source only (made by face_recognition before backends existed)
DLIB_RESNET = "dlib_face_recognition_resnet_model_v1.dat"


class IdentityUnavailable(RuntimeError):
    """The backend's models or libraries are not installed."""


class TemplateMismatch(RuntimeError):
    """The stored templates were made by another backend or model than this device uses."""


class FaceEmbedder(Protocol):
    backend: str
    model_sha256: str
    last_ms: float  # time of the last embed()

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray | None:
        """The face's 128-d descriptor, or None when the face cannot be described
        (the aligner says it is not a face, or not a usable one)."""
        ...


class TfliteEmbedder:
    """Face mesh alignment + dlib's ResNet as a TFLite model."""

    backend = "tflite"

    def __init__(self, aligner: FaceAligner, model: Model):
        size = model.input_shape[1:3]
        if size != (aligner.chip_size, aligner.chip_size) or len(model.outputs) != 1:
            raise IdentityUnavailable(f"{model.file}: not a {aligner.chip_size}x{aligner.chip_size} face embedder")
        self.aligner = aligner
        self.model = model
        self.model_sha256 = model.sha256
        self.last_ms = 0.0

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray | None:
        t0 = time.perf_counter()
        chip = self.aligner.chip(image, face)
        if chip is None:
            self.last_ms = (time.perf_counter() - t0) * 1000.0
            return None
        out = next(iter(self.model.run(chip.astype(np.float32)[None]).values()))
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        return np.asarray(out, dtype=np.float64).reshape(-1)


def _model_path(name: str) -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise IdentityUnavailable("face_recognition_models is not installed: pip install face_recognition_models")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file():
        raise IdentityUnavailable(f"{path} is missing: reinstall face_recognition_models")
    return path


class DlibEmbedder:
    """face_recognition's path: dlib's 5-point aligner + ResNet encoder (the reference)."""

    backend = "face_recognition"

    def __init__(self) -> None:
        try:
            import dlib  # type: ignore[import-untyped]
        except ImportError:
            raise IdentityUnavailable("dlib is not installed: pip install dlib-bin") from None
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(_model_path("shape_predictor_5_face_landmarks.dat")))
        self._encoder = dlib.face_recognition_model_v1(str(_model_path(DLIB_RESNET)))
        self.model_sha256 = dlib_model_sha256()
        self._lock = threading.Lock()
        self.last_ms = 0.0

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray | None:
        h, w = image.shape[:2]
        return self.encode(image, face_pixels(face, w, h))

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
            self.last_ms = (time.perf_counter() - t0) * 1000.0
        return np.asarray(descriptor, dtype=np.float64)


def face_pixels(face: Face, width: int, height: int) -> tuple[int, int, int, int]:
    """The face box in pixels, made square (dlib's aligner expects a square-ish box)."""
    x0, y0, x1, y1 = (face.box.x0 * width, face.box.y0 * height, face.box.x1 * width, face.box.y1 * height)
    side = max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))


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
    identity: str | None
    distance: float | None
    encoded_at: datetime


@dataclass
class IdentityChecker:
    """Marks each face as the enrolled worker, unknown, or uncertain (between
    ``tolerance`` and ``unknown_distance``: judged neither way).

    Faces that failed the liveness check are not checked (a picture's identity does
    not matter), nor faces the embedder cannot describe (the face mesh finds no face
    there: a profile, a hand, a false detection). Within a burst the same face is
    usually at the same place in every frame: when ``reuse_seconds`` > 0 and a face
    overlaps one described less than that long ago (IoU >= 0.6) and its thumbnail is
    nearly identical, the earlier answer is reused.
    """

    embedder: FaceEmbedder
    templates: np.ndarray  # N x 128
    tolerance: float = 0.6
    min_face_px: int = 60
    max_faces: int = 3
    reuse_seconds: float = 0.0
    unknown_distance: float | None = None  # None: the tolerance (every face is one or the other)
    last_ms: float = 0.0  # embedder time of the last check (all faces)
    last_reused: int = 0  # faces whose identity the last check reused
    _seen: list[_Seen] = field(default_factory=list)

    def check(self, image: np.ndarray, faces: list[Face], at: datetime | None = None) -> list[Face]:
        """The faces with ``identity``/``distance`` set on the largest ``max_faces`` live
        (or not liveness-checked) faces of at least ``min_face_px``; the others keep
        identity None (not checked). ``at`` is the frame's capture time (no reuse without it)."""
        h, w = image.shape[:2]
        boxes = [face_pixels(f, w, h) for f in faces]
        # the face box's own height, as the setting says and as the liveness check measures it (the
        # squared box is wider: a face cut by the frame's edge, too short for the liveness check,
        # was still identity-checked and could count as the worker)
        big = [i for i, f in enumerate(faces) if f.box.height * h >= self.min_face_px and f.live is not False]
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
                descriptor = self.embedder.embed(image, face)
                spent += self.embedder.last_ms
                who, distance = self.judge(descriptor)
                encoded_at = at or datetime.min
            if thumb is not None:
                seen.append(_Seen(face.box, thumb, who, distance, encoded_at))
            out.append(replace(face, identity=who, distance=distance))
        self.last_ms, self.last_reused = spent, reused
        self._seen = seen
        return out

    def judge(self, descriptor: np.ndarray | None) -> tuple[str | None, float | None]:
        if descriptor is None:
            return None, None
        distance = round(float(np.linalg.norm(self.templates - descriptor, axis=1).min()), 4)
        if distance <= self.tolerance:
            return "worker", distance
        if self.unknown_distance is not None and distance <= self.unknown_distance:
            return "uncertain", distance  # an accusation needs a face clearly somebody else's
        return "unknown", distance

    def _recent(self, face: Face, thumb: np.ndarray, at: datetime) -> _Seen | None:
        for s in self._seen:
            age = (at - s.encoded_at).total_seconds()
            near = 0 <= age <= self.reuse_seconds and face.box.iou(s.box) >= REUSE_IOU
            if near and float(np.abs(thumb - s.thumb).mean()) <= REUSE_MAX_DIFF:
                return s
        return None


# -- templates --------------------------------------------------------------------------


@dataclass(frozen=True)
class Templates:
    encodings: np.ndarray  # N x 128
    backend: str
    model_sha256: str


def templates_dir(state_dir: str | Path) -> Path:
    return Path(state_dir) / "templates"


def template_path(state_dir: str | Path, worker: str) -> Path:
    if not WORKER_PATTERN.fullmatch(worker):
        raise ValueError(f"worker id {worker!r} must be 1-64 letters, digits, _ or -")
    return templates_dir(state_dir) / f"{worker}.npz"


def save_templates(
    state_dir: str | Path,
    worker: str,
    encodings: np.ndarray,
    *,
    backend: str,
    model_sha256: str,
    source: str = "",
) -> Path:
    """Write the worker's templates atomically, tagged with the backend and model that
    made them: directory 0700, file 0600. Written by root into a state directory another user
    owns (the service user: ``deskwatch enroll`` run with sudo), they are written with that
    user's rights (:func:`deskwatch_contract.fsowner.as_owner_of`), so they are that user's
    (the daemon runs as it, and a root-only file would leave its identity check off) and no
    link that user put there makes root change or write anything it names."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown identity backend {backend!r}")
    path = template_path(state_dir, worker)
    directory = path.parent
    # Made here, not below: the owner's rights may not reach the modules numpy would import
    # while writing (a Python under /root), and nothing needs root's there but the write.
    buf = io.BytesIO()
    np.savez(
        buf,
        encodings=np.asarray(encodings, dtype=np.float64),
        source=np.array(source),
        backend=np.array(backend),
        model_sha256=np.array(model_sha256),
        format=np.array(TEMPLATE_FORMAT),
    )
    with as_owner_of(state_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if directory.is_symlink():
            raise OSError(
                errno.ELOOP, f"{directory} is a symbolic link, not a folder: remove it (rm {directory}) and enrol again"
            )
        os.chmod(directory, 0o700)
        for stale in directory.glob(".tmp-*.npz"):  # a write a power cut stopped: biometric data all the same
            stale.unlink(missing_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)  # created 0600
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(buf.getvalue())
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        # the rename on the card: without this a power cut seconds after the enrolment (the
        # technician unplugs the device to carry it to the desk) left only the .tmp file
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    log.info("stored %d face templates for worker %s (backend %s)", len(encodings), worker, backend)
    return path


def read_templates(state_dir: str | Path, worker: str) -> tuple[Templates | None, str | None]:
    """(templates, None); (None, None) when the worker is not enrolled; (None, why and what to
    do) when the file is there but cannot be used - never an exception: a damaged or foreign
    file must turn the identity check off with a reason, not stop the daemon."""
    try:
        path = template_path(state_dir, worker)
    except ValueError:
        return None, None
    fix = f"enrol worker {worker} again (deskwatch enroll, as root or as the service user)"
    # Opened without following a link: the daemon's user owns the directory, and root's tools
    # (sudo deskwatch scan, aim) read it too: a link there would have root chmod its target.
    try:
        fd = _open_template(path)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return _refused(
                path, f"are reached through a symbolic link ({exc.filename}): remove it (rm {exc.filename}) and {fix}"
            )
        return _refused(path, f"cannot be read by this user ({exc.strerror}): {fix}")
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return _refused(path, f"are not a regular file: {fix}")
    with os.fdopen(fd, "rb") as fh:
        mode = info.st_mode & 0o777
        if mode & 0o077:
            try:
                os.chmod(fd, 0o600)
            except OSError as exc:
                return _refused(
                    path, f"are mode {mode:o} (readable by others) and cannot be made 0600 ({exc.strerror}): {fix}"
                )
            log.warning("face templates %s were mode %o; tightened to 0600", path, mode)
        try:
            too_big = _oversized_member(fh)
            if too_big:
                return _refused(path, f"are not an enrolment's ({too_big}): {fix}")
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as data:
                made = int(data["format"]) if "format" in data.files else 1
                if made > TEMPLATE_FORMAT:
                    # what a later format means this code cannot know (normalised otherwise, another
                    # layout): compared as if it were its own, the worker could be taken for a stranger
                    return _refused(path, newer_format(made, worker))
                enc: Any = data["encodings"]
                arr = np.asarray(enc, dtype=np.float64)
                # format 1 files predate the backends: face_recognition made them
                backend = str(data["backend"]) if "backend" in data.files else "face_recognition"
                sha = str(data["model_sha256"]) if "model_sha256" in data.files else ""
        except Exception as exc:  # an empty or cut file: EOFError, BadZipFile; a foreign one: KeyError, ValueError
            return _refused(path, f"cannot be read ({type(exc).__name__}: {exc}): {fix}")
    if arr.ndim != 2 or arr.shape[1] != 128 or len(arr) == 0 or not np.isfinite(arr).all():
        return _refused(path, f"are malformed: {fix}")
    return Templates(arr, backend, sha), None


MAX_TEMPLATES_BYTES = 32 << 20  # 1 KB a photo: 32,000 photos; an enrolment takes 15 to a few hundred


def _oversized_member(fh: Any) -> str | None:
    """Why the npz in ``fh`` is larger unpacked than any enrolment, or None. Its members are
    inflated whole by np.load before their shape can be judged: a 2 MB file of zeros made
    root's scan (the daemon's user writes the directory) hold 2.5 GB; the sizes in the zip's
    directory bound what the zip module inflates."""
    with zipfile.ZipFile(fh) as archive:
        for info in archive.infolist():
            if info.file_size > MAX_TEMPLATES_BYTES:
                return f"{info.filename} unpacks to {info.file_size} bytes, more than {MAX_TEMPLATES_BYTES}"
    return None


def _open_template(path: Path) -> int:
    """A descriptor of the templates file, following no link on the way from the templates
    directory (OSError ELOOP, its filename the link); a FIFO is opened without waiting."""
    nofollow = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        directory = os.open(path.parent, nofollow | os.O_DIRECTORY)
    except NotADirectoryError:
        if os.path.islink(path.parent):
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path.parent)) from None
        raise
    try:
        return os.open(path.name, nofollow | os.O_NONBLOCK, dir_fd=directory)
    except OSError as exc:
        exc.filename = str(path) if exc.errno == errno.ELOOP else exc.filename
        raise
    finally:
        os.close(directory)


def newer_format(made: int, worker: str) -> str:
    """Why templates of a later format are not used, and what to do (an update rolled back)."""
    return (
        f"were made by a newer deskwatch (template format {made}; this version reads formats up to "
        f"{TEMPLATE_FORMAT}): an update was rolled back to the slot that runs now (`deskwatch update status` says). "
        f"They are kept as they are; the identity check is off until the newer version is installed again, or "
        f"worker {worker} is enrolled again with this one (deskwatch enroll, which replaces them)"
    )


def _refused(path: Path, why: str) -> tuple[None, str]:
    log.error("face templates %s %s", path, why)
    return None, f"the face templates {why}"


def mismatch(templates: Templates, backend: str, model_sha256: str, worker: str) -> str | None:
    """Why templates made by another backend or model cannot be used (with what to do),
    or None when they can. Templates from before backends existed carry no model hash:
    the face_recognition backend made them, and still accepts them."""
    if templates.backend == backend and (
        templates.model_sha256 == model_sha256 or (backend == "face_recognition" and not templates.model_sha256)
    ):
        return None
    made = f"backend {templates.backend!r}" + (
        f", model {templates.model_sha256[:12]}..." if templates.model_sha256 else ""
    )
    return (
        f"the face templates of worker {worker} were made by {made}, but this device now uses backend "
        f"{backend!r} (model {model_sha256[:12]}...): descriptors of different models cannot be compared, "
        f"so the identity check is off until the worker is enrolled again: "
        f"deskwatch enroll --worker {worker} --consent --images DIR (or --camera config)"
    )


def check_compatible(templates: Templates, embedder: FaceEmbedder, worker: str) -> None:
    """Raise TemplateMismatch unless the templates were made by this embedder's backend and model."""
    problem = mismatch(templates, embedder.backend, embedder.model_sha256, worker)
    if problem:
        raise TemplateMismatch(problem)


def dlib_model_sha256() -> str:
    """sha256 of face_recognition's encoder model (what tags its templates)."""
    return sha256_file(_model_path(DLIB_RESNET))


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
        """A templates file is there (usable or not: :func:`read_templates` says); a templates
        directory this user may not look into counts, so that the reason is reported."""
        try:
            return self.path.is_file()
        except PermissionError:
            return True
