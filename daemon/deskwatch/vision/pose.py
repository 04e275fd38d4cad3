"""Body pose (MediaPipe BlazePose GHUM full landmark model) on a person box: where the
hands, the ears and the mouth are, for the phone stage (:mod:`deskwatch.vision.crops`).

The landmark model normally gets its region of interest from MediaPipe's own pose
detector; here the region comes from the NanoDet person box instead (one model
fewer): a square, horizontally centred on the box, its top just above the box's
top (where the head is), sized ``max(1.25 x box height, 2 x box width)``. For a
whole body that is MediaPipe's own framing (body centred, 25 % margin); for a
person cut off by the frame's bottom edge (a webcam view: head and shoulders) the
square extends below the frame, as the body does, and the model gets the
proportions it was trained on (tried on the photos: centring the square on a
head-and-shoulders box put the shoulders at the top of the head).

Input ``input_1`` [1, 256, 256, 3] float32 RGB 0..1 (outside the square: black).
Outputs by tensor name: ``Identity`` [1, 195] = 39 landmarks x (x, y, z,
visibility logit, presence logit) in input pixels, the first 33 are the body
landmarks (0 nose, 7/8 left/right ear, 9/10 mouth corners, 11/12 shoulders, 15/16
wrists, 17-22 pinky/index/thumb of the left and right hand); ``Identity_1`` [1, 1] = pose
presence (0..1).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deskwatch.domain import Box, Detection
from deskwatch.vision.imageops import cv2_module
from deskwatch.vision.runtime import Model, check_io

INPUT_SIZE = 256
OUTPUTS = ("Identity", "Identity_1")  # the landmarks, the presence score
LANDMARKS = 33
NOSE, LEFT_EAR, RIGHT_EAR, MOUTH_LEFT, MOUTH_RIGHT, LEFT_SHOULDER, RIGHT_SHOULDER = 0, 7, 8, 9, 10, 11, 12
HANDS = {"left": (15, 17, 19, 21), "right": (16, 18, 20, 22)}  # wrist, pinky, index, thumb
BODY_SCALE = 1.25  # MediaPipe's margin around a whole body
UPPER_BODY_SCALE = 2.0  # square side in box widths: a head-and-shoulders box continues below the frame
TOP_MARGIN = 0.1  # the square starts this share of its side above the box top


@dataclass(frozen=True)
class Pose:
    """Body landmarks of one person, in frame pixels."""

    person: Detection
    points: np.ndarray  # 33 x 2 (x, y) in frame pixels
    visibility: np.ndarray  # 33, 0..1
    presence: float  # the model's confidence that a body is in the square, 0..1

    @property
    def scale(self) -> float:
        """Head-and-shoulders size in pixels: the larger of the shoulder width and the
        nose-to-shoulders distance (one of them stays large whichever way the person turns)."""
        shoulders = self.points[[LEFT_SHOULDER, RIGHT_SHOULDER]]
        width = float(np.linalg.norm(shoulders[0] - shoulders[1]))
        neck = float(np.linalg.norm(self.points[NOSE] - shoulders.mean(axis=0)))
        return max(width, neck, 1.0)

    def head_depth(self, height: int) -> float:
        """How far the nose lies below the top of its person box (in a frame ``height`` pixels
        high), in pose scales. The landmark model is shown the box's square with the head at its
        top, and a body's head is at the top of its box: the nose 0.3-1 scales below it for
        someone upright, up to about 2 with the arms raised above the head (0.1-2.1 on the
        labelled photos and their camera variations). Several scales further down is a head the
        model made up inside the box (arms and hands on a desk, no head in the picture: up to 4.8)."""
        return (float(self.points[NOSE][1]) - self.person.box.y0 * height) / self.scale

    def hand(self, side: str) -> np.ndarray:
        """Centre of one hand (wrist, pinky, index and thumb landmarks)."""
        return self.points[list(HANDS[side])].mean(axis=0)


def pose_square(person: Box, width: int, height: int) -> tuple[float, float, float]:
    """(centre x, centre y, side) in frame pixels of the square the landmark model sees."""
    x0, y0, x1, y1 = person.x0 * width, person.y0 * height, person.x1 * width, person.y1 * height
    side = max(BODY_SCALE * (y1 - y0), UPPER_BODY_SCALE * (x1 - x0), 8.0)
    return (x0 + x1) / 2, y0 - TOP_MARGIN * side + side / 2, side


class PoseEstimator:
    """Runs the landmark model on a person box."""

    def __init__(self, model: Model, reload: Callable[[], Model] | None = None):
        """``reload``: how to load the model again after :meth:`release` (None: it cannot be)."""
        check_io(model, OUTPUTS, size=INPUT_SIZE)
        self._model: Model | None = model
        self._reload = reload
        self.invoke_ms = 0.0  # model time of the last estimate_all()

    @property
    def model(self) -> Model:
        if self._model is None:
            if self._reload is None:
                raise RuntimeError("the pose model was released and cannot be loaded again")
            model = self._reload()
            check_io(model, OUTPUTS, size=INPUT_SIZE)
            self._model = model
        return self._model

    def release(self) -> bool:
        """Drop the model while no person is in view (it is loaded again at the next
        estimate); False if it was already let go or cannot be loaded again."""
        if self._model is None or self._reload is None:
            return False
        self._model = None
        return True

    def estimate(self, image: np.ndarray, person: Detection) -> Pose:
        cv2 = cv2_module()
        h, w = image.shape[:2]
        cx, cy, side = pose_square(person.box, w, h)
        k = INPUT_SIZE / side
        affine = np.array([[k, 0.0, INPUT_SIZE / 2 - cx * k], [0.0, k, INPUT_SIZE / 2 - cy * k]], np.float32)
        if cv2 is not None:
            square = cv2.warpAffine(image, affine, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR, borderValue=0)
        else:  # pragma: no cover - OpenCV is a core dependency
            square = _warp_nearest(image, affine)
        out = self.model.run((square.astype(np.float32) * (1.0 / 255.0))[None])
        self.invoke_ms += self.model.invoke_ms
        raw = out["Identity"].reshape(-1, 5)[:LANDMARKS]
        points = (raw[:, :2] - INPUT_SIZE / 2) / k + np.array([cx, cy], np.float32)
        visibility = 1.0 / (1.0 + np.exp(-np.clip(raw[:, 3], -50, 50)))
        return Pose(person, points, visibility, float(out["Identity_1"].reshape(-1)[0]))

    def estimate_all(self, image: np.ndarray, persons: list[Detection], limit: int) -> list[Pose]:
        """Poses of the ``limit`` largest persons."""
        self.invoke_ms = 0.0
        largest = sorted(persons, key=lambda d: -d.box.area)[:limit]
        return [self.estimate(image, p) for p in largest]


def _warp_nearest(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    k, tx, ty = float(affine[0, 0]), float(affine[0, 2]), float(affine[1, 2])
    grid = (np.arange(INPUT_SIZE, dtype=np.float32) + 0.5) / k
    xs = np.floor(grid - tx / k).astype(int)
    ys = np.floor(grid - ty / k).astype(int)
    out = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), np.uint8)
    vx, vy = (xs >= 0) & (xs < w), (ys >= 0) & (ys < h)
    out[np.ix_(vy, vx)] = image[np.ix_(ys[vy], xs[vx])]
    return out
