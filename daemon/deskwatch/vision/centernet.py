"""MB3-CenterNet (COCO-80), the second detector that confirms phones and food.

NanoDet alone cannot tell a phone from a mug, a tablet or a hand at 0.2-0.5: on the
labelled photos its "cell phone" score reaches 0.49 on a raised wine glass and 0.43
on a tablet, while held phones score 0.2-0.6. CenterNet (a MobileNetV3 backbone with
a heat-map head, trained separately) makes different mistakes; a phone both detectors
see at the same place is what the phone stage reports (:mod:`.crops`, :mod:`.phones`).

The shipped graph takes an RGB image stretched to S x S (384, for the hand and head
crops and the whole frame) as float32 0..255 and outputs, by signature name, ``heat``
[1, S/4, S/4, C] (per-class centre heat, sigmoid applied) and ``wh`` [1, S/4, S/4, 4]:
the distances (left, top, right, bottom) in input pixels from the cell (col * 4,
row * 4) to the box sides. A detection is a cell whose heat is the maximum of its
3 x 3 neighbourhood (the graph's own decoder does the same). The C heat channels are
the classes the manifest lists for the model (``outputs.heat.classes``: the 14 phones,
food and drinks the phone stage asks about; a model without that list has all 80).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from deskwatch.domain import Box, Detection
from deskwatch.vision.imageops import resize
from deskwatch.vision.objects import COCO_LABELS
from deskwatch.vision.runtime import Model, check_io

STRIDE = 4


def peaks(heat: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, classes) of the cells whose heat is at least ``min_score`` and the
    maximum of their 3 x 3 neighbourhood, for each class separately (outside the map: 0).
    Only the cells above ``min_score`` - a few dozen of the map's ~10^5 - are compared
    with their neighbours."""
    rows, cols, classes = np.nonzero(heat >= min_score)
    if rows.size == 0:
        return rows, cols, classes
    padded = np.pad(heat, ((1, 1), (1, 1), (0, 0)), constant_values=0.0)
    centre = heat[rows, cols, classes]
    top = np.max([padded[rows + dy, cols + dx, classes] for dy in range(3) for dx in range(3)], axis=0)
    keep = centre >= top
    return rows[keep], cols[keep], classes[keep]


class CenterNet:
    """Runs one CenterNet graph (its input size is read from the model); ``classes``: what
    its heat channels are, in order."""

    def __init__(self, model: Model, classes: Sequence[str] = COCO_LABELS):
        check_io(model, ("heat", "wh"))
        if model.input_shape[1] % STRIDE:
            raise ValueError(f"{model.file}: input side {model.input_shape[1]} is not a multiple of {STRIDE}")
        channels = int(model.outputs["heat"]["shape"][-1])
        if channels != len(classes):
            raise ValueError(f"{model.file}: {channels} heat channels for {len(classes)} classes")
        unknown = sorted(set(classes) - set(COCO_LABELS))
        if unknown:
            raise ValueError(f"{model.file}: heat classes {unknown} are not COCO labels")
        self.model = model
        self.size = int(model.input_shape[1])
        self.classes = tuple(classes)

    def detect(self, image: np.ndarray, labels: Iterable[str], min_score: float) -> list[Detection]:
        """Detections of ``labels`` (all among its classes) scoring at least ``min_score``,
        boxes normalised to ``image``."""
        wanted = np.array([self.classes.index(label) for label in labels], np.int64)

        def read(out: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            heat = out["heat"][0][..., wanted]  # a copy: the wanted channels only
            rows, cols, classes = peaks(heat, min_score)
            return heat, rows, cols, classes, out["wh"][0][rows, cols]  # the sides at the peaks

        heat, rows, cols, classes, sides = self.model.run_reading(resize(image, self.size, self.size), read)
        dets = []
        for r, c, k, side in zip(rows, cols, classes, sides, strict=True):
            left, top, right, bottom = (float(v) for v in side)
            cx, cy = c * STRIDE, r * STRIDE
            box = Box(
                (cx - left) / self.size, (cy - top) / self.size, (cx + right) / self.size, (cy + bottom) / self.size
            )
            box = box.clipped()
            if box.area > 0:
                dets.append(Detection(self.classes[int(wanted[k])], float(heat[r, c, k]), box))
        return sorted(dets, key=lambda d: -d.score)
