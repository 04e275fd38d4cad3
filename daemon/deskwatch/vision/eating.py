"""Food or a drink at the mouth, from the same second look as phones.

An object near the face is not eating: on the labelled photos the old rule (food
within 0.75 face heights of the mouth, seen by one detector) called two people
raising wine glasses for a photo "eating". Here a place of the second look
(:mod:`deskwatch.vision.crops`) counts when NanoDet's and CenterNet's best
food-or-drink votes there both reach ``food_confirm`` (the labels may differ: a
doughnut to one is a cake to the other) and it is at the mouth of a person whose
mouth the pose model sees:

- food within ``food_reach`` x the ear-to-ear width of the mouth (a doughnut held
  up to be bitten: 0.35);
- a drink (cup, bottle, wine glass) within ``drink_reach``: at the lips, not a
  glass raised to the chin for a toast (0.25-0.33 on the labelled photos);
- and in both cases reaching down to the mouth: its lower edge at or below the
  line of the mouth. What is eaten or drunk covers the lips or lies below them;
  a thing held wholly above them is at the nose or the eyes (two gold coins over a
  woman's eyes, mirrored, passed for a doughnut 0.42 ear widths above her mouth;
  the doughnuts being eaten reach 0.66-2.1 ear widths below it).

The mouth must also be a face's: inside a face the face detector found (its box grown
by ``MOUTH_IN_FACE_MARGIN`` of its size each way), and what is eaten must reach down to
that face's own mouth too (the face detector's mouth keypoint), not only to the pose's:
with the face cut by the frame's side (a worker at the edge of a wide-angle camera's
picture) the pose put the mouth at the eyes, and the gold coins held over them were a
doughnut eaten (nophone_hand_02 shifted to the frame's right edge, as the file and as a
camera frame: the coins' lower edge 0.2-0.25 face heights above the face's mouth
keypoint, just below the pose's mouth). The pose model always places a whole
body, so on a desk seen from above it put a mouth on the typing hands (a banana there,
phone_desk_05 with sensor noise) or beside a stray face box (a cup, phone_desk_02
tilted 10 degrees), both as 1280x720 frames: two false ``eating`` where nobody's face
was in the picture.

The reported detection keeps NanoDet's label and box; its score is the geometric
mean of the two detectors' scores; its behaviour is ``at_mouth``.
"""

from __future__ import annotations

import math

from deskwatch.domain import DRINK, Box, Detection, Face
from deskwatch.vision.config import PhoneStageConfig
from deskwatch.vision.crops import Place
from deskwatch.vision.pose import LEFT_EAR, MOUTH_LEFT, MOUTH_RIGHT, RIGHT_EAR, Pose

AT_MOUTH = "at_mouth"
FACE_MOUTH = 3  # the mouth among BlazeFace's keypoints (deskwatch.domain.Face)
MOUTH_IN_FACE_MARGIN = 0.25  # of the face box's width and height, each way


def mouth_point(pose: Pose) -> tuple[float, float]:
    """The middle of the pose's mouth corners, in pixels."""
    mx, my = (float(v) for v in pose.points[[MOUTH_LEFT, MOUTH_RIGHT]].mean(axis=0))
    return mx, my


def mouth_of_a_face(pose: Pose, faces: list[Face], width: int, height: int) -> bool:
    """Does the pose's mouth lie in (or just around) a face the face detector found?"""
    return mouth_face(pose, faces, width, height) is not None


def mouth_face(pose: Pose, faces: list[Face], width: int, height: int) -> Face | None:
    """The face the face detector found that the pose's mouth lies in (or just around), the
    one whose centre is nearest where several do; None where it lies in none."""
    mx, my = mouth_point(pose)
    x, y = mx / width, my / height
    around = []
    for face in faces:
        b = face.box
        dx, dy = MOUTH_IN_FACE_MARGIN * b.width, MOUTH_IN_FACE_MARGIN * b.height
        if b.x0 - dx <= x <= b.x1 + dx and b.y0 - dy <= y <= b.y1 + dy:
            around.append(face)
    return min(around, key=lambda f: math.dist(f.box.centre, (x, y)), default=None)


def face_mouth_y(face: Face, height: int) -> float | None:
    """The face detector's own mouth keypoint's height in pixels, or None without keypoints."""
    return face.keypoints[FACE_MOUTH][1] * height if len(face.keypoints) > FACE_MOUTH else None


def mouth_distance(box: Box, pose: Pose, width: int, height: int, min_visibility: float) -> float | None:
    """Distance from the mouth to ``box`` in ear-to-ear widths; None where the pose model
    does not see the mouth (a head turned away, or no head in the frame) and where the box
    ends above the mouth (nothing there reaches the lips: see the module doc)."""
    if min(float(pose.visibility[MOUTH_LEFT]), float(pose.visibility[MOUTH_RIGHT])) < min_visibility:
        return None
    mx, my = mouth_point(pose)
    ears = math.dist(pose.points[LEFT_EAR], pose.points[RIGHT_EAR]) or 0.5 * pose.scale
    x0, y0, x1, y1 = box.x0 * width, box.y0 * height, box.x1 * width, box.y1 * height
    if y1 < my:
        return None
    return math.hypot(max(x0 - mx, 0.0, mx - x1), max(y0 - my, 0.0)) / ears


def food_at_mouth(
    places: list[Place], poses: list[Pose], faces: list[Face], width: int, height: int, cfg: PhoneStageConfig
) -> list[Detection]:
    """Food or drink both detectors see at someone's mouth, strongest first (``faces``: the
    frame's faces, which the mouth must be in)."""
    mouths = [(pose, face) for pose in poses if (face := mouth_face(pose, faces, width, height)) is not None]
    found = []
    for place in places:
        seen, confirm = place.best_nanodet, place.best_centernet
        if seen is None or confirm is None or min(seen.score, confirm.score) < cfg.food_confirm:
            continue
        reach = cfg.drink_reach if seen.label in DRINK else cfg.food_reach
        for pose, face in mouths:
            lips = face_mouth_y(face, height)
            if lips is not None and seen.box.y1 * height < lips:
                continue  # wholly above the face's own mouth, wherever the pose put one
            distance = mouth_distance(seen.box, pose, width, height, cfg.mouth_visibility)
            if distance is not None and distance <= reach:
                found.append(Detection(seen.label, math.sqrt(seen.score * confirm.score), seen.box, AT_MOUTH))
                break
    return sorted(found, key=lambda d: -d.score)
