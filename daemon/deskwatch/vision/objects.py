"""NanoDet-g-416 (COCO-80) object detector: decoding, per-label thresholds, NMS,
and a second look for phones at each face.

The shipped graph takes the frame stretched (bilinear) to 416x416 as RGB 0..255
float32; the BGR mean/std normalisation is folded into its first layers. For each
stride s in (8, 16, 32) it outputs, by signature name, ``cls_s`` [1, N, 80] class
scores (already sigmoided) and ``box_s`` [1, N, 44]: for each side (left, top,
right, bottom) 11 bin logits whose softmax expectation times s is the distance
from the cell centre ((col + 0.5) * s, (row + 0.5) * s) to that side.

Phones are small at 416 px and, held to the ear, mostly hidden by the hand. The
second pass (``phones_at_ears``) crops a square around each face BlazeFace found,
runs the detector on it (the phone is 2-5x larger there) and keeps only
phone-sized boxes next to an ear or in front of the face.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..domain import Box, Detection, Face
from .imageops import resize
from .runtime import Model

INPUT_SIZE = 416
STRIDES = (8, 16, 32)
BINS = 11
PHONE = "cell phone"

COCO_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip
PHONE_CLASS = COCO_LABELS.index(PHONE)
PHONE_CROP = 4.0  # side of the crop around a face, in face heights
PHONE_EAR_DISTANCE = 0.5  # a phone's centre within this many face heights of an ear or the nose
PHONE_MAX_SIZE = 0.8  # a phone is at most this many face heights long
PHONE_MIN_FACE_PX = 40  # smaller faces are people far from the desk


def cell_centres(stride: int, size: int = INPUT_SIZE) -> np.ndarray:
    """N x 2 cell centres (x, y) in input pixels, row-major."""
    n = -(-size // stride)
    ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return (np.stack([xs, ys], axis=-1).reshape(-1, 2).astype(np.float32) + 0.5) * stride


CENTRES = {s: cell_centres(s) for s in STRIDES}
_BIN_VALUES = np.arange(BINS, dtype=np.float32)


def nms_per_class(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy NMS run separately for each class."""
    # offset each class's boxes so that boxes of different classes never overlap
    shifted = boxes + (classes.astype(np.float32) * 4.0)[:, None]
    order = np.argsort(-scores)
    keep = []
    area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        ix = np.clip(np.minimum(shifted[i, 2], shifted[rest, 2]) - np.maximum(shifted[i, 0], shifted[rest, 0]), 0, None)
        iy = np.clip(np.minimum(shifted[i, 3], shifted[rest, 3]) - np.maximum(shifted[i, 1], shifted[rest, 1]), 0, None)
        inter = ix * iy
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[overlap <= iou]
    return np.asarray(keep, dtype=np.int64)


@dataclass
class RawDetections:
    boxes: np.ndarray  # M x 4, normalised to the input image (x0, y0, x1, y1)
    scores: np.ndarray  # M
    classes: np.ndarray  # M


def decode(outputs: dict[str, np.ndarray], thresholds: np.ndarray) -> RawDetections:
    """Candidates (anchor, class) at or above their class threshold, boxes decoded."""
    all_boxes, all_scores, all_classes = [], [], []
    for s in STRIDES:
        scores = outputs[f"cls_{s}"].reshape(-1, len(COCO_LABELS))
        anchor, cls = np.nonzero(scores >= thresholds)
        if anchor.size == 0:
            continue
        logits = outputs[f"box_{s}"].reshape(-1, 4, BINS)[anchor]
        logits = logits - logits.max(axis=2, keepdims=True)
        e = np.exp(logits)
        dist = (e @ _BIN_VALUES) / e.sum(axis=2) * s  # M x 4: left, top, right, bottom
        c = CENTRES[s][anchor]
        box = np.stack([c[:, 0] - dist[:, 0], c[:, 1] - dist[:, 1], c[:, 0] + dist[:, 2], c[:, 1] + dist[:, 3]], axis=1)
        all_boxes.append(box / INPUT_SIZE)
        all_scores.append(scores[anchor, cls])
        all_classes.append(cls)
    if not all_boxes:
        return RawDetections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))
    return RawDetections(np.concatenate(all_boxes), np.concatenate(all_scores), np.concatenate(all_classes))


