"""Light and obstruction from pixel statistics: the check that gates every other rule.

Cheap enough to run on every frame (a strided ~160 px luma view, well under a
millisecond): too dark means the detectors' silence proves nothing (``low_light``,
never ``away_from_desk``); a frame with no detail at all means the lens is covered
or the camera faces a wall (``camera_obstructed``). A frame bright on average but mostly
dark (a lamp or a screen in an unlit room), or blurred all over (a misted lens), is judged
after the detectors have looked: where they see nobody it cannot be checked either
(:func:`nobody_seen`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from deskwatch.domain import LightReading
from deskwatch_contract.configfile import setting


@dataclass(frozen=True)
class LightConfig:
    """Thresholds of the pixel-statistics check that gates every other rule."""

    low_light_luma: float = setting(
        40.0,
        doc="Mean brightness (0-255) below which the frame is too dark to check anything: low_light.",
        minimum=0.0,
        maximum=255.0,
    )
    dark_pixel_luma: float = setting(30.0, doc="A pixel darker than this counts as dark.", minimum=0.0, maximum=255.0)
    obstructed_contrast: float = setting(
        3.0,
        doc="Brightness spread (std of luma) below which the frame is featureless whatever its brightness: lens covered. camera_obstructed.",
        minimum=0.0,
        maximum=128.0,
    )
    obstructed_structure: float = setting(
        0.035,
        doc="A frame with less spread than obstructed_contrast counts as covered only where its coarse pattern (the frame averaged down to 16 px wide) varies by less than this share of its mean brightness too: a room with its lights off keeps its pattern of brighter and darker parts, scaled down with the light (the labelled photos dimmed to 1-8 % of their light with a camera's gain noise: 0.041 and up, 0.06 and up from 2 %), and is low_light; a lens cap, a finger pressed on the lens or a blank surface leaves an even field (0.03 at most with gain noise of up to 6 grey levels). 1 calls every such frame covered.",
        minimum=0.0,
        maximum=1.0,
    )
    obstructed_relative_contrast: float = setting(
        0.06,
        doc="Spread relative to mean brightness below which a frame with little detail counts as a blank surface (camera facing a wall or covered by paper).",
        minimum=0.0,
        maximum=1.0,
    )
    nobody_dark_fraction: float = setting(
        0.6,
        doc="A frame in which nobody is seen and at least this share of the picture is dark (below dark_pixel_luma) is too dark to check (low_light), whatever its mean brightness: a lamp, a screen or a window in view keeps the mean up while the rest of the room is too dark for the detectors' silence to prove the desk empty. The labelled photos are at most 0.54 dark; dimmed to near darkness with a lamp-sized bright patch in a corner, 6 of 276 views with a person in them were called away_from_desk at 0.59-0.85 dark. 1 turns it off.",
        minimum=0.0,
        maximum=1.0,
    )
    nobody_blur_sharpness: float = setting(
        0.05,
        doc="A frame in which nobody is seen and whose sharpest edges (the 99.5th percentile of the luma gradient on a 320 px preview, over the luma range) stay under this is too blurred to check (camera_obstructed): a misted or smeared lens, or translucent tape over it. The labelled photos score 0.17 and up as taken, 0.048 and up with a harsh blur of 3 px; blurred as a misted lens would (sigma 16 px at 640 px wide) at most 0.053, and 14 of 46 such views with people in them were away_from_desk. 0 turns it off.",
        minimum=0.0,
        maximum=1.0,
    )
    obstructed_detail: float = setting(
        2.0,
        doc="Mean gradient (0-255 per pixel) under which a low-contrast frame has no usable detail.",
        minimum=0.0,
        maximum=100.0,
    )


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def luma_preview(image_rgb: np.ndarray, target_width: int = 160) -> np.ndarray:
    """A small float32 luma image taken by striding (no resampling cost)."""
    if image_rgb.ndim != 3 or image_rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB image HxWx3, got shape {image_rgb.shape}")
    step = max(1, image_rgb.shape[1] // target_width)
    small = image_rgb[::step, ::step, :3].astype(np.float32)
    return small @ _LUMA  # type: ignore[no-any-return]


STRUCTURE_WIDTH = 16  # the grid the coarse pattern is measured on: a room's parts, not its texture or noise


def coarse_structure(image_rgb: np.ndarray) -> float:
    """How much the frame's coarse pattern varies against its mean brightness: the std of the
    luma averaged in blocks (``STRUCTURE_WIDTH`` across, each the mean of a few thousand pixels
    of a 2-strided view, so that the sensor's noise averages out) over the mean luma (at least 1).
    A dark room's furniture, walls and window keep it at the share of a lit room; a lens cap or
    a finger on the lens has nothing but noise, which the blocks average away."""
    y = image_rgb[::2, ::2, :3].astype(np.float32) @ _LUMA
    b = max(1, y.shape[1] // STRUCTURE_WIDTH)
    rows, cols = max(1, y.shape[0] // b), max(1, y.shape[1] // b)
    blocks = y[: rows * b, : cols * b].reshape(rows, b, cols, b).mean(axis=(1, 3))
    return float(blocks.std()) / max(float(y.mean()), 1.0)


def measure_light(image_rgb: np.ndarray, cfg: LightConfig) -> LightReading:
    y = luma_preview(image_rgb)
    mean = float(y.mean())
    contrast = float(y.std())
    dark_fraction = float((y < cfg.dark_pixel_luma).mean())
    gx = np.abs(np.diff(y, axis=1)).mean() if y.shape[1] > 1 else 0.0
    gy = np.abs(np.diff(y, axis=0)).mean() if y.shape[0] > 1 else 0.0
    detail = float((gx + gy) / 2)
    # A dark room keeps its structure (contrast scales with brightness); a covered lens
    # or a wall at arm's length has none, bright or dark. Under a few grey levels of spread
    # a room with its lights off looks featureless too: only its coarse pattern tells it from
    # a lens cap (measured only then: the costlier look at the whole frame).
    featureless = contrast < cfg.obstructed_contrast and coarse_structure(image_rgb) < cfg.obstructed_structure
    blank = contrast / max(mean, 1.0) < cfg.obstructed_relative_contrast and detail < cfg.obstructed_detail
    obstructed = featureless or blank
    low_light = mean < cfg.low_light_luma and not obstructed
    return LightReading(
        mean_luma=round(mean, 2),
        contrast=round(contrast, 2),
        dark_fraction=round(dark_fraction, 4),
        detail=round(detail, 3),
        low_light=low_light,
        obstructed=obstructed,
    )


SHARPNESS_WIDTH = 320  # the preview the sharpness is measured on: the same for every camera size


def edge_sharpness(image_rgb: np.ndarray) -> float:
    """The picture's sharpest edges against its brightness range: the 99.5th percentile of the
    luma gradient on a 320 px wide preview (an area resize, so that the figure does not depend
    on the camera's resolution), over the 1st-99th percentile range of luma. A sharp picture
    has some edge that steps across much of its range within a pixel or two (even a smooth
    portrait against a blurred background: eyes, hair); a blurred one has none anywhere."""
    from deskwatch.vision.imageops import resize

    h, w = image_rgb.shape[:2]
    small = resize(
        np.ascontiguousarray(image_rgb[..., :3]), SHARPNESS_WIDTH, max(3, round(h * SHARPNESS_WIDTH / w)), area=True
    )
    y = small.astype(np.float32) @ _LUMA
    gx = (y[1:-1, 2:] - y[1:-1, :-2]) / 2
    gy = (y[2:, 1:-1] - y[:-2, 1:-1]) / 2
    lo, hi = np.percentile(y, [1, 99])
    return float(np.percentile(np.hypot(gx, gy), 99.5) / max(float(hi - lo), 1.0))


def nobody_seen(reading: LightReading, image_rgb: np.ndarray, cfg: LightConfig) -> LightReading:
    """The reading of a frame in which the detectors found nobody, judged again: the
    detectors' silence proves the desk empty only where they could have seen somebody.

    - Mostly dark (``nobody_dark_fraction``) though its mean brightness passed: too dark to
      check (``low_light``). A lamp, a screen or a window in view keeps the mean up; the
      rest of the room, where the worker would sit, is too dark to see into.
    - No sharp edge anywhere (:func:`edge_sharpness` under ``nobody_blur_sharpness``): the
      lens is misted, smeared or covered by something translucent (``camera_obstructed``,
      ``blurred``). Such a picture keeps its brightness and contrast, so the pixel
      statistics alone let it through, and the detectors find nobody in it."""
    if reading.low_light or reading.obstructed:
        return reading
    if reading.dark_fraction >= cfg.nobody_dark_fraction:
        return replace(reading, low_light=True)
    sharp = round(edge_sharpness(image_rgb), 4)
    if sharp < cfg.nobody_blur_sharpness:
        return replace(reading, sharpness=sharp, obstructed=True, blurred=True)
    return replace(reading, sharpness=sharp)
