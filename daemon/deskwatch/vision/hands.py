"""Hands at the desk: the presence check's last look before a frame is called an empty desk.

A desk camera often sees only the worker's hands and forearms: typing, writing, holding a
cup, seen from above. NanoDet and CenterNet were trained on whole people: on the labelled
photos of hands on a table they score no person (NanoDet) or 0.20-0.44 (CenterNet, where the
empty scenes reach 0.27), so such a frame was "nobody at the desk" -- an ``away_from_desk``
accusation against a worker whose hands are on the keyboard.

MediaPipe Hands answers the question it was made for, in two steps (both models unmodified,
from the same mediapipe wheel as the pose model; ``models/manifest.yaml``):

1. the palm detector (``palm_detection_full``, 192 px) on the whole frame, letterboxed: palms
   with a box and seven keypoints; in a landscape frame also on its left and right squares
   (below);
2. on each of the best palms, the square MediaPipe's hand tracking cuts around it (turned so
   the wrist points down, moved half a palm towards the fingers, 2.6 x the palm) goes through
   the hand landmark model (``hand_landmark_lite``, 224 px), whose presence score says whether
   a hand is in it. The palm detector alone calls a phone lying on closed laptops a palm (0.79);
   the landmark model gives that square 0.00.

On ``../shared/testdata/photos`` and 13 camera variations of each (``deskwatch_dev.variants``):
the six scenes without anybody score at most 0.01, a pair of hands on a café table 0.99 in
every view, a hand holding a phone on a tripod 0.65-0.83 in 11 of 13 views (in the other two
no palm is found).

The landmark model is much surer of some hands than of their mirror images (a hand typing,
seen from the side: 0.05, mirrored 0.91), and a hand either way round is a hand: a square
under the bar is asked again mirrored, and the higher score counts. Over those photos' 1196
views of people (files and 1280x720 frames) a hand is found in 823 instead of 800; in 48 views
of parts of four photos with hands in view (a hand holding a tablet, typing seen from the
side) in 29 instead of 26; the empty scenes' 156 views stay at most 0.32 (0.316 before).

A 1280x720 frame letterboxed whole into 192 px is shrunk 6.7 times: a hand at the edge of
the frame, or only its fingers over a keyboard, is a few pixels to the palm detector. A
landscape frame is therefore also looked at as its left and right squares (720 px into 192,
1.9 times the detail), and the palms found there that the whole frame did not find are
checked too: over the same views a hand is found in 876 of 1196 views of people instead of
823, in 34 of the 48 views of parts instead of 29 (fingertips over a keyboard among them);
the empty scenes' highest score 0.354. Two more palm runs (~11 ms each here), on the frames
where the check looks.

Where neither finds a hand, the same looks are taken again with the frame's shadows lifted
(:func:`lifted`: each pixel's luma to its square root, colours kept; applied to the 192 px
squares and the hand squares the models are given, not to the frame). A camera at a home desk
gives hands the palm detector misses as they are: in front of a bright window (the camera
exposes for the window, the hands a silhouette), under a Pi NoIR camera's IR light, through a
wide-angle lens, at the frame's edge (``deskwatch_dev.variants --home``: over ../shared's 52
photos the worker's hands alone made 21 false ``away_from_desk`` in 1040 views). Looked at again
so, 6 of 13 such views of hands at a desk were found (0.57-0.95), and one known miss of the
ordinary variations (nophone_hand_04 brighter, a 1280x720 frame: 0.92). The empty scenes over
their 360 views (ordinary, harsh and home variations, both sizes) gain one hand (0.53, empty_03
with noise of sigma 16): one missed ``away_from_desk``, where the others were false ones. It
costs an empty desk's frame the hand check's time again (nothing where a hand was found at once).

The two interpreters hold ~24 MB together, about what the phone stage's pose model holds, and
the two are never held at once: the pose model is let go before the hands are looked for
(``Vision.let_go_of_pose``), and the hand models are loaded when a frame first needs them and
kept while the desk stays empty (the rest of the burst, the confirming burst, the next away
scan), then let go (:meth:`HandCheck.release`) before the pose model is loaded again for the
next person (a profile without the phone stage holds no pose model: there they stay once
loaded). Loading them for each frame again cost an empty-desk frame 6-23 ms here (palm
detector alone, or both; 53 instead of 30 ms a frame with palms in view), and a Pi's slower
cores pack the weights more slowly still (not measured: no Pi here).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from deskwatch.domain import Box
from deskwatch.vision.imageops import cv2_module, letterbox
from deskwatch.vision.memory import trim_heap
from deskwatch.vision.runtime import Model, ModelStore, check_io

PALM_MODEL = "palm_detection_full.tflite"
HAND_MODEL = "hand_landmark_lite.tflite"
PALM_SIZE = 192
HAND_SIZE = 224
PALM_MIN_SCORE = 0.3  # palms below this are not worth a landmark run
MAX_PALMS = 3  # the best few palms of one look are checked (two hands, and one spare)
TILE_ASPECT = 1.2  # a frame this much wider than high is also looked at as its left and right squares
HAND_SCALE = 2.6  # MediaPipe's hand square: 2.6 x the palm's longer side ...
HAND_SHIFT = 0.5  # ... its centre half a palm towards the fingers
WRIST, MIDDLE_BASE = 0, 2  # palm keypoints that give the hand's direction
IO = {
    PALM_MODEL: (("Identity", "Identity_1"), PALM_SIZE),
    HAND_MODEL: (("Identity_1",), HAND_SIZE),
}  # outputs read, input side


def palm_anchors() -> np.ndarray:
    """The palm detector's 2016 anchor centres (x, y) in 0..1 of its input: MediaPipe's SSD
    anchors for this model (strides 8, 16, 16, 16; fixed anchor size): 24x24 cells with 2
    anchors each, then 12x12 cells with 6 (the three stride-16 layers share their cells)."""
    centres = []
    for stride, per_cell in ((8, 2), (16, 6)):
        cells = PALM_SIZE // stride
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, per_cell, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


ANCHORS = palm_anchors()


@dataclass(frozen=True)
class Palm:
    """One palm the detector found, in frame pixels."""

    score: float
    centre: tuple[float, float]
    size: tuple[float, float]  # width, height
    wrist: tuple[float, float]
    middle_base: tuple[float, float]

    def covers(self, x: float, y: float) -> bool:
        """Whether (x, y) lies in this palm's box: anchors overlap, and a palm found first
        stands for the boxes its neighbours find of itself."""
        return abs(x - self.centre[0]) < self.size[0] / 2 and abs(y - self.centre[1]) < self.size[1] / 2


@dataclass(frozen=True)
class Hand:
    """A hand the landmark model confirmed: ``box`` is its square's bounds, normalised."""

    score: float  # the landmark model's presence score, 0..1
    box: Box


