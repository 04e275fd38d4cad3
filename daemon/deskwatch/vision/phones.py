"""Phones: a phone both detectors see, and where it is on the body.

A finding needs a phone *seen*, never a hand in a pose. A place of the second look
(:mod:`deskwatch.vision.crops`) is a phone when NanoDet's votes there add up to at
least ``phone_evidence`` (noisy-OR), CenterNet scores it at least ``phone_confirm``,
and the geometric mean of the two - the phone's reported score - reaches
``phone_min_score``; :func:`deskwatch.vision.crops.agreed` then keeps the phones
confirmed with every crop size, at their lowest score. NanoDet's votes are only
where it rates the phone above a drink at the same anchor
(:data:`deskwatch.vision.objects.PHONE_RIVALS`: a travel mug in a tilted camera frame
once scored 0.497 as a phone in hand). On the 52 labelled photos (2026-11-29) the
phones found scored 0.43-0.75 and the photos without a phone at most 0.40 (a mug held
at the chest); no hard negative passed (a hand at the cheek, coins at the eyes, a
book, a tablet, a mug). Since 2026-11-30 also over 13 camera variations of each photo,
as files and as 1280x720 frames: no phone candidate at all on a view without a phone
in use, even at ``phone_min_score`` 0.05.

Its behaviour comes from the body pose of a person it fits (scale: the pose's
head-and-shoulders size, :attr:`Pose.scale`):

- ``at_ear``: its centre within ``ear_reach`` x scale of an ear, above the
  shoulder line (a call);
- ``in_hand``: its box within ``hand_reach`` x scale of a hand landmark (wrist,
  pinky, index or thumb: texting, reading);
- ``visible``: anywhere else (lying on the desk, or nobody's pose near it).

A phone longer than ``max_phone_size`` x scale is too big for that person's hand
(a partly visible person's pose is unreliable) and is not attributed to them.
"""

from __future__ import annotations

import math

from deskwatch.domain import Box, Detection
from deskwatch.vision.config import PhoneStageConfig
from deskwatch.vision.crops import Place
from deskwatch.vision.objects import PHONE
from deskwatch.vision.pose import HANDS, LEFT_EAR, LEFT_SHOULDER, RIGHT_EAR, RIGHT_SHOULDER, Pose

AT_EAR, IN_HAND, VISIBLE = "at_ear", "in_hand", "visible"
HAND_POINTS = HANDS["left"] + HANDS["right"]  # wrist, pinky, index and thumb of both hands


def phone_score(place: Place, cfg: PhoneStageConfig) -> float | None:
    """The phone's score where both detectors see it enough, else None."""
    confirm = place.best_centernet
    evidence = place.evidence
    if confirm is None or evidence < cfg.phone_evidence or confirm.score < cfg.phone_confirm:
        return None
    score = math.sqrt(evidence * confirm.score)
    return score if score >= cfg.phone_min_score else None


def _gap(box: Box, x: float, y: float) -> float:
    """Distance from a point to a box (0 inside), in the units of both."""
    return math.hypot(max(box.x0 - x, 0.0, x - box.x1), max(box.y0 - y, 0.0, y - box.y1))


def behaviour(box: Box, poses: list[Pose], width: int, height: int, cfg: PhoneStageConfig) -> str:
    """at_ear, in_hand or visible (see the module doc)."""
    px = Box(box.x0 * width, box.y0 * height, box.x1 * width, box.y1 * height)
    cx, cy = px.centre
    size = max(px.width, px.height)
    for pose in poses:
        scale = pose.scale
        if size > cfg.max_phone_size * scale:
            continue
        shoulder_y = float(pose.points[[LEFT_SHOULDER, RIGHT_SHOULDER], 1].mean())
        ear = min(
            math.hypot(cx - float(pose.points[e][0]), cy - float(pose.points[e][1])) for e in (LEFT_EAR, RIGHT_EAR)
        )
        if ear <= cfg.ear_reach * scale and cy <= shoulder_y:
            return AT_EAR
        hand = min(_gap(px, float(x), float(y)) for x, y in pose.points[list(HAND_POINTS)])
        if hand <= cfg.hand_reach * scale:
            return IN_HAND
    return VISIBLE


def confirmed_phones(
    places: list[Place], poses: list[Pose], width: int, height: int, cfg: PhoneStageConfig
) -> list[Detection]:
    """The phones both detectors see, strongest first, each with its behaviour."""
    found = []
    for place in places:
        score = phone_score(place, cfg)
        if score is not None:
            found.append(Detection(PHONE, score, place.box, behaviour(place.box, poses, width, height, cfg)))
    return sorted(found, key=lambda d: -d.score)
