"""Each photo's verdicts and the raw numbers behind them, as JSON, to compare machines:
``python -m deskwatch_dev.verdicts [DIR] > x86.json``; ``--compare A.json B.json``.

The accuracy figures were measured on x86-64; the Pi runs aarch64, where XNNPACK uses
other kernels and the detectors' scores may differ by rounding. This runs the shipped
vision stage and the policy (``deskwatch bench``'s config: the full profile, the worker
enrolled from the first photo with one large face, so that identity runs) on every photo
of a folder, as the file and fitted into a 1280x720 frame (as ``phonefigures``), and
prints per photo and view the findings of a one-frame scan and the numbers closest to
the thresholds: persons, faces (score, liveness cues, identity distance), the phone
stage's poses and its places per crop size (NanoDet's evidence, CenterNet's best score).

It imports only what the installed appliance has, so that the same file runs on a Pi or
inside the arm64 root file system (``deskwatch_dev.imageroot``):
``/opt/deskwatch/venv/bin/python verdicts.py DIR``. ``--compare`` lists the verdicts that
differ and the largest score differences. Under qemu-user, emulate the Pi's CPU: set
``QEMU_CPU=cortex-a72`` (qemu's default ``max`` CPU has dotprod, fp16 and SVE, which a Pi 4
lacks, and XNNPACK picks its kernels by them), mount ``/proc`` and ``/sys`` in the root
(without ``/sys`` cpuinfo fails and no XNNPACK delegate is created) and bind a Pi 4's
``/proc/cpuinfo`` over the host's (qemu 7.2 passes the x86 one through). Emulated, a photo
takes about a minute here where it takes half a second natively.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
VIEWS = ("file", "1280x720")  # as phonefigures: the photo itself, and as a camera frame


def _box(box: Any) -> list[float]:
    return [round(v, 4) for v in box.as_list()]


def _detection(d: Any) -> dict[str, Any]:
    out = {"label": d.label, "score": round(d.score, 6), "box": _box(d.box)}
    return out | ({"behaviour": d.behaviour} if d.behaviour else {})


def _place(place: Any, cfg: Any, phone: bool) -> dict[str, Any]:
    from deskwatch.vision.phones import phone_score

    seen, confirm = place.best_nanodet, place.best_centernet
    out: dict[str, Any] = {
        "box": _box(place.box),
        "nanodet": round(seen.score, 6) if seen else None,
        "centernet": round(confirm.score, 6) if confirm else None,
    }
    if phone:
        score = phone_score(place, cfg)
        out |= {"evidence": round(place.evidence, 6), "score": None if score is None else round(score, 6)}
    else:
        out |= {"labels": [seen.label if seen else None, confirm.label if confirm else None]}
    return out


def one_view(vision: Any, policy_of: Any, image: np.ndarray) -> dict[str, Any]:
    """One frame through the vision stage and the policy (a scan of one frame)."""
    from deskwatch.domain import utcnow
    from deskwatch.policy.engine import PolicyContext

    analysis = vision.analyze(image)
    outcome = policy_of().evaluate([analysis], PolicyContext(now=utcnow(), trigger="cli", confirming=True))
    faces = []
    for face in analysis.faces:
        cues = vision.liveness.cues(image, face) if vision.liveness is not None else None
        faces.append(
            {
                "box": _box(face.box),
                "score": round(face.score, 6),
                "facing": round(face.facing, 4),
                "live": face.live,
                "moire": cues.moire if cues else None,
                "frame_sides": cues.frame_sides if cues else None,
                "identity": face.identity,
                "distance": None if face.distance is None else round(face.distance, 6),
            }
        )
    look = vision.last_look
    phones = vision.cfg.phones
    return {
        "size": [image.shape[1], image.shape[0]],
        "findings": [
            {
                "type": f.type,
                "confidence": round(f.confidence, 6),
                "detail": f.detail,
                "behaviours": sorted({d.behaviour for d in f.detections if d.behaviour}),
            }
            for f in outcome.findings
        ],
        "checks": {c.rule: c.outcome for c in outcome.checks},
        "detections": [_detection(d) for d in analysis.detections],
        "faces": faces,
        "poses": [round(p.presence, 6) for p in look.poses] if look else [],
        "phone_stage": [
            {
                "factor": v.factor,
                "crops": len(v.crops),
                "phone_places": [_place(p, phones, True) for p in v.phone_places],
                "food_places": [_place(p, phones, False) for p in v.food_places],
                "found": [_detection(d) for d in v.found],
            }
            for v in (look.views if look else [])
        ],
    }


def measure(directory: Path, only: list[str] | None = None, enrol: bool = True) -> dict[str, Any]:
    """Every photo of ``directory`` (those matching a pattern of ``only``, when given), each view."""
    from PIL import Image

    from deskwatch.app import build_policy, build_vision
    from deskwatch.commands import bench

    paths = bench._photo_paths(directory)
    picked = [p for p in paths if not only or any(fnmatch.fnmatch(p.name, pat) for pat in only)]
    photos: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="deskwatch-verdicts-") as state:
        cfg = bench._bench_config(argparse.Namespace(config="/nonexistent", precision=None), state)
        vision = build_vision(cfg)
        runtime, precision = vision.store.runtime_name(), vision.precision
        try:
            # the whole folder chooses whom to enrol, so that a subset sees the same worker
            enrolled = bench._enrol_one(cfg, vision, paths) if enrol else None
            for path in picked:
                with Image.open(path) as im:
                    image = np.ascontiguousarray(np.asarray(im.convert("RGB")))
                frames = {"file": image, "1280x720": bench.fit_frame(image, 1280, 720)}
                # a fresh policy per view: no streak or pause carried from one photo to the next
                photos[path.name] = {view: one_view(vision, lambda: build_policy(cfg), frames[view]) for view in VIEWS}
                print(f"verdicts: {path.name} {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        finally:
            vision.close()
    return {
        "machine": platform.machine(),
        "runtime": runtime,
        "object_precision": precision,
        "enrolled": enrolled,
        "seconds": round(time.perf_counter() - t0, 1),
        "photos": photos,
    }


# -- comparing two runs ----------------------------------------------------------------------


def _numbers(view: dict[str, Any]) -> dict[str, float]:
    """The view's scores by a name that does not depend on their order: each face, person,
    pose and phone-stage place keyed by its kind and rank (places: by crop size)."""
    out: dict[str, float] = {}
    persons = sorted((d["score"] for d in view["detections"] if d["label"] == "person"), reverse=True)
    out |= {f"person[{i}]": s for i, s in enumerate(persons)}
    for i, face in enumerate(sorted(view["faces"], key=lambda f: -f["score"])):
        for key in ("score", "moire", "distance"):
            if face[key] is not None:
                out[f"face[{i}].{key}"] = face[key]
    out |= {f"pose[{i}]": s for i, s in enumerate(sorted(view["poses"], reverse=True))}
    for v in view["phone_stage"]:
        for kind, keys in (
            ("phone_places", ("evidence", "centernet", "score")),
            ("food_places", ("nanodet", "centernet")),
        ):
            places = sorted(v[kind], key=lambda p: -(p.get("evidence") or p["nanodet"] or 0.0))
            for i, place in enumerate(places[:3]):  # the strongest: the ones a verdict turns on
                for key in keys:
                    if place[key] is not None:
                        out[f"{kind[:5]}@{v['factor']}[{i}].{key}"] = place[key]
    return out


def _verdict(view: dict[str, Any]) -> list[str]:
    return sorted(f"{f['type']}({','.join(f['behaviours'])})" for f in view["findings"])


def compare(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Verdicts that differ, and the score differences (b - a) over the photos both ran."""
    differing, diffs, only_one = [], [], []
    for name in sorted(set(a["photos"]) & set(b["photos"])):
        for view in VIEWS:
            va, vb = a["photos"][name][view], b["photos"][name][view]
            if _verdict(va) != _verdict(vb):
                differing.append({"photo": name, "view": view, "a": _verdict(va), "b": _verdict(vb)})
            na, nb = _numbers(va), _numbers(vb)
            diffs += [(abs(nb[k] - na[k]), name, view, k, na[k], nb[k]) for k in na.keys() & nb.keys()]
            only_one += [(name, view, k, "a", na[k]) for k in na.keys() - nb.keys()]
            only_one += [(name, view, k, "b", nb[k]) for k in nb.keys() - na.keys()]
    diffs.sort(key=lambda d: -d[0])
    values = np.array([d[0] for d in diffs]) if diffs else np.zeros(1)
    return {
        "a": a["machine"],
        "b": b["machine"],
        "photos": len(set(a["photos"]) & set(b["photos"])),
        "enrolled": [a["enrolled"], b["enrolled"]],
        "verdicts_differing": differing,
        "scores_compared": len(diffs),
        "identical": int((values == 0).sum()) if diffs else 0,
        "abs_diff": {q: round(float(np.percentile(values, p)), 5) for q, p in (("p50", 50), ("p95", 95), ("max", 100))},
        "largest": [{"photo": n, "view": v, "score": k, "a": x, "b": y} for d, n, v, k, x, y in diffs[:15] if d > 0],
        "present_in_one_only": [{"photo": n, "view": v, "score": k, "in": w, "value": x} for n, v, k, w, x in only_one],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.verdicts", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=REPO / "tests" / "data" / "photos")
    parser.add_argument("--only", action="append", metavar="GLOB", help="only the photos matching (repeatable)")
    parser.add_argument("--no-enrol", action="store_true", help="no enrolled worker: no identity check")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"), help="compare two runs")
    args = parser.parse_args(argv)
    if args.compare:
        try:
            runs = [json.loads(p.read_text()) for p in args.compare]
        except (OSError, ValueError) as exc:
            print(f"verdicts: cannot read a run to compare: {exc}", file=sys.stderr)
            return 2
        for path, run in zip(args.compare, runs, strict=True):
            if not isinstance(run, dict) or not {"machine", "enrolled", "photos"} <= run.keys():
                print(f"verdicts: {path} is not a verdicts run (its JSON output)", file=sys.stderr)
                return 2
        print(json.dumps(compare(*runs), indent=1))
        return 0
    if not args.directory.is_dir():
        print(f"verdicts: no photo directory {args.directory}", file=sys.stderr)
        return 2
    print(json.dumps(measure(args.directory, args.only, enrol=not args.no_enrol), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