def decode_palms(
    regressors: np.ndarray, logits: np.ndarray, scale: float, pad: tuple[float, float], limit: int = MAX_PALMS
) -> list[Palm]:
    """The best palms (score >= PALM_MIN_SCORE, one per place) from the detector's raw outputs
    ([2016, 18] and [2016]), mapped from the letterboxed input back to frame pixels
    (``scale``, ``pad``: as :func:`letterbox` returned them)."""
    scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100.0, 100.0)))
    palms: list[Palm] = []
    for i in np.argsort(-scores):
        if scores[i] < PALM_MIN_SCORE or len(palms) >= limit:
            break
        row = regressors[i]
        # the outputs are input pixels from the anchor's centre; back through the letterbox
        offset = ANCHORS[i] * PALM_SIZE - np.array(pad, np.float32)
        cx, cy = (row[:2] + offset) / scale
        width, height = float(row[2]) / scale, float(row[3]) / scale
        if width <= 0 or height <= 0:
            continue
        if any(p.covers(cx, cy) for p in palms):
            continue
        points = (row[4:18].reshape(7, 2) + offset) / scale
        wrist, middle = points[WRIST], points[MIDDLE_BASE]
        palms.append(
            Palm(
                float(scores[i]),
                (float(cx), float(cy)),
                (width, height),
                (float(wrist[0]), float(wrist[1])),
                (float(middle[0]), float(middle[1])),
            )
        )
    return palms


def hand_square(palm: Palm) -> tuple[tuple[float, float], float, float]:
    """(centre, side, angle in radians) of the square MediaPipe's hand tracking cuts around a
    palm: turned so that the wrist -> middle finger base line points up, moved HAND_SHIFT of
    the palm's height towards the fingers, HAND_SCALE x the palm's longer side."""
    (wx, wy), (mx, my) = palm.wrist, palm.middle_base
    angle = math.pi / 2 - math.atan2(-(my - wy), mx - wx)
    angle -= 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))  # into [-pi, pi)
    shift = -HAND_SHIFT * palm.size[1]  # along the square's own "up"
    cx = palm.centre[0] - shift * math.sin(angle)
    cy = palm.centre[1] + shift * math.cos(angle)
    return (cx, cy), HAND_SCALE * max(palm.size), angle


