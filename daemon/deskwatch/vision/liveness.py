"""Liveness: a live face, or a picture of one held up to the camera?

A photo on a screen, a print or a phone re-captured by the camera leaves two kinds of
trace that skin does not:

* **moiré**: the screen's pixel grid or the print's halftone dots, sampled again by
  the camera's pixel grid, put sharp isolated peaks into the spectrum of the face
  region (skin, hair and eyes give a smooth spectrum). ``moire_score`` is the height
  of the highest peaks above their neighbourhood, in log magnitude, with the JPEG 8x8
  block grid's own harmonics left out;
* **a frame around the face**: a phone's bezel, a print's edge or a monitor's border
  give long straight edges close around the head on three or four sides, parallel to
  the face; a live head has its body below it and rarely straight edges that close.

A face is a *spoof* when the moiré is strong on its own, or when the frame is there
and the moiré is at least moderate. The thresholds were set on real faces (the
repository's photos and registry-package photos, also re-encoded, noised, sharpened
and darkened) with a margin: none of those is rejected. A frame on all four sides needs
less moiré than one on three: a live head before a door frame, a shelf or a window
has three close straight edges often enough (17 of 510 real face views, 2026-11-30:
the photos of ../shared and the repo as files and as 1280x720 frames, with sensor noise
of sigma 0-24) and sensor noise lifts its moiré score (up to 1.46 there, 1.69 without
a frame), while none had four; at the former single threshold of 1.4 three of those views
were called pictures: the worker away, and a presentation attack. Four sides around a live
head (a door frame behind it and a laptop lid below the face, drawn around the faces of the
labelled photos: ``deskwatch_dev.framedfaces``, synthetic) were found in 30 of 136 views; with
sensor noise of sigma 2-16, 1.6-3.1 % of their frames were called pictures, and none of 450
camera bursts reported a presentation attack or the worker away (a finding needs the picture
in ``policy.persistence`` of a burst's frames, and the noise that lifts the score changes from
frame to frame; a face whose own texture scores above 1.4 in every frame would not be saved by
that, and none of these did). The attack images used to
measure what is caught are synthetic (see tools/deskwatch_dev/attacks.py): no real
screen or paper was photographed here.

Faces smaller than ``min_face_px`` are not judged (``live`` stays None): the cues need
pixels. A spoof never counts as the worker being present and is not identity-checked.

**A picture on the wall.** A poster, a framed photo or a TV behind the worker shows a face
that looks at the camera: the policy took it for a second person facing the screen. Printed
large and seen from across the room it has no moire to give it away; what it has is its
edges. Where a frame holds somebody besides a face (another face, or a person box not around
it), that face of at least ``FRAMED_MIN_FACE_PX`` is looked at for straight edges on all four
sides (``Face.framed``), whatever its moire: the policy does not count such a face as anybody
beside the worker (it is blurred like a bystander's), and never calls it a presentation
attack - hanging a photo is no trick. Measured on synthetic pictures (``deskwatch_dev.pictures``,
2026-12-01: 7 portraits hung behind the one person, or nobody, of 16 labelled photos, as the
file and as a 1280x720 frame), the extra_person findings they made, before and after:

- a framed print, the face 10 % / 14 % of the frame's height: 82 / 170 -> 38 / 50 views (of 468 / 453);
- a borderless poster, its own edge against the wall: 86 / 196 -> 74 / 164 (of 470 / 459): an
  edge of the poster is often too faint or too far to be seen on all four sides; the selftest
  warns of any face looking at the camera beside the worker's (``check_framing``).

No real second person is lost to it: the live faces of the 510 views above had a frame on at
most three sides, and the 13 camera variations of the repo's and ../shared's photos
(``deskwatch_dev.variants``) find the same 197 and 231 true extra_person with it as without.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import cv2
import numpy as np

from deskwatch.domain import Face
from deskwatch_contract.configfile import setting

MOIRE_WINDOW = 128  # pixels of the face region analysed, at the camera's own resolution
MOIRE_BAND = (0.1, 0.5)  # cycles per pixel: below it the face's own shape, above Nyquist
FRAME_FACE_PX = 64  # the frame search sees the face this wide
FRAME_REACH = 3.0  # face widths around the face centre searched for a frame
FRAMED_MIN_FACE_PX = 24  # smaller faces are not looked at for a picture frame (box height, pixels)


@dataclass(frozen=True)
class LivenessConfig:
    """The presentation-attack check: a face on a screen, a print or a phone is not a person."""

    enabled: bool = setting(
        True,
        doc="Check every face of at least min_face_px for the traces a re-captured picture leaves (moire of a screen's pixels or a print's dots, a bezel or paper edge around the face). A face that fails counts as nobody: not the worker, not present, not identity-checked.",
    )
    moire_threshold: float = setting(
        1.8,
        doc="Moire score (height of the sharpest spectral peaks of the face region, log scale) above which a face is a picture on its own. Real faces here: at most 1.60, also re-encoded, noised, sharpened and darkened.",
        minimum=0.5,
        maximum=10.0,
    )
    frame_moire_threshold: float = setting(
        1.4,
        doc="Lower moire score that is enough when straight edges frame the face on all four sides (a phone bezel, a print's edge, a monitor).",
        minimum=0.5,
        maximum=10.0,
    )
    partial_frame_moire_threshold: float = setting(
        1.55,
        doc="Moire score that is enough when straight edges frame the face on frame_sides sides but not all four: a live head before a door frame or a shelf has three such edges often enough, and real faces with them scored up to 1.46 under sensor noise.",
        minimum=0.5,
        maximum=10.0,
    )
    frame_sides: int = setting(
        3,
        doc="Fewest sides of the face (left, right, above, below) with a long straight edge close by that make a frame.",
        minimum=2,
        maximum=4,
    )
    min_face_px: int = setting(
        60,
        doc="Faces smaller than this (pixels, box height) are not checked: the cues need pixels.",
        minimum=32,
        maximum=1000,
    )


@dataclass(frozen=True)
class LivenessCues:
    moire: float
    frame_sides: int | None  # None: not looked for (the moire alone decided)

    def spoof(self, cfg: LivenessConfig) -> bool:
        sides = self.frame_sides or 0
        if sides >= 4:
            framed = self.moire > cfg.frame_moire_threshold
        else:
            framed = sides >= cfg.frame_sides and self.moire > cfg.partial_frame_moire_threshold
        return self.moire > cfg.moire_threshold or framed

    def describe(self) -> str:
        frame = "" if self.frame_sides is None else f", straight edges on {self.frame_sides} side(s) of the face"
        return f"moire {self.moire:.2f}{frame}"


def _square(box: tuple[int, int, int, int], side: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (
        max(0, int(cx - side / 2)),
        max(0, int(cy - side / 2)),
        min(width, int(cx + side / 2)),
        min(height, int(cy + side / 2)),
    )


def moire_score(image: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Height of the strongest isolated spectral peaks (log magnitude above the local
    median) of the face region's luminance; 0.0 when the region is too small."""
    h, w = image.shape[:2]
    side = min(max(box[2] - box[0], box[3] - box[1]), MOIRE_WINDOW)
    x0, y0, x1, y1 = _square(box, side, w, h)
    n = min(x1 - x0, y1 - y0)
    n -= n % 8
    if n < 48:
        return 0.0
    patch = image[y0 : y0 + n, x0 : x0 + n].astype(np.float32)
    grey = patch @ np.array([0.299, 0.587, 0.114], np.float32)
    grey -= cv2.GaussianBlur(grey, (0, 0), 3)
    window = np.outer(np.hanning(n), np.hanning(n)).astype(np.float32)
    spectrum = np.log(np.abs(np.fft.fftshift(np.fft.fft2(grey * window))) + 1e-3).astype(np.float32)
    peaks = spectrum - cv2.medianBlur(spectrum, 5)
    return float(np.sort(peaks[_band_mask(n)])[-3:].mean())


