"""NanoDet-g-416 (COCO-80) object detector: decoding, per-label thresholds, NMS,
and a second look for phones at each face.

The shipped graph takes the frame stretched (bilinear) to 416x416 as RGB 0..255
float32; the BGR mean/std normalisation is folded into its first layers. For each
stride s in (8, 16, 32) it outputs, by signature name, ``cls_s`` [1, N, 80] class
scores (already sigmoided) and ``box_s`` [1, N, 44]: for each side (left, top,
right, bottom) 11 bin logits whose softmax expectation times s is the distance
from the cell centre ((col + 0.5) * s, (row + 0.5) * s) to that side.

Phones are small at 416 px and, held to the ear, mostly hidden by the hand: their
scores are weak. ``detect`` therefore also keeps the weak phone candidates
(``weak_phones``, not reported as detections), and ``phones_in_region`` runs the
detector again on an enlarged crop; :mod:`deskwatch.vision.phones` decides which
of these weak votes add up to a phone held at an ear.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deskwatch.domain import Box, Detection
from deskwatch.vision.imageops import resize
from deskwatch.vision.runtime import Model

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
        hint_threshold: float = 1.0,
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
        # weak phone candidates of the last detect(): hint_threshold <= score < the phone threshold
        self.hint_threshold = min(hint_threshold, float(self.thresholds[PHONE_CLASS]))
        self.weak_phones: list[Detection] = []

    def _run(self, image: np.ndarray, thresholds: np.ndarray) -> RawDetections:
        tensor = resize(image, INPUT_SIZE, INPUT_SIZE).astype(np.float32)[None]
        out = self.model.run(tensor)
        self.invoke_ms += self.model.invoke_ms
        self.passes += 1
        return decode(out, thresholds)

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Objects in the whole frame, best first."""
        self.invoke_ms, self.passes = 0.0, 0
        self.weak_phones = []
        thresholds = self.thresholds
        if self.hint_threshold < thresholds[PHONE_CLASS]:
            thresholds = thresholds.copy()
            thresholds[PHONE_CLASS] = self.hint_threshold
        raw = self._run(image, thresholds)
        if raw.scores.size == 0:
            return []
        keep = nms_per_class(raw.boxes, raw.scores, raw.classes, self.nms_iou)
        dets = []
        for i in keep:
            b = Box(*(float(v) for v in raw.boxes[i])).clipped()
            if b.area <= 0:
                continue
            cls, score = int(raw.classes[i]), float(raw.scores[i])
            det = Detection(COCO_LABELS[cls], score, b)
            if score >= self.thresholds[cls]:
                dets.append(det)
            else:
                self.weak_phones.append(det)
        return sorted(dets, key=lambda d: -d.score)

    # -- the second look for phones ------------------------------------------------------
    def phones_in_region(self, image: np.ndarray, region: tuple[int, int, int, int]) -> list[Detection]:
        """Phone candidates (score >= phone_threshold) in an enlarged crop of the frame,
        boxes normalised to the whole frame. The crop is resized to 416 px like the
        frame, so a phone in it is several times larger than in the whole-frame pass.
        Adds its model time to ``invoke_ms``."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = region
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        thresholds = np.full(len(COCO_LABELS), 2.0, np.float32)  # nothing but phones
        thresholds[PHONE_CLASS] = self.phone_threshold
        sub = self._run(np.ascontiguousarray(image[y0:y1, x0:x1]), thresholds)
        if sub.scores.size == 0:
            return []
        keep = nms_per_class(sub.boxes, sub.scores, sub.classes, self.nms_iou)
        out = []
        for b, score in zip(sub.boxes[keep], sub.scores[keep]):
            px = b * [x1 - x0, y1 - y0, x1 - x0, y1 - y0] + [x0, y0, x0, y0]
            box = Box(float(px[0]) / w, float(px[1]) / h, float(px[2]) / w, float(px[3]) / h).clipped()
            if box.area > 0:
                out.append(Detection(PHONE, float(score), box))
        return out
