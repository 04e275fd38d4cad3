"""Live faces framed on all four sides: how often liveness calls a real worker a picture
(issue 13): ``python -m deskwatch_dev.framedfaces [DIR ...]`` (default: the repo's
tests/data/photos).

Liveness (:mod:`deskwatch.vision.liveness`) calls a face a picture when straight edges
frame it on four sides and its moire score passes ``frame_moire_threshold`` (1.4): a
phone's bezel or a print's edge. A live worker can have that too: a door frame behind the
head (both jambs and the lintel) and a laptop lid's top edge below the face. Sensor noise
lifts a real face's moire score above 1.4 in a few per cent of frames. No photo here shows
such a scene, so this tool draws one: SYNTHETIC. Around the largest face of each labelled
photo, fitted into a 1280x720 frame, a rectangle (dark wood or white paint, two sizes:
jambs 1.3 or 1.8 face widths from the face's centre, lintel 1.4 or 1.8 above it, lid 1.8
or 2.5 below) is drawn over everything, the body included - more straight edge than a
real door frame shows, since the worker's body hides its lower part.

Of the views where liveness does find four sides, it reports per sensor noise level
(sigma, grey levels): the single frames called a picture, and the camera bursts
(``camera.burst_frames`` noisy frames through the scan's burst analysis and the policy, as
``deskwatch_dev.phonefigures --bursts``) that report ``presentation_attack`` or
``away_from_desk`` - what the supervisor would get. Exit status 0: it is a figure, the
test holds the bar (tests/appliance/test_vision_liveness.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]
SIZES = ((1.3, 1.4, 1.8), (1.8, 1.8, 2.5))  # face widths from the face centre: jambs, lintel, lid
COLOURS = {"wood": (60, 40, 30), "paint": (235, 235, 225)}
SIGMAS = (2.0, 8.0, 16.0)
ACCUSATIONS = ("presentation_attack", "away_from_desk")


def framed(
    image: np.ndarray,
    face_box: tuple[int, int, int, int],
    size: tuple[float, float, float],
    colour: tuple[int, int, int],
) -> np.ndarray:
    """A copy of ``image`` with a door frame and a laptop lid drawn around the face (pixels)."""
    x0, y0, x1, y1 = face_box
    width = max(1, x1 - x0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side, up, down = size
    out = image.copy()
    corners = (round(cx - side * width), round(cy - up * width)), (round(cx + side * width), round(cy + down * width))
    cv2.rectangle(out, corners[0], corners[1], colour, max(3, round(0.06 * width)))
    return out


@dataclass
class Figures:
    """One noise level's counts over the four-sided views."""

    views: int = 0
    frames: int = 0
    frames_called_pictures: int = 0
    bursts: int = 0
    bursts_accusing: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCUSATIONS, 0))
    worst: list[str] = field(default_factory=list)  # views with a burst that accused


def measure(directories: list[Path], bursts: int = 5, verbose: bool = True) -> dict[str, Any]:
    """The figures per noise level, and how many views had four sides (see the module doc)."""
    from deskwatch.app import build_policy, build_vision
    from deskwatch.commands.bench import camera_burst, fit_frame
    from deskwatch.vision.liveness import LivenessChecker, face_box_px, frame_sides
    from deskwatch_dev.phonefigures import _config, _load, scan_burst

    seen: set[str] = set()
    per_sigma = {sigma: Figures() for sigma in SIGMAS}
    views = four_sided = 0
    with tempfile.TemporaryDirectory(prefix="deskwatch-framed-") as state:
        cfg = _config(state)
        vision, policy = build_vision(cfg), build_policy(cfg)
        checker = LivenessChecker(cfg.vision.liveness)
        try:
            for directory in directories:
                for entry in yaml.safe_load((directory / "labels.yaml").read_text())["files"]:
                    if entry["file"] in seen:
                        continue
                    seen.add(entry["file"])
                    frame = fit_frame(_load(directory / entry["file"]), 1280, 720)
                    h, w = frame.shape[:2]
                    faces = [f for f in vision.faces.detect(frame) if f.box.height * h >= checker.cfg.min_face_px]
                    if not faces:
                        continue
                    face = max(faces, key=lambda f: f.box.area)
                    box = face_box_px(face, w, h)
                    for size in SIZES:
                        for colour_name, colour in COLOURS.items():
                            views += 1
                            scene = framed(frame, box, size, colour)
                            if frame_sides(scene, box) < 4:
                                continue
                            four_sided += 1
                            name = f"{entry['file']} {colour_name} {size[0]}/{size[1]}/{size[2]}"
                            for sigma, fig in per_sigma.items():
                                fig.views += 1
                                accused = []
                                for seed in range(bursts):
                                    for noisy in camera_burst(scene, cfg.camera.burst_frames, seed, noise=sigma):
                                        fig.frames += 1
                                        fig.frames_called_pictures += checker.check(noisy, [face])[0].live is False
                                    fig.bursts += 1
                                    found = {
                                        f.type for f in scan_burst(vision, policy, cfg, scene, seed, sigma).findings
                                    }
                                    for kind in ACCUSATIONS:
                                        if kind in found:
                                            fig.bursts_accusing[kind] += 1
                                            accused.append(f"{kind} (seed {seed})")
                                if accused:
                                    fig.worst.append(f"{name} sigma {sigma:g}: {', '.join(accused)}")
                            if verbose:
                                print(f"four sides: {name}", flush=True)
        finally:
            vision.close()
    return {
        "photos": len(seen),
        "views": views,
        "four_sided_views": four_sided,
        "bursts_per_view": bursts,
        "per_sigma": {f"{sigma:g}": vars(fig) for sigma, fig in per_sigma.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.framedfaces", description=__doc__.split("\n\n")[0])
    parser.add_argument("directories", nargs="*", type=Path, default=[REPO / "tests" / "data" / "photos"])
    parser.add_argument("--bursts", type=int, default=5, help="camera bursts per view and noise level (default 5)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON only")
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.directories if not (d / "labels.yaml").is_file()]
    if missing:
        print(f"framedfaces: no labels.yaml in {', '.join(missing)}: pass labelled photo folders", file=sys.stderr)
        return 2
    if not 1 <= args.bursts <= 100:
        print(f"framedfaces: --bursts {args.bursts}: give a count from 1 to 100", file=sys.stderr)
        return 2
    result = measure(args.directories, args.bursts, verbose=not args.json)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"\n{result['photos']} photos, {result['views']} framed views, four sides found in {result['four_sided_views']}"
    )
    for sigma, fig in result["per_sigma"].items():
        accusing = ", ".join(f"{k} {v}" for k, v in fig["bursts_accusing"].items())
        print(
            f"  sigma {sigma:>2}: frames called a picture {fig['frames_called_pictures']}/{fig['frames']}; "
            f"bursts reporting {accusing} (of {fig['bursts']})"
        )
        for line in fig["worst"]:
            print(f"    {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
