"""``deskwatch bench``: time the whole scan pipeline on real photos.

Each photo is fitted (letterboxed) into a camera-sized frame (camera.width x
camera.height, 1280x720 by default), then, after a warm-up, every frame goes
through what a scan does with it: light check, detectors, identity, policy and -
when the policy finds something - the evidence thumbnail. Then whole scans: each
photo as a burst of ``camera.burst_frames`` frames with sensor noise (a still
scene) over ``camera.burst_seconds``, taken and analysed as the scanner does (each frame
as it comes, the phone stage only while phone_use or eating can still persist through the
burst, a frame that may be evidence kept as its evidence picture), evaluated, with evidence
for its findings. Reported: per-stage
p50/p95, end-to-end time per frame, the time spent inside the models (TFLite
``invoke()`` + dlib's encoder), their ratio ``overhead_ratio`` and their difference
``outside_models_ms`` (the ratio falls when the models run slower: on a shared VM their time
a frame varied by 20 % between runs of the same code, the time outside them much less), peak RSS with every
model loaded (``peak_rss_mb``: the highest while the pipeline works on a frame, the frame
already in memory; ``process_peak_rss_mb``: the bench process's own, its JPEG decoding
and model loading included), and the identity check (BlazeFace + encoder on the crops) next to
face_recognition's default path (HOG locate + encode) on the same frames.

A temporary enrolment (one photo of the set) makes the identity check run; nothing
is written outside a temporary directory. The process sets up its memory as ``deskwatch run``
does (``vision.memory.lean_process``: one glibc heap for all its threads, so the frames a
burst's thread allocates go back to the kernel after the scan; no transparent huge pages). The daemon itself, over many scans:
``tools/deskwatch_dev/daemonmem.py``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from deskwatch.domain import Frame, utcnow
from deskwatch_contract import exitcodes

NAME = "bench"
HELP = "benchmark the scan pipeline on real photos: per-stage p50/p95, overhead ratio, peak RSS, identity vs HOG"

REPO_PHOTOS = Path(__file__).resolve().parents[3] / "tests" / "data" / "photos"
SUFFIXES = {".jpg", ".jpeg", ".png"}
REPEATS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--photos", metavar="DIR", help=f"directory of photos (default {REPO_PHOTOS})")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--warmup", type=int, default=3, help="frames run before timing (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the photos (default 1)")
    parser.add_argument("--identity-frames", type=int, default=6, help="frames for the HOG comparison (default 6)")
    parser.add_argument("--runtime", choices=("ai-edge-litert", "tflite-runtime"), help="force a TFLite runtime")
    parser.add_argument("--precision", choices=("int8", "float"), help="object detector build (default: config)")
    parser.add_argument("--no-hog", action="store_true", help="skip the face_recognition HOG comparison")
    parser.add_argument(
        "--no-bursts",
        action="store_true",
        help="skip the whole-scan timing (each photo as a burst of camera.burst_frames noisy frames)",
    )
    parser.add_argument(
        "--no-faceid",
        action="store_true",
        help="skip the identity backends' comparison (speed, genuine/impostor distances, FAR/FRR) and liveness",
    )


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    return float(np.percentile(np.asarray(values), q))


def fit_frame(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The photo fitted into a width x height frame (what a camera would deliver),
    the margins filled with the photo's mean colour (black bars would make small
    photos look dark to the light check)."""
    from deskwatch.vision.imageops import resize

    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    out = np.empty((height, width, 3), np.uint8)
    out[:] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
    x0, y0 = (width - nw) // 2, (height - nh) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = resize(np.ascontiguousarray(image), nw, nh)
    return out


def _bench_config(args: argparse.Namespace, state_dir: str) -> Any:
    """The device's config (if readable) with a temporary state dir and the full profile."""
    from deskwatch.config import ConfigError, load_config_text

    text = ""
    if os.path.exists(args.config):
        text = Path(args.config).read_text(encoding="utf-8")
    import yaml

    try:
        doc = (yaml.safe_load(text) or {}) if text else {}
    except yaml.YAMLError:
        doc = {}
    doc.setdefault("device", {"id": "bench", "site": "bench", "worker_id": "bench-worker"})
    doc["state_dir"] = state_dir
    doc.setdefault("mqtt", {}).setdefault("host", "localhost")
    doc.setdefault("policy", {})["profile"] = "full"
    if args.precision:
        doc.setdefault("vision", {})["object_precision"] = args.precision
    try:
        return load_config_text(yaml.safe_dump(doc), args.config if text else "<bench>")
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None