class ObjectDetector:
    def __init__(
        self,
        model: Model,
        *,
        thresholds: dict[str, float],
        default_threshold: float = 0.35,
        nms_iou: float = 0.6,
        phone_pass: bool = True,
        phone_threshold: float = 0.3,
        phone_max_persons: int = 3,
    ):
        shape = model.input_shape
        if shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
            raise ValueError(f"{model.file}: expected input [1, 416, 416, 3], got {list(shape)}")
        missing = [f"{k}_{s}" for s in STRIDES for k in ("cls", "box") if f"{k}_{s}" not in model.outputs]
        if missing:
            raise ValueError(f"{model.file}: outputs {missing} missing (has {sorted(model.outputs)})")
        self.model = model
        self.thresholds = np.array([thresholds.get(lbl, default_threshold) for lbl in COCO_LABELS], np.float32)
        self.nms_iou = nms_iou
        self.phone_pass = phone_pass
        self.phone_threshold = phone_threshold
        self.phone_max_persons = phone_max_persons
        self.invoke_ms = 0.0  # model time of the last detect() (all passes)
        self.passes = 0

    def _run(self, image: np.ndarray, thresholds: np.ndarray) -> RawDetections:
        tensor = resize(image, INPUT_SIZE, INPUT_SIZE).astype(np.float32)[None]
        out = self.model.run(tensor)
        self.invoke_ms += self.model.invoke_ms
        self.passes += 1
        return decode(out, thresholds)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Objects in the whole frame, best first."""
        self.invoke_ms, self.passes = 0.0, 0
        raw = self._run(image, self.thresholds)
        if raw.scores.size == 0:
            return []
        keep = nms_per_class(raw.boxes, raw.scores, raw.classes, self.nms_iou)
        dets = []
        for i in keep:
            b = Box(*(float(v) for v in raw.boxes[i])).clipped()
            if b.area > 0:
                dets.append(Detection(COCO_LABELS[int(raw.classes[i])], float(raw.scores[i]), b))
        return sorted(dets, key=lambda d: -d.score)

    # -- the second look for phones ------------------------------------------------------
    def phones_at_ears(self, image: np.ndarray, faces: list[Face], found: list[Detection]) -> list[Detection]:
        """Phones held to the ear or in front of the face, found in an enlarged crop
        around each face (largest first).

        A phone held to the ear is mostly hidden by the hand and small at 416 px;
        in a crop PHONE_CROP face-heights wide it is 2-5x larger. Only a phone-sized
        box near an ear keypoint (or in front of the face) counts: elsewhere in the
        crop the detector's weak phone scores are noise (hands with food, cards).
        """
        self.invoke_ms = 0.0
        if not self.phone_pass or self.phone_max_persons <= 0:
            return []
        h, w = image.shape[:2]
        thresholds = np.full(len(COCO_LABELS), 2.0, np.float32)  # nothing but phones
        thresholds[PHONE_CLASS] = self.phone_threshold
        out: list[Detection] = []
        for face in sorted(faces, key=lambda f: -f.box.area)[: self.phone_max_persons]:
            fh = face.box.height * h
            if fh < PHONE_MIN_FACE_PX or len(face.keypoints) < 6:
                continue
            side = fh * PHONE_CROP
            cx, cy = face.box.centre[0] * w, face.box.centre[1] * h + 0.2 * fh
            x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
            x1, y1 = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
            if x1 - x0 < 8 or y1 - y0 < 8 or (x1 - x0) * (y1 - y0) > 0.7 * w * h:
                continue  # the crop would be (nearly) the whole frame: nothing to gain
            sub = self._run(np.ascontiguousarray(image[y0:y1, x0:x1]), thresholds)
            if sub.scores.size == 0:
                continue
            ears = np.array([face.keypoints[4], face.keypoints[5], face.keypoints[2]], np.float32) * [w, h]
            keep = nms_per_class(sub.boxes, sub.scores, sub.classes, self.nms_iou)
            for b, score in zip(sub.boxes[keep], sub.scores[keep]):
                px = b * [x1 - x0, y1 - y0, x1 - x0, y1 - y0] + [x0, y0, x0, y0]
                bw, bh = (px[2] - px[0]) / fh, (px[3] - px[1]) / fh
                centre = np.array([(px[0] + px[2]) / 2, (px[1] + px[3]) / 2], np.float32)
                near = float(np.hypot(*(ears - centre).T).min()) / fh
                if near <= PHONE_EAR_DISTANCE and max(bw, bh) <= PHONE_MAX_SIZE:
                    box = Box(float(px[0]) / w, float(px[1]) / h, float(px[2]) / w, float(px[3]) / h).clipped()
                    out.append(Detection(PHONE, float(score), box))
        return [d for d in out if all(d.box.iou(f.box) <= self.nms_iou for f in found if f.label == PHONE)]
