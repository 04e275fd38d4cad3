"""Light and obstruction from pixel statistics: the check that gates every other rule.

Cheap enough to run on every frame (a strided ~160 px luma view, well under a
millisecond): too dark means the detectors' silence proves nothing (``low_light``,
never ``away_from_desk``); a frame with no detail at all means the lens is covered
or the camera faces a wall (``camera_obstructed``). A frame bright on average but mostly
dark (a lamp or a screen in an unlit room) is judged after the detectors have looked:
where they see nobody it is too dark as well (:func:`too_dark_to_see_nobody`).
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


def measure_light(image_rgb: np.ndarray, cfg: LightConfig) -> LightReading:
    y = luma_preview(image_rgb)
    mean = float(y.mean())
    contrast = float(y.std())
    dark_fraction = float((y < cfg.dark_pixel_luma).mean())
    gx = np.abs(np.diff(y, axis=1)).mean() if y.shape[1] > 1 else 0.0
    gy = np.abs(np.diff(y, axis=0)).mean() if y.shape[0] > 1 else 0.0
    detail = float((gx + gy) / 2)
    # A dark room keeps its structure (contrast scales with brightness); a covered lens
    # or a wall at arm's length has none, bright or dark.
    featureless = contrast < cfg.obstructed_contrast
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


def too_dark_to_see_nobody(reading: LightReading, cfg: LightConfig) -> LightReading:
    """The reading of a frame in which the detectors found nobody: too dark to check
    (``low_light``) when most of it is dark (``nobody_dark_fraction``) even though its mean
    brightness passed. A bright lamp, screen or window in view keeps the mean up; the rest
    of the room, where the worker would sit, is too dark for "nobody seen" to mean "nobody
    there" (the same reasoning as for a dark frame: never ``away_from_desk`` from darkness)."""
    if reading.low_light or reading.obstructed or reading.dark_fraction < cfg.nobody_dark_fraction:
        return reading
    return replace(reading, low_light=True)
