"""``deskwatch scan --image PATH``: run the vision and the policy on one photo.

For technicians and for checking a configuration: what the detectors see, what the
policy would report. Nothing is published. Exit 0 when the photo is clear, 1 when
the policy found something, 2 for an unreadable image.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deskwatch.commands.common import load_config_or_exit
from deskwatch.domain import Frame, FrameAnalysis, utcnow
from deskwatch_contract import exitcodes

NAME = "scan"
HELP = "run the detectors and the policy on one photo (nothing is published)"

COLOURS = {"person": (230, 40, 40), "cell phone": (255, 200, 0), "face": (0, 200, 255), "crop": (220, 0, 220)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image", required=True, metavar="PATH", help="photo to scan (JPEG/PNG)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--annotate",
        metavar="OUT.jpg",
        help="also write the photo with the boxes drawn on it, and the squares the phone stage looked at",
    )
    parser.add_argument("--runtime", choices=("ai-edge-litert", "tflite-runtime"), help="force a TFLite runtime")


def load_image(path: str) -> np.ndarray | None:
    """RGB uint8 HxWx3, or None after a clear message on stderr."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except FileNotFoundError:
        print(f"deskwatch: image not found: {path}", file=sys.stderr)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        print(f"deskwatch: cannot read {path} as an image ({exc})", file=sys.stderr)
    return None


def run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    image = load_image(args.image)
    if image is None:
        return exitcodes.USAGE
    from deskwatch.app import build_vision, tool_models_dir
    from deskwatch.vision.runtime import ModelError

    directory, source, note = tool_models_dir(cfg, "scan")
    if note:
        print(f"deskwatch scan: {note}", file=sys.stderr)
    try:
        vision = build_vision(cfg, runtime=args.runtime, models_dir=directory)
    except ModelError as exc:
        print(f"deskwatch scan: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    try:
        frame = Frame(image=image, captured_at=utcnow(), index=0)
        t0 = time.perf_counter()
        analysis = vision.analyze(frame)
        result = describe(analysis, image)
        result.update(evaluate_policy(cfg, analysis))
        result["timings_ms"]["scan_total"] = round((time.perf_counter() - t0) * 1000, 1)
        result["identity_checked"] = vision.identity_enabled
        result["models"] = vision.model_hashes()
        result["models_dir"], result["models_source"] = str(directory), source
        crops = looked_at(vision, image)
        result["phone_stage"] = crops
    finally:
        vision.close()
    result["image"] = {"path": args.image, "width": int(image.shape[1]), "height": int(image.shape[0])}
    if args.annotate:
        annotate(image, analysis, args.annotate, crops["crops"])
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_summary(result)
    return exitcodes.FAIL if result.get("findings") else 0


def looked_at(vision: Any, image: np.ndarray) -> dict[str, Any]:
    """What the phone stage looked at in this photo: the hand and head squares (boxes
    normalised to the photo), the poses behind them, and how often CenterNet was asked."""
    look = getattr(vision, "last_look", None)
    if look is None:
        return {"crops": [], "poses": 0, "centernet_runs": 0}
    h, w = image.shape[:2]
    return {
        "crops": [{"kind": c.kind, "person": c.person, "box": c.box(w, h).as_list()} for c in look.crops],
        "poses": len(look.poses),
        "centernet_runs": look.centernet_runs,
    }


def describe(analysis: FrameAnalysis, image: np.ndarray) -> dict[str, Any]:
    light = analysis.light
    return {
        "persons": len(analysis.labelled("person")),
        "faces": len(analysis.faces),
        "detections": [d.to_json() for d in analysis.detections],
        # framed: a picture on the wall, not counted beside the worker (the event's JSON leaves it out)
        "face_detections": [{**f.to_json(), **({"framed": True} if f.framed else {})} for f in analysis.faces],
        "light": {
            "mean_luma": light.mean_luma,
            "contrast": light.contrast,
            "detail": light.detail,
            "low_light": light.low_light,
            "obstructed": light.obstructed,
        },
        "timings_ms": {k: round(v, 1) for k, v in analysis.timings_ms.items()},
        "findings": [],
    }


def evaluate_policy(cfg: Any, analysis: FrameAnalysis) -> dict[str, Any]:
    """The policy's verdict on this one frame."""
    from deskwatch.policy.engine import Policy, PolicyContext

    t0 = time.perf_counter()
    # One photo cannot be followed by a confirming burst: evaluate it as confirmed.
    outcome = Policy(cfg.policy).evaluate([analysis], PolicyContext(now=utcnow(), trigger="cli", confirming=True))
    ms = (time.perf_counter() - t0) * 1000
    return {
        "persons": outcome.persons,
        "bystanders": outcome.bystanders,
        "findings": [
            {"type": f.type, "confidence": round(f.confidence, 3), "detail": f.detail} for f in outcome.findings
        ],
        "checks": [{"rule": c.rule, "outcome": c.outcome, "reason": c.reason} for c in outcome.checks],
        "policy_timing_ms": round(ms, 2),
    }


def print_summary(result: dict[str, Any]) -> None:
    light = result["light"]
    print(
        f"{result['image']['path']}: {result['persons']} person(s), {result['faces']} face(s); "
        f"light {light['mean_luma']:.0f}{' LOW' if light['low_light'] else ''}"
        f"{' OBSTRUCTED' if light['obstructed'] else ''}"
    )
    for d in result["detections"]:
        what = f" ({d['behaviour']})" if "behaviour" in d else ""
        print(f"  {d['label']:<14} {d['score']:.2f}  box {d['box']}{what}")
    for f in result["face_detections"]:
        who = f" identity={f['identity']}" if "identity" in f else ""
        print(f"  {'face':<14} {f['score']:.2f}  box {f['box']} facing {f['facing']:.2f}{who}")
    for f in result["findings"]:
        print(f"  FINDING {f['type']} ({f['confidence']:.2f}) {f['detail']}")
    if not result["findings"]:
        print("  no findings")
    stage = result.get("phone_stage") or {}
    if stage.get("crops"):
        kinds = [c["kind"] for c in stage["crops"]]
        print(
            f"  phone stage: {len(kinds)} crops ({kinds.count('hand')} hands, {kinds.count('head')} heads) "
            f"of {stage['poses']} pose(s), CenterNet asked {stage['centernet_runs']} time(s)"
        )
    print("  timings (ms): " + ", ".join(f"{k} {v}" for k, v in result["timings_ms"].items()))
    print(f"  models: {result['models_dir']} ({result['models_source']})")


def annotate(image: np.ndarray, analysis: FrameAnalysis, out: str, crops: Sequence[dict[str, Any]] = ()) -> None:
    """Write the photo with labelled boxes and the squares the phone stage looked at
    (for a person to look at; stays local)."""
    from PIL import Image, ImageDraw

    im = Image.fromarray(image)
    draw = ImageDraw.Draw(im)
    w, h = im.size
    width = max(2, w // 400)
    for c in crops:
        x0, y0, x1, y1 = c["box"]
        draw.rectangle((x0 * w, y0 * h, x1 * w, y1 * h), outline=COLOURS["crop"], width=max(2, width // 2))
        draw.text((x0 * w + 3, y1 * h - 12), f"looked at: {c['kind']} {c['person']}", fill=COLOURS["crop"])
    for d in analysis.detections:
        colour = COLOURS.get(d.label, (60, 200, 60))
        box = (d.box.x0 * w, d.box.y0 * h, d.box.x1 * w, d.box.y1 * h)
        draw.rectangle(box, outline=colour, width=width)
        what = f"{d.label} {d.behaviour}" if d.behaviour else d.label
        draw.text((box[0] + 3, box[1] + 2), f"{what} {d.score:.2f}", fill=colour)
    for f in analysis.faces:
        box = (f.box.x0 * w, f.box.y0 * h, f.box.x1 * w, f.box.y1 * h)
        draw.rectangle(box, outline=COLOURS["face"], width=width)
        label = f"face {f.score:.2f} facing {f.facing:.2f}" + (f" {f.identity}" if f.identity else "")
        draw.text((box[0] + 3, box[3] + 2), label, fill=COLOURS["face"])
        for x, y in f.keypoints:
            draw.ellipse((x * w - width, y * h - width, x * w + width, y * h + width), fill=COLOURS["face"])
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        im.save(out, quality=90)
    except (OSError, ValueError) as exc:
        print(f"deskwatch scan: cannot write {out} ({exc})", file=sys.stderr)
        raise SystemExit(exitcodes.USAGE) from None
