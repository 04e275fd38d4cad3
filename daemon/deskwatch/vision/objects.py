"""NanoDet-g-416 (COCO-80) object detector: decoding, per-label thresholds, NMS,
and the weak votes the phone stage builds on.

The shipped graph takes the frame stretched (bilinear) to 416x416 as RGB 0..255
float32; the BGR mean/std normalisation is folded into its first layers. For each
stride s in (8, 16, 32) it outputs, by signature name, ``cls_s`` [1, N, 80] class
scores (already sigmoided) and ``box_s`` [1, N, 44]: for each side (left, top,
right, bottom) 11 bin logits whose softmax expectation times s is the distance
from the cell centre ((col + 0.5) * s, (row + 0.5) * s) to that side.

Phones and food are small at 416 px and, held, partly hidden by the hand: their
scores are weak. ``detect`` therefore also keeps the weak candidates of the
``hint_labels`` (``weak``, not reported as detections), and ``votes`` runs the
detector on a crop; the phone stage (:mod:`deskwatch.vision.crops`) adds these
votes up and has a second detector confirm them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deskwatch.domain import Box, Detection
from deskwatch.vision.imageops import resize
from deskwatch.vision.runtime import Model, check_io

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


PHONE_INDEX = COCO_LABELS.index(PHONE)
# A phone is not a phone where NanoDet itself rates the same anchor more likely a drink:
# a mug or a travel mug held in the hand gives weak "cell phone" scores beside stronger
# cup/bottle ones (a travel mug held at the chest became a phone in hand at 0.497 in a
# tilted 1280x720 frame of multi_08.jpg, above phones found at 0.44). Measured on the 52
# labelled photos x 13 camera variations, as files and as 1280x720 frames (1352 views):
# that false phone and no other phone candidate gone, every view of a phone in use scoring
# as before. Remote, book and mouse as rivals too cost two of phone_03's views
# (models/manifest.yaml, phone_stage_tried).
PHONE_RIVALS = ("cup", "bottle", "wine glass")
RIVAL_INDICES = np.array([COCO_LABELS.index(label) for label in PHONE_RIVALS], np.int64)


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


def cells_at_or_above(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of an anchors x classes mask, in the same order, through the few rows
    that hold a candidate: a frame's 2704 x 80 mask has a handful, and ``np.nonzero`` on the
    whole of it took ~0.4 ms where this takes ~0.1."""
    rows = np.flatnonzero(mask.any(axis=1))
    within, cls = np.nonzero(mask[rows])
    return rows[within], cls


@dataclass
class RawDetections:
    boxes: np.ndarray  # M x 4, normalised to the input image (x0, y0, x1, y1)
    scores: np.ndarray  # M
    classes: np.ndarray  # M


def decode(outputs: dict[str, np.ndarray], thresholds: np.ndarray, classes: np.ndarray | None = None) -> RawDetections:
    """Candidates (anchor, class) at or above their class threshold, boxes decoded;
    ``classes``: only these class indices are looked at (a crop's votes ask for 1-14 of 80).
    A phone candidate is dropped where the detector rates a drink higher at the same anchor
    (``PHONE_RIVALS``)."""
    all_boxes, all_scores, all_classes = [], [], []
    for s in STRIDES:
        scores = outputs[f"cls_{s}"].reshape(-1, len(COCO_LABELS))
        if classes is None:
            anchor, cls = cells_at_or_above(scores >= thresholds)
        else:
            anchor, column = cells_at_or_above(scores[:, classes] >= thresholds[classes])
            cls = classes[column]
        phone = cls == PHONE_INDEX
        if phone.any():
            outranked = scores[anchor[phone]][:, RIVAL_INDICES].max(axis=1) > scores[anchor[phone], PHONE_INDEX]
            keep = np.ones(anchor.size, dtype=bool)
            keep[np.flatnonzero(phone)[outranked]] = False
            anchor, cls = anchor[keep], cls[keep]
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
        hint_labels: tuple[str, ...] = (),
        hint_threshold: float = 1.0,
    ):
        check_io(model, [f"{k}_{s}" for s in STRIDES for k in ("cls", "box")], size=INPUT_SIZE)
        self.model = model
        self.thresholds = np.array([thresholds.get(lbl, default_threshold) for lbl in COCO_LABELS], np.float32)
        self.nms_iou = nms_iou
        self.invoke_ms = 0.0  # model time of the last detect()
        # weak candidates of the last detect(): a hint label scoring hint_threshold <= score < its threshold
        self._decode_thresholds = self.thresholds.copy()
        for label in hint_labels:
            k = COCO_LABELS.index(label)
            self._decode_thresholds[k] = min(hint_threshold, float(self.thresholds[k]))
        self.weak: list[Detection] = []

    def _detections(
        self, image: np.ndarray, thresholds: np.ndarray, classes: np.ndarray | None = None
    ) -> list[Detection]:
        """Candidates at or above ``thresholds`` (of ``classes`` only, if given) after per-class
        NMS, boxes normalised to ``image``."""
        raw = self.model.run_reading(
            resize(image, INPUT_SIZE, INPUT_SIZE), lambda outputs: decode(outputs, thresholds, classes)
        )
        self.invoke_ms = self.model.invoke_ms
        if raw.scores.size == 0:
            return []
        out = []
        for i in nms_per_class(raw.boxes, raw.scores, raw.classes, self.nms_iou):
            box = Box(*(float(v) for v in raw.boxes[i])).clipped()
            if box.area > 0:
                out.append(Detection(COCO_LABELS[int(raw.classes[i])], float(raw.scores[i]), box))
        return out

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Objects in the whole frame, best first (the weak hint-label candidates go to ``weak``)."""
        found = self._detections(image, self._decode_thresholds)
        strong = {lbl: float(t) for lbl, t in zip(COCO_LABELS, self.thresholds, strict=True)}
        self.weak = [d for d in found if d.score < strong[d.label]]
        return sorted((d for d in found if d.score >= strong[d.label]), key=lambda d: -d.score)

    def votes(self, image: np.ndarray, labels: tuple[str, ...], min_score: float) -> list[Detection]:
        """Candidates of ``labels`` scoring at least ``min_score`` in ``image`` (a crop:
        the detector sees it stretched to 416 px), boxes normalised to ``image``."""
        classes = np.array(sorted({COCO_LABELS.index(label) for label in labels}), np.int64)
        thresholds = np.full(len(COCO_LABELS), 2.0, np.float32)  # nothing but the labels asked for
        thresholds[classes] = min_score
        return self._detections(image, thresholds, classes)
