"""Whole scans timed on any deskwatch tree, so that a change can be compared with the code
before it (issue 13's "whole scan p50" target): each photo as a camera burst of 5 noisy
frames, analysed as that tree's scanner analyses a burst, then its policy and the evidence
of its findings, with the worker enrolled (identity on) and the bench's config.

    PYTHONPATH=<tree>/daemon:<tree>/contract:tools python -m deskwatch_dev.wholescans [DIR]

The tree's own ``deskwatch bench`` reports per-frame figures; a tree too old to have
``bursts`` in its bench still runs here (its scanner analysed every frame:
``[vision.analyze(f) for f in frames]``); a tree whose scanner keeps of each frame only its
evidence picture (``analyze_frames``, issue 13) is timed with that work in. Only the
scan's work is timed, not the burst's pace. The burst's frames are made here, the same for
every tree (same seed per photo). Prints one JSON object: p50/p95/mean of the scans over
``--rounds`` passes, and the findings of the first pass per photo (so that a faster tree
that finds less shows it).

``--own-worker``: the everyday case instead, the worker at the desk being the one enrolled:
only the photos showing exactly one face big enough to enrol, each scanned with that face
enrolled (the default enrols the first such photo's face for every photo, so that most
scans meet an unknown face).

``--camera``: also each photo's burst through the camera path at the camera's pace, in
real time (``camera.burst_seconds`` a scan, as ``deskwatch bench`` takes its bursts), and
how long the camera was open and how many frames were analysed (a burst settled before its
last frames ends there); a tree whose bench does not report it gives null.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
FRAMES = 5
NOISE = 2.0  # grey levels of sensor noise per frame, as deskwatch bench's camera_burst


def noisy_burst(image: np.ndarray, frames: int, seed: int) -> list[np.ndarray]:
    """A still scene as a burst: ``frames`` copies each with its own Gaussian noise (what
    ``deskwatch bench``'s ``camera_burst`` does; not called, because a tree before issue 13
    has none and the frames must be the same whichever tree is timed)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(frames):
        noisy = rng.standard_normal(image.shape, dtype=np.float32)
        noisy *= NOISE
        noisy += image
        np.clip(noisy, 0, 255, out=noisy)
        out.append(noisy.astype(np.uint8))
    return out


def whole_scans(photos: Path, rounds: int, own_worker: bool = False, camera: bool = False) -> dict[str, Any]:
    import deskwatch.app
    import deskwatch.scanner
    from deskwatch.app import build_evidence, build_policy, build_vision
    from deskwatch.commands import bench
    from deskwatch.domain import Frame, utcnow
    from deskwatch.policy.engine import PolicyContext

    # before issue 12 there was no analyze_burst: the scanner analysed every frame in full;
    # after issue 13 the scanner lets each frame go once analysed (analyze_frames)
    analyze_burst: Any = getattr(deskwatch.scanner, "analyze_burst", None)
    analyze_frames: Any = getattr(deskwatch.scanner, "analyze_frames", None)
    preparer: Any = getattr(deskwatch.app, "build_evidence_preparer", None)

    with tempfile.TemporaryDirectory(prefix="deskwatch-wholescans-") as state_dir:
        cfg = bench._bench_config(argparse.Namespace(config="/nonexistent", precision=None, runtime=None), state_dir)
        vision = build_vision(cfg)
        paths = bench._photo_paths(photos)
        if not paths:
            raise SystemExit(f"wholescans: no photos in {photos}")
        enrolled = bench._enrol_one(cfg, vision, paths)
        policy, make_evidence = build_policy(cfg), build_evidence(cfg)
        prepare = preparer(cfg) if preparer is not None else None
        times: list[float] = []
        findings: dict[str, list[str]] = {}
        camera_open: list[float] | None = [] if camera else None
        analysed: list[float] = []
        for round_ in range(max(1, rounds)):
            for seed, path in enumerate(paths):
                if own_worker and bench._enrol_one(cfg, vision, [path]) is None:
                    continue
                image = bench._load_frame(path, cfg.camera.width, cfg.camera.height)
                now = utcnow()
                frames = [Frame(im, now, i) for i, im in enumerate(noisy_burst(image, FRAMES, seed))]
                t0 = time.perf_counter()
                kept: list[Any] = frames
                if analyze_frames is not None:
                    scanned = analyze_frames(vision, policy, iter(frames), len(frames), prepare)
                    analyses, kept = scanned.analyses, scanned.frames
                elif analyze_burst is not None:
                    analyses = analyze_burst(vision, policy, frames)
                else:
                    analyses = [vision.analyze(f) for f in frames]
                outcome = policy.evaluate(analyses, PolicyContext(now=utcnow(), trigger="cli", confirming=True))
                for finding in outcome.findings:
                    i = max(0, finding.frame_index)
                    make_evidence(kept[i], finding, analyses[i], outcome.people.get(analyses[i].frame_index))
                times.append((time.perf_counter() - t0) * 1000)
                if round_ == 0:
                    findings[path.name] = sorted(f.type for f in outcome.findings)
                    if camera_open is not None:
                        paced = bench.burst_figures(vision, policy, make_evidence, [path], cfg.camera, prepare)
                        if paced.get("camera_open_s") is None:
                            camera_open = None  # a tree before the camera-open figure
                        else:
                            camera_open.append(paced["camera_open_s"]["mean"])
                            analysed.append(paced["frames_analysed_per_scan"])
        vision.close()
    return {
        "tree": str(Path(bench.__file__).resolve().parents[3]),
        "identity_backend": getattr(cfg.vision, "identity_backend", "face_recognition"),
        "identity_enrolled_from": "each photo's own face" if own_worker else enrolled,
        "frames_per_scan": FRAMES,
        "scans": len(times),
        "scan_ms": {
            "p50": round(statistics.median(times), 1),
            "p95": round(bench.percentile(times, 95), 1),
            "mean": round(statistics.fmean(times), 1),
        },
        "findings": findings,
        "camera": None
        if not camera_open
        else {
            "scans": len(camera_open),
            "open_s": {
                "p50": round(statistics.median(camera_open), 2),
                "mean": round(statistics.fmean(camera_open), 2),
            },
            "frames_analysed_mean": round(statistics.fmean(analysed), 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="wholescans", description=__doc__.split("\n\n")[0])
    parser.add_argument("photos", nargs="?", default=str(REPO / "tests" / "data" / "photos"))
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos (default 2)")
    parser.add_argument(
        "--own-worker", action="store_true", help="each one-face photo scanned with its own face enrolled"
    )
    parser.add_argument(
        "--camera", action="store_true", help="also each burst at the camera's pace: how long the camera was open"
    )
    args = parser.parse_args(argv)
    photos = Path(args.photos)
    if not photos.is_dir():
        print(f"wholescans: no photo directory {photos}", file=sys.stderr)
        return 2
    print(json.dumps(whole_scans(photos, args.rounds, args.own_worker, args.camera), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