class HandCheck:
    """Palms, then a hand presence score on each palm's square (see the module's docstring)."""

    def __init__(self, store: ModelStore, threshold: float):
        """``threshold``: the presence score a hand needs (MediaPipe's own default is 0.5).
        The two models are verified now, so a missing file fails the start."""
        self.store, self.threshold = store, threshold
        store.check(PALM_MODEL)
        store.check(HAND_MODEL)
        self.model_ms = 0.0  # model time of the last find()
        self._held: dict[str, Model] = {}  # the models loaded since the last release()

    def find(self, image: np.ndarray) -> list[Hand]:
        """Hands in a frame (RGB uint8), the surest first. The models it loads stay until
        :meth:`release`."""
        self.model_ms = 0.0
        hands = self._hands(image, lift=False)
        if not hands:  # a second look with the shadows lifted (see the module's docstring)
            hands = self._hands(image, lift=True)
        return hands

    def _hands(self, image: np.ndarray, *, lift: bool) -> list[Hand]:
        """Hands in a frame, the surest first; ``lift``: the models see it with its shadows
        lifted (:func:`lifted`, applied to what each model is given, never to the whole frame)."""
        palms = self._palms(self._model(PALM_MODEL), image, lift)
        if not palms:
            return []
        hands = []
        h, w = image.shape[:2]
        hand_model = self._model(HAND_MODEL)
        for palm in palms:
            (cx, cy), side, angle = hand_square(palm)
            square = _turned_square(image, (cx, cy), side, angle)
            score = self._presence(hand_model, lifted(square) if lift else square)
            if score >= self.threshold:
                half = side / 2
                box = Box((cx - half) / w, (cy - half) / h, (cx + half) / w, (cy + half) / h).clipped()
                if box.area > 0:
                    hands.append(Hand(score, box))
        return sorted(hands, key=lambda hand: -hand.score)

    def release(self) -> bool:
        """Let go of the hand models (their interpreters' memory back to the kernel); the next
        :meth:`find` loads and verifies them again. False when none was held."""
        if not self._held:
            return False
        for file in self._held:
            self.store.forget(file)
        self._held.clear()
        trim_heap()
        return True

    def _model(self, file: str) -> Model:
        """The model, loaded (verified against the manifest) if it is not held yet."""
        model = self._held.get(file)
        if model is None:
            model = self.store.load(file)
            outputs, size = IO[file]
            check_io(model, outputs, size=size)
            self._held[file] = model
        return model

    def _palms(self, palm_model: Model, image: np.ndarray, lift: bool = False) -> list[Palm]:
        """Palms in the whole frame; in a landscape frame also those its left and right squares
        show that the whole frame did not (see the module's docstring)."""
        h, w = image.shape[:2]
        palms = self._palms_in(palm_model, image, 0, lift)
        if w >= TILE_ASPECT * h:
            for x0 in (0, w - h):
                found = self._palms_in(palm_model, image[:, x0 : x0 + h], x0, lift)
                palms += [p for p in found if not any(q.covers(*p.centre) for q in palms)]
        return palms

    def _palms_in(self, palm_model: Model, image: np.ndarray, x0: int, lift: bool = False) -> list[Palm]:
        """The best palms of ``image`` (the frame, or a part of it starting at column ``x0``),
        in frame pixels."""
        square, scale, pad_x, pad_y = letterbox(image, PALM_SIZE, area=True)  # bilinear from 1280 px: aliasing
        if lift:
            square = lifted(square)
        out = palm_model.run((square.astype(np.float32) * (1.0 / 255.0))[None])
        self.model_ms += palm_model.invoke_ms
        # a part's pixel x lands at x * scale + pad_x; its frame pixel is x + x0
        return decode_palms(out["Identity"][0], out["Identity_1"][0, :, 0], scale, (pad_x - x0 * scale, pad_y))

    def _presence(self, hand_model: Model, square: np.ndarray) -> float:
        """The landmark model's presence score for a hand square, or for its mirror image
        when that is higher and the square itself is under the bar (see the module's docstring)."""
        pixels = square.astype(np.float32) * (1.0 / 255.0)
        score = 0.0
        for view in (pixels, pixels[:, ::-1]):
            score = max(score, float(hand_model.run(np.ascontiguousarray(view)[None])["Identity_1"].ravel()[0]))
            self.model_ms += hand_model.invoke_ms
            if score >= self.threshold:
                break
        return score


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def lifted(square: np.ndarray) -> np.ndarray:
    """A model's input (RGB uint8) with its shadows lifted and its colours kept: each pixel
    scaled so that its luma goes to the square root of what it was (0.04 -> 0.2, 0.25 -> 0.5;
    white stays white)."""
    pixels = square.astype(np.float32) * (1.0 / 255.0)
    luma = np.maximum(pixels @ _LUMA, 1e-3)
    return np.clip(pixels * (255.0 / np.sqrt(luma))[..., None], 0, 255).astype(np.uint8)  # y / sqrt(y) = sqrt(y)


def _turned_square(image: np.ndarray, centre: tuple[float, float], side: float, angle: float) -> np.ndarray:
    """The square (``side`` pixels, turned by ``angle``) around ``centre``, warped to HAND_SIZE."""
    cv2 = cv2_module()
    turn = cv2.getRotationMatrix2D(centre, math.degrees(angle), HAND_SIZE / side)
    turn[0, 2] += HAND_SIZE / 2 - centre[0]
    turn[1, 2] += HAND_SIZE / 2 - centre[1]
    return cv2.warpAffine(  # type: ignore[no-any-return]
        image, turn, (HAND_SIZE, HAND_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )
