"""Bystander anonymisation: faces and bodies made unrecognisable before anything is
encoded.

A region is pixelated to a handful of blocks (a face becomes about
``FACE_BLOCKS`` x ``FACE_BLOCKS`` colour patches), smoothed and pulled towards its
mean colour, so that neither a face detector nor a face encoder can recover it
(measured on the test photos: no BlazeFace detection left, encoder distance to the
original 0.71-0.80, beyond face_recognition's 0.6 match tolerance) (tested in tests/test_privacy_blur.py).

The strength is set in blocks across a region, not in pixels, so it is the same at any
resolution: the evidence picture is anonymised after it is scaled down to the thumbnail
(``deskwatch.evidence.thumbnail``), where a region is 1/16 of its pixels at full
resolution and no copy of the whole frame is needed (issue 13). A region's edges are
rounded outwards, so a pixel that holds any of a box is anonymised.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageFilter

from deskwatch.domain import Box

FACE_BLOCKS = 3  # blocks across a face: identity does not survive this
BODY_BLOCKS = 6  # blocks across the shorter side of a body box
FACE_MARGIN = 0.5  # grow face boxes by this share each side (hair, ears, chin)
FLATTEN = 0.5  # then pull every pixel this far towards the region's mean colour
BODY_MARGIN = 0.05


def grown(box: Box, margin: float) -> Box:
    dx, dy = box.width * margin, box.height * margin
    return Box(box.x0 - dx, box.y0 - dy, box.x1 + dx, box.y1 + dy).clipped()


def outward_pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` in whole pixels of a ``width`` x ``height`` image, every pixel it touches
    included (x1/y1 exclusive)."""
    b = box.clipped()
    return (
        math.floor(b.x0 * width),
        math.floor(b.y0 * height),
        min(width, math.ceil(b.x1 * width)),
        min(height, math.ceil(b.y1 * height)),
    )


def anonymise_region(image: np.ndarray, box: Box, blocks: int) -> None:
    """Pixelate and smooth ``box`` of ``image`` (RGB uint8, modified in place).

    Done in 8 bits, at most two region-sized intermediates alive at once: a body box close to the
    camera is a megapixel, and the float32 arithmetic this replaced held ~17 bytes a pixel
    at once (~20 MB for one body, the largest allocation of a whole scan, issue 13)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = outward_pixels(box, w, h)
    rw, rh = x1 - x0, y1 - y0
    if rw < 1 or rh < 1:  # an empty box
        return
    if rw < 2 or rh < 2:  # one pixel wide or high: too thin to pixelate, flattened to its mean colour
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0).astype(np.uint8)
        return
    short = min(rw, rh)
    cell = max(2, short // max(1, blocks))
    small = Image.fromarray(np.ascontiguousarray(image[y0:y1, x0:x1])).resize(
        (max(1, rw // cell), max(1, rh // cell)), Image.Resampling.BOX
    )
    smooth = small.resize((rw, rh), Image.Resampling.NEAREST).filter(ImageFilter.GaussianBlur(radius=float(cell)))
    del small
    pixels = np.asarray(smooth)
    del smooth
    # pull every pixel FLATTEN of the way to the region's mean colour: one 256-entry table a channel
    mean = pixels.reshape(-1, 3).mean(axis=0, dtype=np.float64)
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = np.clip((1 - FLATTEN) * levels + FLATTEN * mean, 0, 255).astype(np.uint8)  # 256 x 3
    for c in range(3):
        image[y0:y1, x0:x1, c] = table[pixels[..., c], c]


def anonymise_in_place(image: np.ndarray, faces: list[Box], bodies: list[Box], keep: Sequence[Box] = ()) -> None:
    """Every body and face box of ``image`` (RGB uint8, written to) anonymised: faces last,
    so a face is treated even when it lies inside a body box.

    ``keep``: the faces of the people the picture shows (the worker, those a finding is
    about), which a body box blurred around somebody else must not hide (a second person
    leaning behind the worker, blurred in a phone_use thumbnail, would hide the worker's
    face). Only the face box itself is put back, and before the faces are anonymised, so a
    blurred face overlapping it stays blurred."""
    h, w = image.shape[:2]
    saved = []
    for k in keep if bodies else ():
        x0, y0, x1, y1 = k.to_pixels(w, h)
        saved.append((x0, y0, x1, y1, image[y0:y1, x0:x1].copy()))
    for b in bodies:
        anonymise_region(image, grown(b, BODY_MARGIN), BODY_BLOCKS)
    for x0, y0, x1, y1, pixels in saved:
        image[y0:y1, x0:x1] = pixels
    for f in faces:
        anonymise_region(image, grown(f, FACE_MARGIN), FACE_BLOCKS)


def anonymise(image: np.ndarray, faces: list[Box], bodies: list[Box], keep: Sequence[Box] = ()) -> np.ndarray:
    """A copy of ``image`` with every body and face box anonymised (``keep``: as :func:`anonymise_in_place`)."""
    out = np.array(image, dtype=np.uint8, copy=True)
    anonymise_in_place(out, faces, bodies, keep)
    return out