def _photo_paths(directory: Path) -> list[Path]:
    return [p for p in sorted(directory.iterdir()) if p.suffix.lower() in SUFFIXES]


def _load_frame(path: Path, width: int, height: int) -> np.ndarray:
    """One photo as a camera frame (loaded per scan, outside the timing and before the
    peak RSS is taken afresh, so that the peak is the pipeline's and not the photo set's
    or the JPEG decoder's)."""
    from PIL import Image

    with Image.open(path) as im:
        return fit_frame(np.asarray(im.convert("RGB")), width, height)


def _enrol_one(cfg: Any, vision: Any, paths: list[Path]) -> str | None:
    """Enrol the first photo showing exactly one face, so the identity check runs."""
    from deskwatch.vision.identity import save_templates
    from deskwatch.vision.pipeline import build_embedder

    embedder = build_embedder(cfg.vision, vision.store)
    for path in paths:
        name, frame = path.name, _load_frame(path, cfg.camera.width, cfg.camera.height)
        faces = vision.faces.detect(frame)
        if len(faces) == 1 and faces[0].box.height * frame.shape[0] >= 80:
            descriptor = embedder.embed(frame, faces[0])
            if descriptor is None:
                continue
            save_templates(
                cfg.state_dir,
                cfg.device.worker_id,
                descriptor[None],
                backend=embedder.backend,
                model_sha256=embedder.model_sha256,
                source="bench",
            )
            vision.refresh_identity()
            return name
    return None


def faceid_figures(cfg: Any, vision: Any, photos: Path) -> dict[str, Any]:
    """Both identity backends on the same labelled faces, and liveness on them (issue 13)."""
    from deskwatch.technician.faceid_bench import identity_figures
    from deskwatch.vision.identity import DlibEmbedder, FaceEmbedder, IdentityUnavailable
    from deskwatch.vision.liveness import LivenessChecker
    from deskwatch.vision.pipeline import build_embedder

    tflite_cfg = dataclasses.replace(cfg.vision, identity_backend="tflite")
    embedders: dict[str, FaceEmbedder] = {"tflite": build_embedder(tflite_cfg, vision.store)}
    try:
        embedders["face_recognition"] = DlibEmbedder()
    except IdentityUnavailable as exc:
        print(f"deskwatch bench: face_recognition backend left out: {exc}", file=sys.stderr)
    return identity_figures(
        photos,
        vision.faces.detect,
        embedders,
        LivenessChecker(cfg.vision.liveness),
        min_face_px=cfg.vision.identity_min_face_px,
        tolerance=cfg.vision.identity_tolerance,
        unknown_distance=cfg.vision.unknown_distance,
    )


