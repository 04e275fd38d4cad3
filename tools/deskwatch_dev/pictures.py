"""Pictures of people on the wall behind the worker: ``python -m deskwatch_dev.pictures [DIR]``
(default: the repo's tests/data/photos).

A home desk often has a poster, a framed photo or a TV behind the worker, and the face in it
looks at the camera. Nobody here can photograph one, so this tool draws them, synthetic: the
head and shoulders of each ``face_*`` photo of the repo (the largest face the shipped face
detector finds, widened to the shoulders), printed (a little less contrast, a little blur) and
hung in the upper corner of the frame away from the worker, either as a **poster** (the
picture's own edge against the wall) or as a **framed print** (a white mount and a dark frame
round it), with the face at ``--heights`` of the frame's height (default 6, 10 and 14 %).
The pictures go into every labelled photo of one person or nobody (``persons`` 0 or 1, exact),
as the file and fitted into a 1280x720 camera frame, and each view is analysed as one frame
through the shipped models and the default ``full`` profile, as ``deskwatch scan`` does.

Counted per kind of picture and face height, against the same view without the picture:

- ``extra_person`` that the picture made: the worker accused of a second person at the desk;
- ``presentation_attack`` that the picture made (hanging a photo is no trick);
- ``away_missed``: on a photo of nobody, the empty desk no longer reported (the picture taken
  for somebody present: a missed finding, not an accusation; counted to be honest about it).

It prints one line per view with a finding the picture made, then the totals as JSON. Exit
status 0 either way: it is a figure; ``tests/appliance/test_policy_photos.py`` holds the bar.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
KINDS = ("poster", "framed print")


def portraits(vision: Any, directory: Path) -> list[tuple[str, np.ndarray, float]]:
    """(file, head-and-shoulders crop, the face's share of the crop's height) of each ``face_*``
    photo in ``directory`` whose face the detector finds."""
    from deskwatch_dev.phonefigures import _load

    labels = yaml.safe_load((directory / "labels.yaml").read_text())["files"]
    out = []
    for entry in labels:
        name = str(entry["file"])
        if not name.startswith("face_"):
            continue
        image = _load(directory / name)
        faces = vision.analyze(image, look_closer=False).faces
        if not faces:
            continue
        b = max(faces, key=lambda f: f.box.area).box
        h, w = image.shape[:2]
        fx0, fy0, fx1, fy1 = b.x0 * w, b.y0 * h, b.x1 * w, b.y1 * h
        fw, fh, cx = fx1 - fx0, fy1 - fy0, (fx0 + fx1) / 2
        x0, x1 = int(max(0, cx - 1.3 * fw)), int(min(w, cx + 1.3 * fw))
        y0, y1 = int(max(0, fy0 - 0.6 * fh)), int(min(h, fy1 + 1.6 * fh))
        out.append((name, np.ascontiguousarray(image[y0:y1, x0:x1]), fh / (y1 - y0)))
    return out


def printed(crop: np.ndarray, kind: str) -> tuple[np.ndarray, float]:
    """The picture as printed and hung: (pixels, the share of its height the crop takes)."""
    import cv2

    picture = np.clip(crop.astype(np.float32) * 0.85 + 20, 0, 255).astype(np.uint8)
    picture = cv2.GaussianBlur(picture, (0, 0), 0.8)
    if kind == "poster":
        return picture, 1.0
    mount = max(3, int(0.08 * picture.shape[1]))
    inner = picture.shape[0]
    picture = cv2.copyMakeBorder(picture, mount, mount, mount, mount, cv2.BORDER_CONSTANT, value=(235, 235, 230))
    picture = cv2.copyMakeBorder(picture, 3, 3, 3, 3, cv2.BORDER_CONSTANT, value=(40, 30, 25))
    return picture, inner / picture.shape[0]


def hang(
    image: np.ndarray, picture: np.ndarray, face_share: float, face_height: float, worker_x: float
) -> np.ndarray | None:
    """``image`` with ``picture`` hung in the upper corner away from ``worker_x`` (0..1), scaled so
    that its face is ``face_height`` of the frame's height; None where it would not fit."""
    import cv2

    h, w = image.shape[:2]
    ph = int(face_height * h / face_share)
    pw = int(ph * picture.shape[1] / picture.shape[0])
    if ph >= 0.9 * h or pw >= 0.45 * w or pw < 8:
        return None
    scaled = cv2.resize(picture, (pw, ph), interpolation=cv2.INTER_AREA)
    x = int(0.04 * w) if worker_x > 0.5 else int(0.96 * w) - pw
    y = int(0.05 * h)
    out = image.copy()
    out[y : y + ph, x : x + pw] = scaled
    return out


def measure(
    directory: Path, *, heights: tuple[float, ...] = (0.06, 0.10, 0.14), verbose: bool = True
) -> dict[str, Any]:
    """Totals per kind of picture and face height (see the module's docstring)."""
    from deskwatch.app import build_policy, build_vision
    from deskwatch.domain import utcnow
    from deskwatch.policy.engine import PolicyContext
    from deskwatch_dev.phonefigures import _config, _load
    from deskwatch_dev.variants import sized

    labels = yaml.safe_load((directory / "labels.yaml").read_text())["files"]
    totals: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="deskwatch-pictures-") as state:
        cfg = _config(state)
        vision, policy = build_vision(cfg), build_policy(cfg)

        def findings(image: np.ndarray) -> tuple[Any, set[str]]:
            a = vision.analyze(image)
            out = policy.evaluate([a], PolicyContext(now=utcnow(), trigger="cli", confirming=True))
            return a, {f.type for f in out.findings}

        hung = portraits(vision, REPO / "tests" / "data" / "photos")
        for entry in labels:
            persons = int(entry.get("persons", 0))
            if not (persons == 0 or (persons == 1 and entry.get("persons_exact", True))):
                continue
            name = str(entry["file"])
            photo = _load(directory / name)
            for size in ("file", "1280x720"):
                image = sized(photo, size)
                before, found_before = findings(image)
                people = before.labelled("person")
                worker_x = max(people, key=lambda d: d.box.area).box.centre[0] if people else 0.5
                for source, crop, share in hung:
                    if source == name:
                        continue
                    for kind in KINDS:
                        picture, inner = printed(crop, kind)
                        for height in heights:
                            view = hang(image, picture, share * inner, height, worker_x)
                            if view is None:
                                continue
                            _, found = findings(view)
                            t = totals.setdefault(
                                f"{kind}, face {height:.0%}",
                                {"views": 0, "extra_person": 0, "presentation_attack": 0, "away_missed": 0},
                            )
                            t["views"] += 1
                            made = sorted((found - found_before) & {"extra_person", "presentation_attack"})
                            if persons == 0 and "away_from_desk" in found_before - found:
                                made.append("away_missed")
                            for finding in made:
                                t[finding] += 1
                            if made and verbose:
                                print(
                                    f"{name} ({size}) + {kind} of {source}, face {height:.0%}: {', '.join(made)}",
                                    flush=True,
                                )
    return totals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m deskwatch_dev.pictures", description=__doc__.splitlines()[0])
    ap.add_argument("directory", nargs="?", type=Path, default=REPO / "tests" / "data" / "photos")
    ap.add_argument("--heights", default="0.06,0.10,0.14", help="face heights, shares of the frame's height")
    ap.add_argument("--json", action="store_true", help="print the totals only")
    args = ap.parse_args(argv)
    if not (args.directory / "labels.yaml").is_file():
        print(f"error: {args.directory} has no labels.yaml: give a folder of labelled photos", file=sys.stderr)
        return 2
    try:
        heights = tuple(float(x) for x in args.heights.split(","))
    except ValueError:
        print(f"error: --heights {args.heights!r}: give shares of the frame's height, e.g. 0.06,0.10", file=sys.stderr)
        return 2
    totals = measure(args.directory, heights=heights, verbose=not args.json)
    print(json.dumps(totals, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