_masks: dict[int, np.ndarray] = {}


def _band_mask(n: int) -> np.ndarray:
    """The frequencies looked at: the band, minus the axes (window leakage) and the
    JPEG block grid's harmonics (k/8, l/8)."""
    mask = _masks.get(n)
    if mask is None:
        f = (np.arange(n) - n // 2) / n
        fu, fv = np.meshgrid(f, f)
        r = np.hypot(fu, fv)
        mask = (r > MOIRE_BAND[0]) & (r < MOIRE_BAND[1])
        near = 1.6 / n
        mask &= (np.abs(fu) >= near) & (np.abs(fv) >= near)
        grid = np.arange(-4, 5) / 8
        on_u = np.min(np.abs(fu[..., None] - grid), axis=-1) < near
        on_v = np.min(np.abs(fv[..., None] - grid), axis=-1) < near
        mask &= ~(on_u & on_v)
        _masks[n] = mask
    return mask


class GreyFrame:
    """The frame's luma, made once when a face first needs it: every face the frame search
    looks at in a frame (a group, a picture beside the worker) shares one conversion."""

    def __init__(self, image: np.ndarray):
        self.image = image
        self._grey: np.ndarray | None = None

    def __call__(self) -> np.ndarray:
        if self._grey is None:
            self._grey = cv2.cvtColor(self.image, cv2.COLOR_RGB2GRAY)
        return self._grey


def frame_sides(image: np.ndarray, box: tuple[int, int, int, int], grey: GreyFrame | None = None) -> int:
    """On how many sides (left, right, above, below) of the face a long straight edge,
    parallel to the image axes and spanning the face's centre line, runs close by
    (``grey``: the frame's luma, shared by the faces of one frame)."""
    x0, y0, x1, y1 = box
    face_w = max(1.0, float(x1 - x0))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    scale = FRAME_FACE_PX / face_w
    reach = FRAME_REACH * face_w
    n = int(2 * reach * scale)
    m = np.array([[scale, 0, -(cx - reach) * scale], [0, scale, -(cy - reach) * scale]], np.float32)
    luma = (grey or GreyFrame(image))()
    view = cv2.warpAffine(luma, m, (n, n), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    edges = cv2.Canny(cv2.GaussianBlur(view, (0, 0), 1.0), 40, 120)
    lines = cv2.HoughLinesP(
        edges,
        1,
        np.pi / 180,
        threshold=FRAME_FACE_PX // 2,
        minLineLength=FRAME_FACE_PX,
        maxLineGap=int(0.08 * FRAME_FACE_PX) + 2,
    )
    if lines is None:
        return 0
    c = n / 2
    sides: set[str] = set()
    for xa, ya, xb, yb in np.asarray(lines, dtype=np.float64).reshape(-1, 4):
        angle = abs(math.degrees(math.atan2(yb - ya, xb - xa))) % 180
        if 70 < angle < 110 and min(ya, yb) < c < max(ya, yb):
            d = ((xa + xb) / 2 - c) / FRAME_FACE_PX
            if 0.55 < abs(d) < 2.5:
                sides.add("left" if d < 0 else "right")
        elif (angle < 20 or angle > 160) and min(xa, xb) < c < max(xa, xb):
            d = ((ya + yb) / 2 - c) / FRAME_FACE_PX
            if 0.7 < abs(d) < 3.0:
                sides.add("above" if d < 0 else "below")
    return len(sides)


def face_box_px(face: Face, width: int, height: int) -> tuple[int, int, int, int]:
    b = face.box
    return (int(b.x0 * width), int(b.y0 * height), int(b.x1 * width), int(b.y1 * height))


class LivenessChecker:
    """Sets ``live`` on every face of at least ``min_face_px`` (False: a picture of a face)."""

    def __init__(self, cfg: LivenessConfig):
        self.cfg = cfg
        self.last_ms = 0.0  # time of the last check (all faces)

    def cues(self, image: np.ndarray, face: Face, grey: GreyFrame | None = None) -> LivenessCues | None:
        """The cues of one face, or None when it is too small to judge."""
        h, w = image.shape[:2]
        box = face_box_px(face, w, h)
        if box[3] - box[1] < self.cfg.min_face_px:
            return None
        moire = round(moire_score(image, box), 3)
        # the frame only matters between the framed and the moire-alone thresholds: most live
        # faces skip it
        lowest = min(self.cfg.frame_moire_threshold, self.cfg.partial_frame_moire_threshold)
        undecided = lowest < moire <= self.cfg.moire_threshold
        return LivenessCues(moire, frame_sides(image, box, grey) if undecided else None)

    def check(self, image: np.ndarray, faces: list[Face], beside: list[bool] | None = None) -> list[Face]:
        """``faces`` with ``live`` set; ``beside[i]``: the frame holds somebody besides face
        ``i`` (another face, or a person box that is not around it), so that face, unless
        caught as a spoof, is also looked at for a frame on four sides (``Face.framed``)."""
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        grey = GreyFrame(image)
        out = []
        for i, face in enumerate(faces):
            cues = self.cues(image, face, grey)
            if cues is not None:
                spoof = cues.spoof(self.cfg)
                face = replace(face, live=not spoof, spoof_cues=cues.describe() if spoof else "")
            if beside is not None and beside[i] and face.live is not False:
                box = face_box_px(face, w, h)
                if box[3] - box[1] >= FRAMED_MIN_FACE_PX:
                    known = cues.frame_sides if cues is not None else None
                    sides = known if known is not None else frame_sides(image, box, grey)
                    face = replace(face, framed=sides >= 4)
            out.append(face)
        self.last_ms = (time.perf_counter() - t0) * 1000.0
        return out