def run(args: argparse.Namespace) -> int:
    from deskwatch.vision.memory import lean_process

    lean_process()  # as ``deskwatch run`` does, before any thread starts
    photos = Path(args.photos) if args.photos else REPO_PHOTOS
    if not photos.is_dir():
        print(f"deskwatch bench: no photo directory {photos}; pass --photos DIR", file=sys.stderr)
        return exitcodes.USAGE
    with tempfile.TemporaryDirectory(prefix="deskwatch-bench-") as state_dir:
        result = bench(args, photos, state_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


def bench(args: argparse.Namespace, photos: Path, state_dir: str) -> dict[str, Any]:
    from deskwatch.app import build_evidence, build_evidence_preparer, build_policy, build_vision, tool_models_dir
    from deskwatch.policy.engine import PolicyContext
    from deskwatch.vision.runtime import ModelError, load_runtime

    cfg = _bench_config(args, state_dir)
    directory, source, note = tool_models_dir(cfg, "bench")
    if note:
        print(f"deskwatch bench: {note}", file=sys.stderr)
    cfg = dataclasses.replace(cfg, vision=dataclasses.replace(cfg.vision, models_dir=str(directory)))
    paths = _photo_paths(photos)
    width, height = cfg.camera.width, cfg.camera.height
    if not paths:
        print(f"deskwatch bench: no photos in {photos}", file=sys.stderr)
        raise SystemExit(exitcodes.USAGE)
    try:
        vision = build_vision(cfg, runtime=args.runtime)
    except ModelError as exc:
        print(f"deskwatch bench: {exc}", file=sys.stderr)
        raise SystemExit(exitcodes.UNAVAILABLE) from None
    enrolled = _enrol_one(cfg, vision, paths)
    policy = build_policy(cfg)
    make_evidence = build_evidence(cfg)

    def scan(frame: Frame) -> tuple[dict[str, float], float, float]:
        t0 = time.perf_counter()
        analysis = vision.analyze(frame)
        t1 = time.perf_counter()
        outcome = policy.evaluate([analysis], PolicyContext(now=utcnow(), trigger="cli", confirming=True))
        t2 = time.perf_counter()
        for finding in outcome.findings:
            make_evidence(frame, finding, analysis, outcome.people.get(analysis.frame_index))
        t3 = time.perf_counter()
        stages = dict(analysis.timings_ms)
        stages["policy"] = (t2 - t1) * 1000
        stages["evidence"] = (t3 - t2) * 1000
        return stages, (t3 - t0) * 1000, vision.last_model_ms

    for path in paths[: max(0, args.warmup)]:
        scan(Frame(_load_frame(path, width, height), utcnow(), 0))
    per_stage: dict[str, list[float]] = {}
    e2e: list[float] = []
    model: list[float] = []
    looks: list[Any] = []  # the phone stage's view of each timed frame (issue 12)
    for _ in range(max(1, args.rounds)):
        for path in paths:
            stages, total, inside = scan(Frame(_load_frame(path, width, height), utcnow(), 0))
            for k, v in stages.items():
                per_stage.setdefault(k, []).append(v)
            e2e.append(total)
            model.append(inside)
            looks.append(getattr(vision, "last_look", None))
    # ru_maxrss before any reset: the bench process's own peak (models, enrolment, JPEG decoding)
    process_peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_rss_mb = pipeline_peak_rss(scan, paths, width, height) or process_peak_rss_mb
    rt = load_runtime(args.runtime)
    result: dict[str, Any] = {
        "runtime": f"{rt.name} {rt.version}",
        "threads": cfg.vision.threads,
        "object_precision": vision.precision,
        "frames": len(e2e),
        "frame_size": [cfg.camera.width, cfg.camera.height],
        "photos": str(photos),
        "identity_enrolled_from": enrolled,
        "stages_ms": {
            k: {"p50": round(percentile(v, 50), 2), "p95": round(percentile(v, 95), 2), "n": len(v)}
            for k, v in per_stage.items()
        },
        "scan_ms": {
            "p50": round(percentile(e2e, 50), 2),
            "p95": round(percentile(e2e, 95), 2),
            "mean": round(statistics.fmean(e2e), 2),
        },
        "inside_models_ms": {
            "p50": round(percentile(model, 50), 2),
            "p95": round(percentile(model, 95), 2),
            "mean": round(statistics.fmean(model), 2),
        },
        "overhead_ratio": round(sum(e2e) / max(sum(model), 1e-9), 3),
        # the same work in milliseconds a frame: the ratio moves with the machine's speed (a VM
        # whose models run 20 % slower shows a lower ratio for the same code), this does not
        "outside_models_ms": {
            "p50": round(percentile([t - m for t, m in zip(e2e, model, strict=True)], 50), 2),
            "mean": round(statistics.fmean(e2e) - statistics.fmean(model), 2),
        },
        "peak_rss_mb": round(peak_rss_mb, 1),
        "process_peak_rss_mb": round(process_peak_rss_mb, 1),
        "models": vision.model_hashes(),
        "models_dir": str(directory),
        "models_source": source,
    }
    result["phone_stage"] = phone_stage_summary(per_stage.get("phones", []), looks, len(e2e))
    if not args.no_bursts:
        result["bursts"] = burst_figures(vision, policy, make_evidence, paths, cfg.camera, build_evidence_preparer(cfg))
    if not args.no_hog:
        result["identity"] = identity_vs_hog(vision, paths, width, height, args.identity_frames)
    if not args.no_faceid:
        result["identity_backends"] = faceid_figures(cfg, vision, photos)
    vision.close()
    result["targets"] = {
        "overhead_ratio<=1.25": result["overhead_ratio"] <= 1.25,
        "identity_speedup>=3": bool(result.get("identity", {}).get("speedup", 0) >= 3),
        "identity_per_face_speedup>=10": bool(result.get("identity_backends", {}).get("speedup_p50", 0) >= 10),
        "peak_rss_mb<=200": result["peak_rss_mb"] <= 200,
        # the same target for a whole scan, its burst's frames held (None: --no-bursts)
        "whole_scan_peak_rss_mb<=200": (
            None if "bursts" not in result else (result["bursts"]["peak_rss_mb"] or float("inf")) <= 200
        ),
        "live_faces_rejected==0": result.get("identity_backends", {}).get("liveness", {}).get("live_faces_rejected")
        == 0,
    }
    return result


def pipeline_peak_rss(scan: Any, paths: list[Path], width: int, height: int) -> float | None:
    """The highest RSS while the pipeline works on one frame, every model loaded: a pass of
    its own after the timed one (the heap is trimmed before each frame, as the scanner
    leaves it after every scan, which would tax the timed frames with page faults), the peak
    taken afresh once the frame is in memory, so that the bench decoding a JPEG (~15 MB for
    a 1280x853 photo, what a camera never asks of the daemon) is not counted. None off Linux."""
    from deskwatch.vision.memory import trim_heap

    peaks = []
    for path in paths:
        frame = Frame(_load_frame(path, width, height), utcnow(), 0)
        trim_heap()
        if not _reset_peak_rss():
            return None
        scan(frame)
        del frame
        peaks.append(_peak_rss_mb() or 0.0)
    return max(peaks, default=None)


def camera_burst(image: np.ndarray, frames: int, seed: int, noise: float = 2.0) -> list[np.ndarray]:
    """A still scene as a camera's burst: ``frames`` copies, each with its own sensor noise
    (Gaussian, ``noise`` grey levels; the same seed gives the same burst)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):  # float32, in place: one 11 MB scratch array at 1280x720, not three of 22 MB
        noisy = rng.standard_normal(image.shape, dtype=np.float32)
        noisy *= noise
        noisy += image
        np.clip(noisy, 0, 255, out=noisy)
        out.append(noisy.astype(np.uint8))
    return out


def _reset_peak_rss() -> bool:
    """Start VmHWM afresh (Linux: ``/proc/self/clear_refs``), so a later reading is the peak
    of what follows; False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mb() -> float | None:
    """VmHWM of this process in MB (None off Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PreparedCamera:
    """A camera whose frames were made before the scan and saved as ``.npy`` files: each
    capture reads the next one into a fresh array, as a camera delivers one, so that a
    scan's peak RSS counts the frames the scan holds, not the bench's burst in waiting."""

    name = "bench"

    def __init__(self, files: list[Path]) -> None:
        self.files, self.captures = files, 0

    def open(self) -> None:
        self.captures = 0

    def capture(self) -> np.ndarray:
        image: np.ndarray = np.load(self.files[self.captures % len(self.files)])
        self.captures += 1
        return image

    def close(self) -> None:
        pass


def burst_figures(
    vision: Any, policy: Any, make_evidence: Any, paths: list[Path], camera: Any, prepare: Any = None
) -> dict[str, Any]:
    """Whole scans as the daemon runs them: each photo as a burst of ``camera.burst_frames``
    noisy frames (a still scene) taken over ``camera.burst_seconds`` in real time, each frame
    analysed as it comes (the phone stage only while phone_use or eating can still persist)
    and let go, kept as its evidence picture (``prepare``) while it may be a finding's
    evidence frame, then the policy and the evidence
    of its findings; after each scan the heap is trimmed as the scanner does (its cost, and the
    pages the next scan faults in again, are in the figures: ``trim_heap_ms``).
    ``scan_ms``: the scan's own work (analysis, policy, evidence), not the burst's waits.
    ``peak_rss_mb``: the highest RSS while a scan runs, from the camera opening to the last
    thumbnail (the noisy frames are made and saved before, so that the bench's own arrays do
    not count; None off Linux).
    ``stage_ms_per_scan``: where a whole scan's time goes, each stage summed over the scan's
    frames (p50 over the scans, and the mean share of the scan's vision time): a stage that is
    cheap per frame but runs on every frame, or dear but skipped on most, shows as it costs."""
    from deskwatch.camera import BurstInFlight
    from deskwatch.policy.engine import PolicyContext
    from deskwatch.scanner import analyze_frames
    from deskwatch.schedule import SystemClock
    from deskwatch.vision.memory import trim_heap

    scans: list[float] = []
    trims: list[float] = []
    looked: list[int] = []
    analysed: list[int] = []  # frames analysed: a burst settled before its last frames ends there
    camera_open: list[float] = []  # seconds from the camera opened to closed (the burst's pace, real time)
    peaks: list[float] = []
    per_scan: list[dict[str, float]] = []  # each scan's stages, summed over its frames
    with tempfile.TemporaryDirectory(prefix="deskwatch-bench-bursts-") as tmp:
        for seed, path in enumerate(paths):
            files = []
            for i, image in enumerate(
                camera_burst(_load_frame(path, camera.width, camera.height), camera.burst_frames, seed)
            ):
                files.append(Path(tmp) / f"{i}.npy")
                np.save(files[-1], image)
            del image
            trim_heap()  # the bench's own scratch arrays, not the scan's
            measured = _reset_peak_rss()
            burst = BurstInFlight(PreparedCamera(files), camera.burst_frames, camera.burst_seconds, SystemClock())
            with burst:
                scanned = analyze_frames(vision, policy, burst, camera.burst_frames, prepare)
            if burst.error is not None:
                raise burst.error
            t0 = time.perf_counter()
            analyses, frames = scanned.analyses, scanned.frames
            context = PolicyContext(now=utcnow(), trigger="cli", confirming=True, unseen_frames=scanned.unseen)
            outcome = policy.evaluate(analyses, context)
            for finding in outcome.findings:
                i = max(0, finding.frame_index)
                make_evidence(frames[i], finding, analyses[i], outcome.people.get(analyses[i].frame_index))
            t1 = time.perf_counter()
            if measured and (peak := _peak_rss_mb()) is not None:
                peaks.append(peak)
            scans.append(scanned.vision_ms + scanned.keep_ms + (t1 - t0) * 1000)
            del scanned, frames
            trim_heap()
            trims.append((time.perf_counter() - t1) * 1000)
            looked.append(sum(1 for a in analyses if "phones" in a.timings_ms))
            analysed.append(len(analyses))
            camera_open.append(burst.seconds)
            summed: dict[str, float] = {}
            for a in analyses:
                for stage, ms in a.timings_ms.items():
                    summed[stage] = summed.get(stage, 0.0) + ms
            per_scan.append(summed)
    return {
        "scans": len(scans),
        "frames_per_scan": camera.burst_frames,
        "scan_ms": {"p50": round(percentile(scans, 50), 2), "p95": round(percentile(scans, 95), 2)},
        "trim_heap_ms": {"p50": round(percentile(trims, 50), 2), "p95": round(percentile(trims, 95), 2)},
        "peak_rss_mb": round(max(peaks), 1) if peaks else None,
        "frames_analysed_per_scan": round(statistics.fmean(analysed), 2) if analysed else 0.0,
        "camera_open_s": {"p50": round(percentile(camera_open, 50), 2), "mean": round(statistics.fmean(camera_open), 2)}
        if camera_open
        else None,
        "phone_stage_frames_per_scan": round(statistics.fmean(looked), 2) if looked else 0.0,
        "stage_ms_per_scan": _stage_shares(per_scan),
    }


def _stage_shares(per_scan: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each stage's time per scan (p50 over the scans; a scan that skipped it counts 0) and
    its share of the vision stage's time over all scans (``total``, which is not a share of itself)."""
    stages = {stage for scan in per_scan for stage in scan}
    columns = {stage: [scan.get(stage, 0.0) for scan in per_scan] for stage in stages}
    whole = sum(columns.get("total", [])) or sum(sum(c) for c in columns.values())
    return {
        stage: {"p50": round(percentile(ms, 50), 2)}
        | ({"share": round(sum(ms) / whole, 3)} if stage != "total" and whole > 0 else {})
        for stage, ms in sorted(columns.items(), key=lambda kv: -sum(kv[1]))
    }


def phone_stage_summary(ms: list[float], looks: list[Any], frames: int) -> dict[str, Any]:
    """The time the phone stage (pose, hand/head crops, NanoDet + CenterNet) adds per
    frame, and how much it looked: crops per frame, CenterNet runs per frame, the share
    of frames where NanoDet had a candidate and CenterNet was asked."""
    seen = [look for look in looks if look is not None]
    asked = [look.centernet_runs for look in seen]
    return {
        "ms": {"p50": round(percentile(ms, 50), 2), "p95": round(percentile(ms, 95), 2), "n": len(ms)},
        "frames": frames,
        "crops_per_frame": round(statistics.fmean([len(look.crops) for look in seen]), 2) if seen else 0.0,
        "centernet_runs_per_frame": round(statistics.fmean(asked), 2) if asked else 0.0,
        "frames_with_centernet": sum(1 for n in asked if n),
    }


def identity_vs_hog(vision: Any, paths: list[Path], width: int, height: int, limit: int) -> dict[str, Any]:
    """Per frame, locate and identity-check the faces: BlazeFace + the encoder on the
    crops (the daemon's path, with its size/count limits) vs face_recognition's
    default path (HOG locate with one upsample + encode every face found)."""
    checker = vision._identity
    if checker is None:
        return {"skipped": "identity check not enabled (no face in the photos to enrol?)"}
    with_faces = []
    for path in paths:
        frame = _load_frame(path, width, height)
        if vision.faces.detect(frame):
            with_faces.append(frame)
        if len(with_faces) >= max(1, limit):
            break
    try:
        import face_recognition
    except ImportError:
        return {"frames": len(with_faces), "hog": "face_recognition is not installed"}
    # Interleaved, median of REPEATS per frame: the two paths see the same machine load.
    ours, ours_encode, hog = [], [], []
    faces_ours = faces_hog = 0
    for frame in with_faces:
        o, e, g = [], [], []
        for _ in range(REPEATS):
            t0 = time.perf_counter()
            faces = checker.check(frame, vision.faces.detect(frame))
            o.append((time.perf_counter() - t0) * 1000)
            e.append(checker.last_ms)
            t0 = time.perf_counter()
            locations = face_recognition.face_locations(frame)  # the default: HOG, one upsample
            face_recognition.face_encodings(frame, known_face_locations=locations)
            g.append((time.perf_counter() - t0) * 1000)
        ours.append(statistics.median(o))
        ours_encode.append(statistics.median(e))
        hog.append(statistics.median(g))
        faces_ours += sum(f.identity is not None for f in faces)
        faces_hog += len(locations)
    ours_mean, hog_mean = statistics.fmean(ours), statistics.fmean(hog)
    return {
        "frames": len(with_faces),
        "frame_size": [width, height],
        "ours_ms_mean": round(ours_mean, 1),
        "ours_encode_only_ms_mean": round(statistics.fmean(ours_encode), 1),
        "ours_faces_encoded": faces_ours,
        "hog_ms_mean": round(hog_mean, 1),
        "hog_faces": faces_hog,
        "speedup": round(hog_mean / max(ours_mean, 1e-9), 2),
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"{r['frames']} frames {r['frame_size'][0]}x{r['frame_size'][1]} from {r['photos']}")
    print(f"runtime {r['runtime']}, {r['threads']} threads, object detector {r['object_precision']}")
    print(f"models {r['models_dir']} ({r['models_source']})")
    for k, v in r["stages_ms"].items():
        print(f"  {k:<10} p50 {v['p50']:8.1f} ms   p95 {v['p95']:8.1f} ms")
    print(f"  scan       p50 {r['scan_ms']['p50']:8.1f} ms   p95 {r['scan_ms']['p95']:8.1f} ms")
    print(f"  in models  p50 {r['inside_models_ms']['p50']:8.1f} ms   p95 {r['inside_models_ms']['p95']:8.1f} ms")
    print(
        f"overhead_ratio {r['overhead_ratio']} (target <= 1.25; outside the models "
        f"{r['outside_models_ms']['mean']:.1f} ms a frame on average), peak RSS {r['peak_rss_mb']} MB (target <= 200, "
        f"issue 13; the bench process itself, decoding its photos: {r['process_peak_rss_mb']} MB)"
    )
    ps = r.get("phone_stage")
    if ps and ps["ms"]["n"]:
        print(
            f"phone stage: p50 {ps['ms']['p50']:.1f} ms, p95 {ps['ms']['p95']:.1f} ms per frame; "
            f"{ps['crops_per_frame']} crops and {ps['centernet_runs_per_frame']} CenterNet runs per frame, "
            f"CenterNet asked on {ps['frames_with_centernet']} of {ps['frames']} frames"
        )
    b = r.get("bursts")
    if b:
        print(
            f"whole scans ({b['scans']} bursts of {b['frames_per_scan']} frames): p50 {b['scan_ms']['p50']:.1f} ms, "
            f"p95 {b['scan_ms']['p95']:.1f} ms; {b['frames_analysed_per_scan']} frames analysed a scan "
            f"(camera open {b['camera_open_s']['mean']} s on average), "
            f"the phone stage on {b['phone_stage_frames_per_scan']}; "
            f"peak RSS {b['peak_rss_mb']} MB (one full frame at a time)"
        )
        shares = ", ".join(
            f"{stage} {v['p50']:.1f} ms ({v['share']:.0%})"
            for stage, v in b["stage_ms_per_scan"].items()
            if "share" in v
        )
        print(f"  a scan's vision time by stage (p50 per scan, share): {shares}")
    ident = r.get("identity")
    if ident and "speedup" in ident:
        print(
            f"identity: BlazeFace + encoder {ident['ours_ms_mean']} ms vs HOG + encode {ident['hog_ms_mean']} ms "
            f"per frame -> {ident['speedup']}x (target >= 3)"
        )
    backends = r.get("identity_backends")
    if backends:
        for name, b in backends["backends"].items():
            t, s = b["per_face"], b["separation"]
            at = s["at_tolerance"][f"{backends['tolerance']:g}"]
            rates = " ".join(
                f"{k.upper()} {at[k]:.2%}" if at[k] is not None else f"{k.upper()} -" for k in ("far", "frr")
            )
            print(
                f"identity {name:<16} per face p50 {t.get('p50_ms', 0):7.1f} ms p95 {t.get('p95_ms', 0):7.1f} ms; "
                f"genuine max {max(s['genuine'], default=0):.3f}, impostor min {s['impostor_min']}; "
                f"at {backends['tolerance']:g}: {rates}"
            )
            band = s.get("undecided_band")
            if band:
                print(
                    f"identity {name:<16} beyond {band['to']:g} (unknown): {band['genuine_called_unknown']} of "
                    f"{s['genuine_pairs']} genuine pairs; between {band['from']:g} and {band['to']:g} (not judged): "
                    f"{band['genuine_not_judged']} genuine, {band['impostors_not_judged']} of {s['impostor_pairs']} impostor pairs"
                )
        if "speedup_p50" in backends:
            print(f"identity per face: tflite {backends['speedup_p50']}x faster than face_recognition (target >= 10)")
        live = backends.get("liveness")
        if live:
            print(f"liveness: {live['live_faces_rejected']} of {live['live_faces_checked']} real faces rejected")
