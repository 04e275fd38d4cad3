"""``deskwatch enroll``: build the worker's face templates (with their consent).

Each image must show exactly one face, large and sharp enough, roughly facing the
camera (and, from the camera, a live face rather than a picture held up); the
accepted faces are described by the configured identity backend
(``vision.identity_backend``) and stored under ``state_dir/templates/<worker>.npz``
(directory 0700, file 0600), tagged with the backend and the model's sha256 so that a
device whose backend changes asks for a new enrolment. The templates never leave the
device and are never printed or logged.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deskwatch.commands.common import load_config_or_exit
from deskwatch.domain import Face
from deskwatch_contract import exitcodes

if TYPE_CHECKING:
    from deskwatch.config import Config

NAME = "enroll"
HELP = "enrol the worker's face from photos or the camera (needs --consent); templates stay on the device"

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MIN_FACE_PX = 80  # face box height
MIN_SHARPNESS = 15.0  # variance of the Laplacian of the face, scaled to 128 px
MIN_FACING = 0.35
# --camera: every photo is held in memory and the camera stays open while they are
# taken (0.3 s apart); 60 is 18 s, far more than enough usable photos.
MAX_FRAMES = 60


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker", required=True, metavar="ID", help="the worker's opaque id (as device.worker_id)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", metavar="DIR", help="a directory of photos of the worker (or one photo)")
    source.add_argument(
        "--camera",
        metavar="N",
        help="take the photos with a camera: 'config' (the configured one), a picamera2 number, or a USB /dev/videoN",
    )
    parser.add_argument(
        "--consent",
        action="store_true",
        help="the worker has agreed to have face templates stored on this device (required)",
    )
    parser.add_argument("--min-images", type=int, default=3, metavar="K", help="accepted photos needed (default 3)")
    parser.add_argument(
        "--frames", type=int, default=15, help=f"--camera: photos to take (default 15, at most {MAX_FRAMES})"
    )


@dataclass
class Verdict:
    source: str
    accepted: bool
    reason: str


def check_quality(image: np.ndarray, faces: list[Face]) -> tuple[Face | None, str]:
    """The one usable face, or None and why not."""
    from deskwatch.vision.imageops import crop, resize, sharpness

    if not faces:
        return None, "no face found"
    if len(faces) > 1:
        return None, f"{len(faces)} faces: the photo must show only the worker"
    face = faces[0]
    h, w = image.shape[:2]
    x0, y0, x1, y1 = face.box.to_pixels(w, h)
    if y1 - y0 < MIN_FACE_PX:
        return None, f"face too small ({y1 - y0} px tall, need {MIN_FACE_PX}): move closer"
    if face.facing < MIN_FACING:
        return None, f"face turned away (facing {face.facing:.2f}, need {MIN_FACING}): look at the camera"
    patch = crop(image, (x0, y0, x1, y1))
    scale = 128 / patch.shape[0]
    small = resize(patch, max(1, round(patch.shape[1] * scale)), 128)
    gray = small.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    sharp = sharpness(gray)
    if sharp < MIN_SHARPNESS:
        return None, f"face blurred (sharpness {sharp:.0f}, need {MIN_SHARPNESS:.0f}): hold still, add light"
    return face, "ok"


def _images_from_dir(path: Path) -> list[tuple[str, np.ndarray]]:
    """The photos of a folder (or one photo), read as the replay camera reads its images: a
    16-bit photo scaled to 8 bits (Pillow's own conversion made it flat white: no face found),
    a huge image or a named pipe refused; a photo that cannot be used is skipped, saying why."""
    from deskwatch.camera.replay import UnreadableImage, load_image

    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    out = []
    for p in files:
        try:
            out.append((p.name, load_image(p, shrink_jpeg=True)))
        except UnreadableImage as exc:
            print(f"  skip {p.name}: {exc.reason}", file=sys.stderr)
    return out


def _images_from_camera(cfg: Config, source: str, frames: int, worker: str) -> list[tuple[str, np.ndarray]]:
    from deskwatch.camera import CameraError, open_camera
    from deskwatch.technician.selftest import finish_camera_use, record_camera_use

    # The appliance's own camera (its configured backend) unless a USB device is named.
    own = source in ("", "config") or (cfg.camera.backend == "picamera2" and source.isdigit())
    cam_cfg = (
        dataclasses.replace(cfg.camera, source=cfg.camera.source if source in ("", "config") else source)
        if own
        else dataclasses.replace(cfg.camera, backend="v4l2", source=source)
    )
    camera = open_camera(cam_cfg)
    out = []
    what = {"camera": source or "config", "worker": worker, "kept": "no photos; face templates if enough were usable"}
    row, failed = None, None
    try:
        camera.open()
        # The camera used outside a scan: the worker sees it in `deskwatch history`, recorded
        # before the first photo and completed with the photos the camera really gave.
        row = record_camera_use(cfg, "enroll", {"asked": frames, **what})
        for i in range(frames):
            out.append((f"camera frame {i + 1}", camera.capture()))
            time.sleep(0.3)
    except CameraError as exc:
        failed = str(exc)
        print(f"deskwatch enroll: camera {source}: {exc}", file=sys.stderr)
        raise SystemExit(exitcodes.UNAVAILABLE) from None
    finally:
        camera.close()
        if row is not None:
            finish_camera_use(
                cfg, row, {"frames": len(out), "asked": frames, **what, **({"failed": failed} if failed else {})}
            )
    return out


def enrolment_models(cfg: Config) -> tuple[Path, str | None]:
    """The models directory to enrol with, or why there is none: the daemon's (a model job's
    when one replaced the embedder: templates carry the embedder's hash, and the daemon
    refuses those of another). Root loads no directory another user could have written
    (``app.tool_models_dir``): it enrols with the installed models, which is the same when
    the daemon's embedder is the installed one, and is refused when it is not."""
    from deskwatch.app import daemon_models_dir, tool_models_dir
    from deskwatch.technician.service_user import SERVICE_USER
    from deskwatch.vision.pipeline import FACE_EMBEDDER_MODEL
    from deskwatch.vision.runtime import ModelError, read_manifest

    directory, _source, note = tool_models_dir(cfg, "enroll")
    if note is None or cfg.vision.identity_backend == "face_recognition":  # no model file makes the descriptors
        if note:
            print(f"deskwatch enroll: {note}", file=sys.stderr)
        return directory, None
    daemons, source = daemon_models_dir(cfg)
    try:
        theirs = read_manifest(daemons)[FACE_EMBEDDER_MODEL].sha256
        ours = read_manifest(directory)[FACE_EMBEDDER_MODEL].sha256
    except (ModelError, KeyError):
        theirs = ours = ""  # the daemon cannot load its embedder either: it says so (deskwatch models)
    if theirs != ours:
        return directory, (
            f"the daemon compares faces with the embedder in {daemons} ({source.split(',')[0]}, sha256 "
            f"{theirs[:12]}...), which root does not load (another user could have written it), and templates made "
            f"with the installed one (sha256 {ours[:12]}...) would not match it: enrol as the daemon's user, "
            f"sudo -u {SERVICE_USER} deskwatch enroll ... (photos it may read)"
        )
    print(f"deskwatch enroll: {note} (the embedder is the same: the templates match the daemon's)", file=sys.stderr)
    return directory, None


