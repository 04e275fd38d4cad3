"""Phones held at the ear, from weak detector votes fused at each ear.

NanoDet finds a phone that lies in plain view, but a phone held to the ear is
mostly covered by the hand and small at 416 px: its "cell phone" scores are only
0.1-0.3, the same as the scores mugs, cameras, glasses and hands get elsewhere.
What separates them on the shared photos is *where* and *how many*: around a real
phone at the ear, several overlapping anchors (and, in an enlarged crop around the
face, the detector again) vote "phone"; the false votes are single, or not at an ear.

So the whole-frame pass keeps its weak phone candidates (``ObjectDetector.weak_phones``,
score >= ``phone_hint_threshold``); each ear found in the frame becomes an
:class:`EarZone` - from BlazeFace's ear keypoints (scale: the face height) or, where
the hand hides the face, from the body pose (:mod:`deskwatch.vision.pose`, scale:
head-and-shoulders size); the votes whose centre lies within the zone's reach and
whose size fits a phone are combined as a noisy-OR, ``1 - prod(1 - score)``, and the
zone reports a phone when that evidence reaches ``phone_ear_evidence``. The
reported detection's score is that evidence; its box the score-weighted mean of
the voting boxes.

Measured on the shared photos (int8 detector, 2026-11-29): evidence 0.68 at the
ear of a phone call whose face BlazeFace found (phone_02: 3 whole-frame votes of
0.11-0.12 plus 4 from the face crop, 0.12-0.23) and 0.47 where only the pose
gives the ear (phone_05: 4 votes of 0.12-0.17, the face hidden by the hand);
at most 0.25 at any ear of the 30 photos without a phone (eat_02: a toddler's
raised hand next to his cheek, 2 votes). The whole-frame pass alone finds
phone_01 and phone_04 (score >= 0.3).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from deskwatch.domain import Box, Detection, Face
from deskwatch.vision.pose import LEFT_EAR, RIGHT_EAR, Pose

PHONE = "cell phone"
FACE_EAR_REACH = 0.6  # face heights from the ear keypoint to a vote's centre
FACE_PHONE_SIZE = 1.0  # a phone's longest side, at most, in face heights
POSE_EAR_REACH = 0.5  # head-and-shoulder scales (see Pose.scale)
POSE_PHONE_SIZE = 1.0
FACE_CROP = 4.0  # side of the crop around a face for the second pass, in face heights


@dataclass(frozen=True)
class EarZone:
    """Where a phone held to one ear would be, in frame pixels."""

    x: float
    y: float
    reach: float  # a vote's centre within this distance counts
    max_size: float  # a vote's longest side at most this
    source: str  # "face" or "pose"

    def admits(self, det: Detection, width: int, height: int) -> bool:
        b = det.box
        cx, cy = (b.x0 + b.x1) / 2 * width, (b.y0 + b.y1) / 2 * height
        size = max(b.width * width, b.height * height)
        return bool(np.hypot(cx - self.x, cy - self.y) <= self.reach and size <= self.max_size)


def face_ear_zones(faces: Iterable[Face], width: int, height: int, min_face: float) -> list[EarZone]:
    """Both ears of every face at least ``min_face`` of the frame height tall."""
    zones = []
    for face in faces:
        fh = face.box.height * height
        if face.box.height < min_face or len(face.keypoints) < 6:
            continue
        for kx, ky in (face.keypoints[4], face.keypoints[5]):
            zones.append(EarZone(kx * width, ky * height, FACE_EAR_REACH * fh, FACE_PHONE_SIZE * fh, "face"))
    return zones


def pose_ear_zones(poses: Iterable[Pose], min_presence: float) -> list[EarZone]:
    """Both ears of every pose the model is confident about."""
    zones = []
    for pose in poses:
        if pose.presence < min_presence:
            continue
        s = pose.scale
        for ear in (LEFT_EAR, RIGHT_EAR):
            x, y = (float(v) for v in pose.points[ear])
            zones.append(EarZone(x, y, POSE_EAR_REACH * s, POSE_PHONE_SIZE * s, "pose"))
    return zones


def face_crop(face: Face, width: int, height: int) -> tuple[int, int, int, int] | None:
    """Pixel region of the second pass around a face (FACE_CROP face heights, centred
    a little below the face centre), or None where it would be (nearly) the whole frame."""
    fh = face.box.height * height
    side = fh * FACE_CROP
    cx, cy = face.box.centre[0] * width, face.box.centre[1] * height + 0.2 * fh
    x0, y0 = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
    x1, y1 = int(min(width, cx + side / 2)), int(min(height, cy + side / 2))
    if x1 - x0 < 8 or y1 - y0 < 8 or (x1 - x0) * (y1 - y0) > 0.7 * width * height:
        return None
    return x0, y0, x1, y1


def evidence(scores: Iterable[float]) -> float:
    """Noisy-OR of independent weak votes."""
    miss = 1.0
    for s in scores:
        miss *= 1.0 - min(max(s, 0.0), 1.0)
    return 1.0 - miss


def _weighted_box(votes: list[Detection]) -> Box:
    w = np.array([v.score for v in votes], np.float64)
    boxes = np.array([[v.box.x0, v.box.y0, v.box.x1, v.box.y1] for v in votes], np.float64)
    x0, y0, x1, y1 = (float(v) for v in (boxes * w[:, None]).sum(axis=0) / w.sum())
    return Box(x0, y0, x1, y1).clipped()


def _centre_in(inner: Box, outer: Box) -> bool:
    cx, cy = inner.centre
    return outer.x0 <= cx <= outer.x1 and outer.y0 <= cy <= outer.y1


def phones_at_ears(
    zones: list[EarZone],
    votes: list[Detection],
    found: list[Detection],
    *,
    width: int,
    height: int,
    min_evidence: float,
) -> list[Detection]:
    """A phone for each ear zone whose admitted votes reach ``min_evidence``,
    strongest first; none where a phone was already found at the same place."""
    candidates = []
    for zone in zones:
        near = [v for v in votes if zone.admits(v, width, height)]
        if not near:
            continue
        ev = evidence(v.score for v in near)
        if ev >= min_evidence:
            candidates.append(Detection(PHONE, ev, _weighted_box(near)))
    out: list[Detection] = []
    phones = [d for d in found if d.label == PHONE]
    for cand in sorted(candidates, key=lambda d: -d.score):
        taken = phones + out
        if any(cand.box.iou(p.box) > 0.1 or _centre_in(cand.box, p.box) or _centre_in(p.box, cand.box) for p in taken):
            continue
        out.append(cand)
    return out


def zones_with_hints(zones: list[EarZone], hints: list[Detection], width: int, height: int) -> list[EarZone]:
    """The zones at least one weak whole-frame vote falls in (worth a closer look)."""
    return [z for z in zones if any(z.admits(h, width, height) for h in hints)]
