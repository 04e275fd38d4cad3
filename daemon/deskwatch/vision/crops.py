"""The phone stage: a second look at each person's hands and head, at full resolution,
by two detectors, and the places where their votes agree.

NanoDet at 416 px sees a 1280x720 frame shrunk about 3x: a phone in the hand is
10-20 px there and its "cell phone" score is noise-level (0.1-0.4, what mugs,
tablets and hands also get). So the body pose of the largest persons gives their
hands and head, and squares of ``crop_factors`` x the pose scale (the
head-and-shoulders size) around each are cut from the full frame: a phone is
60-150 px there. Each crop size is a view of its own, and a phone (or food) must be
confirmed in every one (:func:`agreed`): on the labelled photos a mug passed for a
phone at one crop size and not at the others, held phones at all of them.

Within one crop size, the votes of the whole frame and each crop are grouped by
place (a vote joins the group whose strongest vote it overlaps by IoU >= 0.3):

- NanoDet looks at every crop; its votes at a place add up as a noisy-OR,
  ``1 - prod(1 - score)``: several views seeing a phone at the same place count,
  one stray vote does not;
- CenterNet (:mod:`deskwatch.vision.centernet`) looks only where NanoDet has a
  candidate (a phone place whose evidence reaches ``phone_evidence``, or a food
  vote reaching ``food_confirm``): at the crops holding it and once at the whole
  frame (384 px; at 512 px the whole frame gave the same verdicts on the labelled
  photos and cost a second interpreter). Its best score there is the second,
  independent opinion.

:mod:`deskwatch.vision.phones` and :mod:`deskwatch.vision.eating` turn the places
into verdicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from deskwatch.domain import FOOD_AND_DRINK, Box, Detection
from deskwatch.vision.centernet import CenterNet
from deskwatch.vision.config import PhoneStageConfig
from deskwatch.vision.objects import PHONE, ObjectDetector
from deskwatch.vision.pose import NOSE, Pose, PoseEstimator

PAD_GREY = 114  # outside the frame a crop is flat grey: no edges for a detector to fire on
SAME_PLACE_IOU = 0.3
MIN_CROP_SIDE = 32


@dataclass(frozen=True)
class Crop:
    """A square of the frame in pixels (it may reach past the frame's edges)."""

    kind: str  # "hand" or "head"
    person: int  # index of the pose it belongs to
    x0: int
    y0: int
    side: int

    def box(self, width: int, height: int) -> Box:
        """The crop normalised to the frame and clipped to it (to draw it)."""
        x1, y1 = self.x0 + self.side, self.y0 + self.side
        return Box(self.x0 / width, self.y0 / height, x1 / width, y1 / height).clipped()

    def holds(self, box: Box, width: int, height: int) -> bool:
        """Is the centre of ``box`` (normalised to the frame) inside the crop?"""
        cx, cy = box.centre
        return self.x0 <= cx * width <= self.x0 + self.side and self.y0 <= cy * height <= self.y0 + self.side


def crops_of(poses: Iterable[Pose], factor: float, width: int, height: int) -> list[Crop]:
    """Both hands and the head (nose) of each pose, squares of ``factor`` x the pose scale,
    in a ``width`` x ``height`` frame. A hand the pose model places outside the frame (a
    webcam that sees head and shoulders, hands on the keyboard below) gets no crop: it holds
    nothing the picture shows. The head always gets one (a phone at the ear, food at the mouth)."""
    crops = []
    for i, pose in enumerate(poses):
        side = max(MIN_CROP_SIDE, round(factor * pose.scale))
        for kind, (cx, cy) in (("hand", pose.hand("left")), ("hand", pose.hand("right")), ("head", pose.points[NOSE])):
            if kind == "hand" and not (0 <= cx < width and 0 <= cy < height):
                continue
            crops.append(Crop(kind, i, round(float(cx) - side / 2), round(float(cy) - side / 2), side))
    return crops


def cut(image: np.ndarray, crop: Crop) -> np.ndarray:
    """The crop's pixels, side x side x 3 (grey where it leaves the frame). A crop inside the
    frame is a view of it, not a copy: the detectors only resize it (a person close to the
    camera gives squares of 0.5-1.6 MB, each copied once for NanoDet and once for CenterNet)."""
    h, w = image.shape[:2]
    x0, y0 = max(0, crop.x0), max(0, crop.y0)
    x1, y1 = min(w, crop.x0 + crop.side), min(h, crop.y0 + crop.side)
    if (x0, y0, x1, y1) == (crop.x0, crop.y0, crop.x0 + crop.side, crop.y0 + crop.side):
        return image[y0:y1, x0:x1]
    out = np.full((crop.side, crop.side, 3), PAD_GREY, np.uint8)
    if x1 > x0 and y1 > y0:
        out[y0 - crop.y0 : y1 - crop.y0, x0 - crop.x0 : x1 - crop.x0] = image[y0:y1, x0:x1]
    return out


def to_frame(det: Detection, crop: Crop, width: int, height: int) -> Detection:
    """A detection normalised to the crop, normalised to the whole frame instead."""
    b, s = det.box, crop.side
    box = Box(
        (crop.x0 + b.x0 * s) / width,
        (crop.y0 + b.y0 * s) / height,
        (crop.x0 + b.x1 * s) / width,
        (crop.y0 + b.y1 * s) / height,
    )
    return Detection(det.label, det.score, box.clipped())


@dataclass(frozen=True)
class Vote:
    """One detector's detection in one view (0 = the whole frame, i = the i-th crop)."""

    view: int
    detection: Detection


@dataclass
class Place:
    """The votes of both detectors for one object at one place."""

    nanodet: list[Vote] = field(default_factory=list)
    centernet: list[Vote] = field(default_factory=list)

    @property
    def evidence(self) -> float:
        """NanoDet's votes combined as a noisy-OR, 1 - prod(1 - score), over the best vote
        of each view (two boxes of one view are not two independent looks)."""
        best: dict[int, float] = {}
        for v in self.nanodet:
            best[v.view] = max(best.get(v.view, 0.0), min(max(v.detection.score, 0.0), 1.0))
        miss = 1.0
        for score in best.values():
            miss *= 1.0 - score
        return 1.0 - miss

    @property
    def best_nanodet(self) -> Detection | None:
        return max((v.detection for v in self.nanodet), key=lambda d: d.score, default=None)

    @property
    def best_centernet(self) -> Detection | None:
        return max((v.detection for v in self.centernet), key=lambda d: d.score, default=None)

    @property
    def box(self) -> Box:
        """NanoDet's strongest box there (CenterNet's where NanoDet has none)."""
        best = self.best_nanodet or self.best_centernet
        if best is None:
            raise ValueError("a place without votes")
        return best.box


def places(nanodet: Iterable[Vote], centernet: Iterable[Vote]) -> list[Place]:
    """Votes grouped by place, the strongest vote first: a vote joins the first group
    whose strongest vote it overlaps by IoU >= SAME_PLACE_IOU, else starts one."""
    votes = sorted([(v, True) for v in nanodet] + [(v, False) for v in centernet], key=lambda x: -x[0].detection.score)
    groups: list[tuple[Box, Place]] = []
    for vote, from_nanodet in votes:
        box = vote.detection.box
        place = next((p for anchor, p in groups if box.iou(anchor) >= SAME_PLACE_IOU), None)
        if place is None:
            place = Place()
            groups.append((box, place))
        (place.nanodet if from_nanodet else place.centernet).append(vote)
    return [p for _, p in groups]


@dataclass
class View:
    """The places seen with one crop size."""

    factor: float
    crops: list[Crop] = field(default_factory=list)
    phone_places: list[Place] = field(default_factory=list)
    food_places: list[Place] = field(default_factory=list)
    found: list[Detection] = field(default_factory=list)  # the verdicts on these places (see SecondLook.look)


@dataclass
class Look:
    """What the second look saw in one frame: one view per crop size."""

    poses: list[Pose] = field(default_factory=list)
    views: list[View] = field(default_factory=list)
    centernet_runs: int = 0
    model_ms: float = 0.0

    @property
    def crops(self) -> list[Crop]:
        return [c for v in self.views for c in v.crops]


class SecondLook:
    """Pose -> hand and head crops of each size -> NanoDet on each -> CenterNet where NanoDet has a candidate."""

    def __init__(
        self,
        cfg: PhoneStageConfig,
        objects: ObjectDetector,
        pose: PoseEstimator,
        confirm: CenterNet,
        *,
        food: bool = True,
    ):
        """``food=False`` (no eating rule, e.g. the uk profile): phones only - no food or drink
        votes, and no CenterNet run for a food or drink candidate."""
        self.cfg = cfg
        self.objects, self.pose, self.confirm = objects, pose, confirm
        self.held: tuple[str, ...] = (PHONE, *FOOD_AND_DRINK) if food else (PHONE,)  # what the look is for

    def look(
        self,
        image: np.ndarray,
        persons: list[Detection],
        frame_votes: list[Detection],
        judge: Callable[[View, list[Pose]], list[Detection]],
    ) -> Look:
        """``frame_votes``: the whole-frame pass's phones, food and drink, weak ones included;
        ``judge``: the verdicts on one view's places. The views are looked at one crop size
        after the other, and the look stops at a view with no verdict (every view must agree)."""
        cfg = self.cfg
        out = Look()
        estimated = self.pose.estimate_all(image, persons, cfg.max_persons)
        out.model_ms += self.pose.invoke_ms
        # a pose whose head lies deep inside its person box fits no body there: its head, hands
        # and wrists are made up, and a crop around them turned a pen cap by a hand into a phone
        h = image.shape[0]
        out.poses = [p for p in estimated if p.presence >= cfg.min_presence and p.head_depth(h) <= cfg.max_head_depth]
        frame = [Vote(0, d) for d in frame_votes if d.score >= cfg.vote_threshold and d.label in self.held]
        frame_confirm: list[Vote] | None = None  # CenterNet on the whole frame, run once when first needed
        for factor in cfg.crop_factors:
            view = View(factor, crops_of(out.poses, factor, image.shape[1], image.shape[0]))
            frame_confirm = self._look_with(image, view, frame, frame_confirm, out)
            view.found = judge(view, out.poses)
            out.views.append(view)
            if not view.found:
                break
        return out

    def found(self, look: Look) -> list[Detection]:
        """What every view of the look found (see :func:`agreed`)."""
        if len(look.views) < len(self.cfg.crop_factors):
            return []  # a view found nothing: the look stopped there
        return agreed([v.found for v in look.views])

    def _look_with(
        self, image: np.ndarray, view: View, frame: list[Vote], frame_confirm: list[Vote] | None, out: Look
    ) -> list[Vote] | None:
        """Fill ``view``'s places: NanoDet on its crops, CenterNet where it has a candidate."""
        cfg, h, w = self.cfg, image.shape[0], image.shape[1]
        nanodet = list(frame)
        # each crop is cut when a detector looks at it and dropped after: a person close to
        # the camera gives squares of 0.5-1.6 MB each, 6 of them a view (peak RSS, issue 13)
        for i, crop in enumerate(view.crops, start=1):
            found = self.objects.votes(cut(image, crop), self._labels(crop), cfg.vote_threshold)
            out.model_ms += self.objects.invoke_ms
            nanodet += [Vote(i, to_frame(d, crop, w, h)) for d in found]
        phone_n = [v for v in nanodet if v.detection.label == PHONE]
        food_n = [v for v in nanodet if v.detection.label in FOOD_AND_DRINK]
        candidates = [p.box for p in places(phone_n, []) if p.evidence >= cfg.phone_evidence]
        candidates += [v.detection.box for v in food_n if v.detection.score >= cfg.food_confirm]
        centernet: list[Vote] = []
        if candidates:
            for i, crop in enumerate(view.crops, start=1):
                if any(crop.holds(b, w, h) for b in candidates):
                    found = self.confirm.detect(cut(image, crop), self._labels(crop), cfg.vote_threshold)
                    out.model_ms += self.confirm.model.invoke_ms
                    out.centernet_runs += 1
                    centernet += [Vote(i, to_frame(d, crop, w, h)) for d in found]
            if frame_confirm is None:
                found = self.confirm.detect(image, self.held, cfg.vote_threshold)
                out.model_ms += self.confirm.model.invoke_ms
                out.centernet_runs += 1
                frame_confirm = [Vote(0, d) for d in found]
            centernet += frame_confirm
        view.phone_places = places(phone_n, [v for v in centernet if v.detection.label == PHONE])
        view.food_places = places(food_n, [v for v in centernet if v.detection.label != PHONE])
        return frame_confirm

    def _labels(self, crop: Crop) -> tuple[str, ...]:
        """Phones everywhere; food and drink (when looked for) only at the head, where the mouth is."""
        return self.held if crop.kind == "head" else (PHONE,)


def agreed(per_view: list[list[Detection]]) -> list[Detection]:
    """The detections every view found at the same place (IoU >= SAME_PLACE_IOU; a phone
    matches a phone, food or drink matches food or drink), each with the lowest of its
    scores: a verdict must not depend on the exact crop size."""
    if not per_view:
        return []
    out = []
    for det in per_view[0]:
        same = [
            [d for d in other if (d.label == PHONE) == (det.label == PHONE) and d.box.iou(det.box) >= SAME_PLACE_IOU]
            for other in per_view[1:]
        ]
        matches = [max(found, key=lambda d: d.score, default=None) for found in same]
        if all(m is not None for m in matches):
            low = min([det, *[m for m in matches if m is not None]], key=lambda d: d.score)
            out.append(Detection(det.label, low.score, det.box, det.behaviour))
    return sorted(out, key=lambda d: -d.score)
