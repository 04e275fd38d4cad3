"""BlazeFace face detector (boxes, 6 keypoints, facing estimate) and the face mesh
alignment the identity check uses (:class:`FaceAligner`, at the end).

Input: the frame (or a region of it) letterboxed to 128x128 RGB scaled to [-1, 1].
Outputs by name: ``regressors`` [1, 896, 16] (box centre/size and 6 keypoints in
128-px units, offsets from the anchor centre) and ``classificators`` [1, 896, 1]
(logits). Anchors are generated here (MediaPipe's SSD anchors for this model:
stride 8 -> 16x16 cells x 2, stride 16 -> 8x8 cells x 6, unit size). Overlapping
detections are blended, weighted by score (MediaPipe's weighted NMS).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from deskwatch.domain import Box, Face
from deskwatch.vision.imageops import letterbox
from deskwatch.vision.runtime import Model

INPUT_SIZE = 128
KEYPOINTS = ("right_eye", "left_eye", "nose", "mouth", "right_ear", "left_ear")


def blazeface_anchors(layers: tuple[tuple[int, int], ...] = ((16, 2), (8, 6))) -> np.ndarray:
    """Anchor centres (x, y) normalised to the input: per layer (cells per side,
    anchors per cell). Short range: 16x16x2 + 8x8x6 = 896; full range: 48x48x1 = 2304."""
    centres = []
    for cells, per_cell in layers:
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
    return np.concatenate(centres).astype(np.float32)


ANCHORS = blazeface_anchors()
ANCHORS_BY_COUNT = {896: ANCHORS, 2304: blazeface_anchors(((48, 1),))}


def _iou_one(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)  # type: ignore[no-any-return]


def weighted_nms(
    boxes: np.ndarray, points: np.ndarray, scores: np.ndarray, iou: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Blend each cluster of overlapping boxes (and keypoints) by score."""
    order = np.argsort(-scores)
    boxes, points, scores = boxes[order], points[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    out = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        overlap = (_iou_one(boxes[i], boxes) > iou) & remaining
        overlap[i] = True
        w = scores[overlap][:, None]
        box = (boxes[overlap] * w).sum(0) / w.sum()
        pts = (points[overlap] * w[:, :, None]).sum(0) / w.sum()
        out.append((box, pts, float(scores[i])))
        remaining &= ~overlap
    return out


def facing_score(points: np.ndarray) -> float:
    """0..1 from keypoint symmetry: 1 faces the camera, 0 is a profile.

    Along the eye axis, a frontal face has the nose half-way between the eyes and
    the ears equally far from the nose; turning the head moves the nose towards
    one eye and one ear behind the face.
    """
    right_eye, left_eye, nose = points[0], points[1], points[2]
    right_ear, left_ear = points[4], points[5]
    axis = left_eye - right_eye
    span = float(np.hypot(*axis))
    if span < 1e-6:
        return 0.0
    u = axis / span
    t_nose = float((nose - right_eye) @ u)
    eye_sym = max(0.0, min(t_nose, span - t_nose)) / (span / 2)
    a = t_nose - float((right_ear - right_eye) @ u)
    b = float((left_ear - right_eye) @ u) - t_nose
    ear_sym = max(0.0, min(a, b)) / max(a, b) if max(a, b) > 0 else 0.0
    return float(min(1.0, max(0.0, 0.5 * (min(1.0, eye_sym) + ear_sym))))


class FaceDetector:
    """BlazeFace short range (128 px input) or full range (192 px): the input size,
    the anchors and the output names are taken from the model itself."""

    def __init__(self, model: Model, *, threshold: float = 0.5, nms_iou: float = 0.3):
        self.model = model
        self.size = int(model.input_shape[1])
        by_width = {int(d["shape"][-1]): name for name, d in model.outputs.items()}
        if set(by_width) != {1, 16}:
            raise ValueError(f"{model.file}: not a BlazeFace model (outputs {sorted(model.outputs)})")
        self._scores, self._boxes = by_width[1], by_width[16]
        count = int(model.outputs[self._scores]["shape"][1])
        if count not in ANCHORS_BY_COUNT:
            raise ValueError(f"{model.file}: {count} anchors, expected 896 (short range) or 2304 (full range)")
        self.anchors = ANCHORS_BY_COUNT[count]
        self.threshold = threshold
        self.nms_iou = nms_iou
        self._logit = math.log(threshold / (1 - threshold)) if 0 < threshold < 1 else -100.0

    def detect(self, image: np.ndarray, region: tuple[int, int, int, int] | None = None) -> list[Face]:
        """Faces in the image, or in a pixel region of it; boxes normalised to the image."""
        fh, fw = image.shape[:2]
        rx0, ry0 = (region[0], region[1]) if region else (0, 0)
        view = image[region[1] : region[3], region[0] : region[2]] if region else image
        if view.size == 0:
            return []
        size = self.size
        square, scale, pad_x, pad_y = letterbox(view, size)
        tensor = (square.astype(np.float32) * (1 / 127.5) - 1.0)[None]
        out = self.model.run(tensor)
        logits = out[self._scores].reshape(-1)
        keep = np.flatnonzero(logits > self._logit)
        if keep.size == 0:
            return []
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits[keep], -100, 100)))
        reg = out[self._boxes].reshape(-1, 16)[keep] / size
        anchors = self.anchors[keep]
        cx, cy = reg[:, 0] + anchors[:, 0], reg[:, 1] + anchors[:, 1]
        w, h = reg[:, 2], reg[:, 3]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        points = reg[:, 4:16].reshape(-1, 6, 2) + anchors[:, None, :]
        faces = []
        for box, pts, score in weighted_nms(boxes, points, scores, self.nms_iou):
            # square-input units -> source pixels -> normalised to the whole image
            bx = (box * size - [pad_x, pad_y, pad_x, pad_y]) / scale + [
                rx0,
                ry0,
                rx0,
                ry0,
            ]
            px = (pts * size - [pad_x, pad_y]) / scale + [rx0, ry0]
            nbox = Box(float(bx[0]) / fw, float(bx[1]) / fh, float(bx[2]) / fw, float(bx[3]) / fh).clipped()
            if nbox.area <= 0:
                continue
            keypoints = tuple((round(float(x) / fw, 4), round(float(y) / fh, 4)) for x, y in px)
            faces.append(Face(box=nbox, score=score, keypoints=keypoints, facing=facing_score(px)))
        return faces


