"""The phone stage's figures per category on a labelled photo folder (issue 12):
``python -m deskwatch_dev.phonefigures [DIR]`` (default: the repo's tests/data/photos).

Each photo is analysed twice with the shipped models and default config: as the file, and
fitted into a 1280x720 frame (what the camera gives: people smaller in the whole-frame pass,
small photos blown up). ``--bursts`` adds a third view, the scan's verdict: the frame as a
camera burst of noisy frames through the burst analysis and the policy. A photo
counts as "phone in use" found when a phone is confirmed with a behaviour that the
``full`` profile counts (at the ear, in the hand). The categories come from the folder's
``labels.yaml`` (``phone``, ``phone_in_use``, ``eating``) and the file names the labels
use (``phone_desk_*``: phones lying on a desk; ``nophone_hand_*``: hard negatives).
Prints one line per photo and a summary; ``--json`` prints the summary as JSON.
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
VIEWS = ("file", "1280x720")
BURST = "1280x720 scan"  # --bursts: the scan's verdict on a burst of noisy frames


def _config(state_dir: str) -> Any:
    from deskwatch.config import load_config_text

    doc = {"device": {"id": "figures", "site": "figures", "worker_id": "w"}, "mqtt": {"host": "localhost"}}
    return load_config_text(yaml.safe_dump({**doc, "state_dir": state_dir}), "<phonefigures>")


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


def scan_burst(vision: Any, policy: Any, cfg: Any, frame: np.ndarray, seed: int, noise: float = 2.0) -> Any:
    """The policy's outcome for ``frame`` as a camera burst (``camera.burst_frames`` frames with
    sensor noise of ``noise`` grey levels, ``deskwatch bench``'s ``camera_burst``), analysed and
    evaluated as the scanner does: a burst settled early is judged with its unseen frames
    counted in ``need``."""
    from deskwatch.commands.bench import camera_burst
    from deskwatch.domain import Frame, utcnow
    from deskwatch.policy.engine import PolicyContext
    from deskwatch.scanner import analyze_frames

    now = utcnow()
    burst = [Frame(f, now, i) for i, f in enumerate(camera_burst(frame, cfg.camera.burst_frames, seed, noise))]
    scanned = analyze_frames(vision, policy, burst, len(burst))
    context = PolicyContext(now=now, trigger="cli", confirming=True, unseen_frames=scanned.unseen)
    return policy.evaluate(scanned.analyses, context)


def categories(entry: dict[str, Any]) -> list[str]:
    """The categories one labelled photo counts in."""
    name = str(entry["file"])
    if entry.get("phone_in_use"):
        return ["phone in use"]
    out = ["no phone in use"]
    if name.startswith("phone_desk"):
        out.append("phone on a desk")
    if name.startswith("nophone_hand"):
        out.append("hard negative")
    return out


def measure(directory: Path, *, verbose: bool = True, bursts: bool = False) -> dict[str, Any]:
    """Per view, per category: the photos and those found. ``bursts`` adds the view the
    supervisor gets: the 1280x720 frame as a camera burst (``camera.burst_frames`` frames,
    each with its own sensor noise) through the scan's burst analysis and the policy, a
    photo counting when the scan reports phone_use (or eating)."""
    from deskwatch.app import build_policy, build_vision
    from deskwatch.commands.bench import fit_frame
    from deskwatch.vision.eating import AT_MOUTH
    from deskwatch.vision.phones import AT_EAR, IN_HAND, VISIBLE

    labels = yaml.safe_load((directory / "labels.yaml").read_text())["files"]
    views = (*VIEWS, BURST) if bursts else VIEWS
    summary: dict[str, Any] = {view: {} for view in views}
    with tempfile.TemporaryDirectory(prefix="deskwatch-figures-") as state:
        cfg = _config(state)
        vision, policy = build_vision(cfg), build_policy(cfg)

        def one_frame(frame: np.ndarray) -> tuple[bool, bool, bool, str]:
            analysis = vision.analyze(frame)
            phones = analysis.labelled("cell phone")
            in_use = any(d.behaviour in (AT_EAR, IN_HAND) for d in phones)
            on_desk = any(d.behaviour == VISIBLE for d in phones)
            eating = any(getattr(d, "behaviour", None) == AT_MOUTH for d in analysis.detections)
            return in_use, on_desk, eating, ", ".join(f"{d.behaviour} {d.score:.2f}" for d in phones) or "-"

        def one_scan(frame: np.ndarray, seed: int) -> tuple[bool, bool, bool, str]:
            outcome = scan_burst(vision, policy, cfg, frame, seed)
            said = {f.type: f.detail for f in outcome.findings if f.type in ("phone_use", "eating")}
            return "phone_use" in said, False, "eating" in said, "; ".join(f"{k}: {v}" for k, v in said.items()) or "-"

        try:
            for seed, entry in enumerate(labels):
                image = _load(directory / entry["file"])
                fitted = fit_frame(image, 1280, 720)
                said = []
                for view in views:
                    if view == BURST:
                        in_use, on_desk, eating, words = one_scan(fitted, seed)
                    else:
                        in_use, on_desk, eating, words = one_frame(image if view == "file" else fitted)
                    counts = summary[view]
                    for category in categories(entry):
                        row = counts.setdefault(category, {"photos": 0, "found_in_use": [], "found_on_desk": []})
                        row["photos"] += 1
                        if in_use:
                            row["found_in_use"].append(entry["file"])
                        if on_desk:
                            row["found_on_desk"].append(entry["file"])
                    key = "eating" if entry.get("eating") else "not eating"
                    row = counts.setdefault(key, {"photos": 0, "found_eating": []})
                    row["photos"] += 1
                    if eating:
                        row["found_eating"].append(entry["file"])
                    said.append(f"{view}: {words}")
                if verbose:
                    print(f"{entry['file']:22} {'/'.join(categories(entry)):30} {' | '.join(said)}", flush=True)
        finally:
            vision.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.phonefigures", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=REPO / "tests" / "data" / "photos")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    parser.add_argument(
        "--bursts",
        action="store_true",
        help="also each 1280x720 frame as a camera burst through the scan and the policy: what the supervisor gets",
    )
    args = parser.parse_args(argv)
    if not (args.directory / "labels.yaml").is_file():
        print(f"phonefigures: no labels.yaml in {args.directory}: pass a labelled photo folder", file=sys.stderr)
        return 2
    summary = measure(args.directory, verbose=not args.json, bursts=args.bursts)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for view, counts in summary.items():
        print(f"\n{view}:")
        for category, row in counts.items():
            found = row.get("found_in_use", row.get("found_eating", []))
            what = "eating found" if "found_eating" in row else "phone in use found"
            extra = f", on desk {len(row['found_on_desk'])}" if row.get("found_on_desk") else ""
            print(f"  {category:16} {row['photos']:3} photos, {what} {len(found)}{extra}  {' '.join(found)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
