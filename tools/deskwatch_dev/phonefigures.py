"""The phone stage's figures per category on a labelled photo folder (issue 12):
``python -m deskwatch_dev.phonefigures [DIR]`` (default: the repo's tests/data/photos).

Each photo is analysed twice with the shipped models and default config: as the file, and
fitted into a 1280x720 frame (what the camera gives; phones shrink with it). A photo
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


def _config(state_dir: str) -> Any:
    from deskwatch.config import load_config_text

    doc = {"device": {"id": "figures", "site": "figures", "worker_id": "w"}, "mqtt": {"host": "localhost"}}
    return load_config_text(yaml.safe_dump({**doc, "state_dir": state_dir}), "<phonefigures>")


def _load(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.ascontiguousarray(np.asarray(im.convert("RGB")))


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


def measure(directory: Path, *, verbose: bool = True) -> dict[str, Any]:
    from deskwatch.app import build_vision
    from deskwatch.commands.bench import fit_frame
    from deskwatch.vision.eating import AT_MOUTH
    from deskwatch.vision.phones import AT_EAR, IN_HAND, VISIBLE

    labels = yaml.safe_load((directory / "labels.yaml").read_text())["files"]
    summary: dict[str, Any] = {view: {} for view in VIEWS}
    with tempfile.TemporaryDirectory(prefix="deskwatch-figures-") as state:
        vision = build_vision(_config(state))
        try:
            for entry in labels:
                image = _load(directory / entry["file"])
                said = []
                for view, frame in zip(VIEWS, (image, fit_frame(image, 1280, 720)), strict=True):
                    analysis = vision.analyze(frame)
                    phones = analysis.labelled("cell phone")
                    in_use = any(d.behaviour in (AT_EAR, IN_HAND) for d in phones)
                    on_desk = any(d.behaviour == VISIBLE for d in phones)
                    eating = any(getattr(d, "behaviour", None) == AT_MOUTH for d in analysis.detections)
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
                    said.append(f"{view}: " + (", ".join(f"{d.behaviour} {d.score:.2f}" for d in phones) or "-"))
                if verbose:
                    print(f"{entry['file']:22} {'/'.join(categories(entry)):30} {' | '.join(said)}", flush=True)
        finally:
            vision.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.phonefigures", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=REPO / "tests" / "data" / "photos")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON only")
    args = parser.parse_args(argv)
    if not (args.directory / "labels.yaml").is_file():
        print(f"phonefigures: no labels.yaml in {args.directory}: pass a labelled photo folder", file=sys.stderr)
        return 2
    summary = measure(args.directory, verbose=not args.json)
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