def merge_faces(faces: list[Face], iou: float = 0.3) -> list[Face]:
    """Drop duplicates found by more than one pass (keep the higher score)."""
    kept: list[Face] = []
    for face in sorted(faces, key=lambda f: -f.score):
        if all(face.box.iou(k.box) <= iou for k in kept):
            kept.append(face)
    return kept


# -- alignment for the identity check ----------------------------------------------------

MESH_SIZE = 192  # MediaPipe face mesh input
MESH_ROI_SCALE = 1.5  # the mesh sees the (square) face box enlarged 1.5x, turned upright
# dlib's five alignment landmarks, as face mesh points: the outer and inner corner of the
# image-left eye, the inner and outer corner of the image-right eye, the base of the nose
CHIP_MESH_POINTS = (33, 133, 362, 263, 2)
# where dlib's aligner (get_face_chip_details, 150 px, padding 0.25) puts those points:
# the median over 13 frontal faces in registry-package photos (never the test photos),
# made left-right symmetric, as tools/deskwatch_dev/chip_template.py derives it
CHIP_SIZE = 150
CHIP_TEMPLATE = np.array([[36.26, 45.65], [60.15, 46.92], [88.85, 46.92], [112.74, 45.65], [74.50, 84.88]], np.float32)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix of the rotation + uniform scale + translation that maps the points
    ``src`` onto ``dst`` best (least squares, Umeyama)."""
    n = len(src)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(d.T @ s / n)
    sign = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum() / ((s**2).sum() / n))
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float32)


class FaceAligner:
    """Face mesh landmarks of a BlazeFace face, and the 150x150 chip the embedder wants.

    The mesh looks at the face box enlarged 1.5x and turned so the eyes are level (as
    MediaPipe does); its presence score says whether there is a face at all - below
    ``min_presence`` (a profile, a hand, a false detection) no chip is made.
    """

    chip_size = CHIP_SIZE

    def __init__(self, mesh: Model, *, min_presence: float = 0.5):
        shape = mesh.input_shape
        widths = sorted(int(d["shape"][-1]) for d in mesh.outputs.values())
        if shape[1:3] != (MESH_SIZE, MESH_SIZE) or widths != [1, 1404]:
            raise ValueError(f"{mesh.file}: not a face mesh model (input {shape}, outputs {widths})")
        self.mesh = mesh
        by_width = {int(d["shape"][-1]): name for name, d in mesh.outputs.items()}
        self._points, self._presence = by_width[1404], by_width[1]
        self.min_presence = min_presence

    def landmarks(self, image: np.ndarray, face: Face) -> tuple[np.ndarray, float]:
        """The 468 mesh points (x, y in image pixels) and the presence score 0..1."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = face.box.x0 * w, face.box.y0 * h, face.box.x1 * w, face.box.y1 * h
        side = max(x1 - x0, y1 - y0) * MESH_ROI_SCALE
        angle = 0.0
        if len(face.keypoints) >= 2:
            (ax, ay), (bx, by) = face.keypoints[0], face.keypoints[1]
            angle = math.atan2((by - ay) * h, (bx - ax) * w)
        k = side / MESH_SIZE
        c, s = math.cos(angle) * k, math.sin(angle) * k
        to_image = np.array([[c, -s], [s, c]], np.float32)  # mesh input pixels -> image pixels
        centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2], np.float32)
        shift = centre - to_image @ np.array([MESH_SIZE / 2, MESH_SIZE / 2], np.float32)
        matrix = cv2.invertAffineTransform(np.hstack([to_image, shift[:, None]]))
        view = cv2.warpAffine(image, matrix, (MESH_SIZE, MESH_SIZE), flags=cv2.INTER_LINEAR)
        out = self.mesh.run((view.astype(np.float32) * np.float32(1 / 255))[None])
        raw = out[self._points].reshape(468, 3)[:, :2]
        logit = float(out[self._presence].reshape(-1)[0])
        presence = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, logit))))
        return raw @ to_image.T + shift, presence

    def chip(self, image: np.ndarray, face: Face) -> np.ndarray | None:
        """The face warped so dlib's five landmarks land on the template, or None when
        the mesh finds no face."""
        points, presence = self.landmarks(image, face)
        if presence < self.min_presence:
            return None
        matrix = similarity_transform(points[list(CHIP_MESH_POINTS)], CHIP_TEMPLATE)
        return cv2.warpAffine(  # type: ignore[no-any-return]
            image, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