def run(args: argparse.Namespace) -> int:
    if not args.consent:
        print(
            "deskwatch enroll: refusing without --consent. Face templates are biometric data: enrol only a "
            "worker who has agreed to it, then run again with --consent.",
            file=sys.stderr,
        )
        return exitcodes.USAGE
    cfg = load_config_or_exit(args)
    from deskwatch.policy.profiles import identity_allowed

    if not identity_allowed(cfg.policy):
        print(
            f"deskwatch enroll: this device runs no identity check (profile {cfg.policy.profile}, or the "
            "unrecognized_person rule is off), so no face template may be stored; nothing was taken",
            file=sys.stderr,
        )
        return exitcodes.USAGE
    if args.min_images < 1:
        print("deskwatch enroll: --min-images must be at least 1", file=sys.stderr)
        return exitcodes.USAGE
    if args.camera and not 1 <= args.frames <= MAX_FRAMES:
        print(f"deskwatch enroll: --frames must be 1 to {MAX_FRAMES} (not {args.frames})", file=sys.stderr)
        return exitcodes.USAGE
    from deskwatch.vision.faces import FaceDetector
    from deskwatch.vision.identity import WORKER_PATTERN, IdentityUnavailable, save_templates
    from deskwatch.vision.liveness import LivenessChecker
    from deskwatch.vision.pipeline import FACE_MODELS, build_embedder
    from deskwatch.vision.runtime import ModelError, ModelStore

    if not WORKER_PATTERN.fullmatch(args.worker):
        print("deskwatch enroll: --worker must be 1-64 letters, digits, _ or -", file=sys.stderr)
        return exitcodes.USAGE
    models_dir, cannot = enrolment_models(cfg)
    if cannot:
        print(f"deskwatch enroll: {cannot}; nothing was taken", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    if args.images:
        path = Path(args.images)
        if not path.exists():
            print(f"deskwatch enroll: {path} does not exist", file=sys.stderr)
            return exitcodes.USAGE
        try:
            images = _images_from_dir(path)
        except OSError as exc:
            print(f"deskwatch enroll: cannot read {path}: {exc.strerror or exc}", file=sys.stderr)
            return exitcodes.USAGE
    else:
        images = _images_from_camera(cfg, args.camera, args.frames, args.worker)
    if not images:
        print("deskwatch enroll: no images to enrol from", file=sys.stderr)
        return exitcodes.USAGE
    try:
        store = ModelStore(dataclasses.replace(cfg.vision, models_dir=str(models_dir)))
        detector = FaceDetector(
            store.load(FACE_MODELS[cfg.vision.face_model]),
            threshold=cfg.vision.face_threshold,
            nms_iou=cfg.vision.face_nms_iou,
        )
        embedder = build_embedder(cfg.vision, store)
    except (ModelError, IdentityUnavailable) as exc:
        print(f"deskwatch enroll: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    # from the camera, a picture held up must not be enrolled as the worker
    liveness = LivenessChecker(cfg.vision.liveness) if args.camera and cfg.vision.liveness.enabled else None
    verdicts: list[Verdict] = []
    encodings = []
    for name, image in images:
        face, reason = check_quality(image, detector.detect(image))
        if face is not None and liveness is not None:
            checked = liveness.check(image, [face])[0]
            if checked.live is False:
                face, reason = None, f"a picture of a face, not a live one ({checked.spoof_cues})"
        if face is not None:
            descriptor = embedder.embed(image, face)
            if descriptor is None:
                face, reason = None, "the face landmarks were not found: look straight at the camera"
            else:
                encodings.append(descriptor)
        verdicts.append(Verdict(name, face is not None, reason))
        print(f"  {'accepted' if face is not None else 'rejected'}: {name}" + ("" if face else f" ({reason})"))
    if len(encodings) < args.min_images:
        print(
            f"deskwatch enroll: only {len(encodings)} usable photo(s), need {args.min_images}; nothing was stored",
            file=sys.stderr,
        )
        return exitcodes.FAIL
    try:
        stored = save_templates(
            cfg.state_dir,
            args.worker,
            np.stack(encodings),
            backend=embedder.backend,
            model_sha256=embedder.model_sha256,
            source=str(args.images or args.camera),
        )
    except OSError as exc:
        hint = "" if os.geteuid() == 0 else "; run as root or as the deskwatch user"
        print(
            f"deskwatch enroll: cannot store the templates under {cfg.state_dir}: {exc.strerror or exc}{hint}",
            file=sys.stderr,
        )
        return exitcodes.FAIL
    print(
        f"enrolled worker {args.worker}: {len(encodings)} template(s) in {stored} (mode 0600), "
        f"identity backend {embedder.backend}"
    )
    if args.worker != cfg.device.worker_id:
        print(
            f"note: this device checks worker {cfg.device.worker_id!r} (device.worker_id), not {args.worker!r}",
            file=sys.stderr,
        )
    return 0
