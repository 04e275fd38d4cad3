#!/usr/bin/env python3
"""Quick check of the shipped detectors on the test photos (float32 vs int8 NanoDet).

Not a test (the daemon's accuracy test lives under tests/); a tool for whoever rebuilds the models:

    .venv/bin/python models/check_models.py [--photos tests/data/photos] [--threads 2]

Prints person recall (labels.yaml `persons`, photos with an exact count), phone hits on the phone
photos, false phones elsewhere, false persons on empty_* photos, and median invoke() times.
Needs numpy, opencv-python-headless, pyyaml and ai-edge-litert (or tflite-runtime).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

MODELS = Path(__file__).resolve().parent
SIZE, STRIDES, BINS = 416, (8, 16, 32), 11
LABELS = (MODELS / "coco_labels.txt").read_text().split("\n")
PERSON, PHONE = LABELS.index("person"), LABELS.index("cell phone")


def interpreter(path: Path, threads: int) -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the tflite-runtime install
        from tflite_runtime.interpreter import Interpreter
    return Interpreter(model_path=str(path), num_threads=threads)


def preprocess(rgb: np.ndarray) -> np.ndarray:
    """The model's input: RGB 0..255 float32, bilinear stretch to 416x416 (normalisation is in-graph)."""
    return cv2.resize(rgb, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR).astype(np.float32)[None]


def decode(out: dict[str, np.ndarray], threshold: float) -> list[tuple[int, float, np.ndarray]]:
    """Per-class NMS'd detections: (class, score, [x0, y0, x1, y1] normalised 0..1)."""
    boxes, scores = [], []
    for s in STRIDES:
        n = SIZE // s
        cls = out[f"cls_{s}"][0]  # [n*n, 80], sigmoid already applied
        reg = out[f"box_{s}"][0].reshape(-1, 4, BINS)  # left, top, right, bottom x 11 bins
        prob = np.exp(reg - reg.max(-1, keepdims=True))
        prob /= prob.sum(-1, keepdims=True)
        dist = (prob * np.arange(BINS, dtype=np.float32)).sum(-1) * s  # [n*n, 4] in input pixels
        idx = np.arange(n * n)
        cx, cy = (idx % n + 0.5) * s, (idx // n + 0.5) * s
        boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], 1) / SIZE)
        scores.append(cls)
    all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
    found = []
    for c in np.unique(np.nonzero(all_scores >= threshold)[1]):
        keep = np.nonzero(all_scores[:, c] >= threshold)[0]
        for i in nms(all_boxes[keep], all_scores[keep, c], 0.6):
            found.append((int(c), float(all_scores[keep[i], c]), np.clip(all_boxes[keep[i]], 0, 1)))
    return found


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        w = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        h = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = w * h
        order = [int(j) for j, o in zip(rest, inter / (area[i] + area[rest] - inter + 1e-9)) if o < iou]
    return keep


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=MODELS.parent / "tests" / "data" / "photos")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--threshold", type=float, default=0.35)
    args = parser.parse_args()
    labels = {f["file"]: f for f in yaml.safe_load((args.photos / "labels.yaml").read_text())["files"]}
    frames = {name: cv2.cvtColor(cv2.imread(str(args.photos / name)), cv2.COLOR_BGR2RGB) for name in labels}

    for model in ("nanodet_g416_fp32.tflite", "nanodet_g416_int8.tflite"):
        it = interpreter(MODELS / model, args.threads)
        runner = it.get_signature_runner("serving_default")
        runner(image=preprocess(frames[next(iter(frames))]))  # warm-up
        times, hit, total, phone_hit, phone_files, false_phone, false_person = [], 0, 0, 0, 0, 0, 0
        lines = []
        for name, lab in labels.items():
            x = preprocess(frames[name])
            t0 = time.perf_counter()
            out = runner(image=x)
            times.append((time.perf_counter() - t0) * 1000)
            dets = decode(out, args.threshold)
            persons = sum(c == PERSON for c, _, _ in dets)
            phones = [round(s, 2) for c, s, _ in dets if c == PHONE]
            if lab.get("persons_exact", True) and lab["persons"] and not name.startswith("phone"):
                hit, total = hit + min(persons, lab["persons"]), total + lab["persons"]
            if lab.get("phone"):
                phone_files += 1
                phone_hit += bool(phones)
            elif phones:
                false_phone += 1
            if name.startswith("empty"):
                false_person += persons
            lines.append(f"  {name:18s} persons {persons:2d}/{lab['persons']:<2d} phones {phones}")
        print(f"== {model}")
        print("\n".join(lines))
        print(f"  person recall (exact-count photos, not phone_*): {hit}/{total}")
        print(f"  phone photos found: {phone_hit}/{phone_files}; photos with a false phone: {false_phone}")
        print(f"  false persons on empty_*: {false_person}")
        print(f"  invoke ms ({args.threads} threads): median {np.median(times):.1f}, "
              f"p95 {np.percentile(times, 95):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
