"""Light and obstruction from pixel statistics: the check that gates every other rule.

Cheap enough to run on every frame (a strided ~160 px luma view, well under a
millisecond): too dark means the detectors' silence proves nothing (``low_light``,
never ``away_from_desk``); a frame with no detail at all means the lens is covered
or the camera faces a wall (``camera_obstructed``).
"""

from __future__ import annotations

import numpy as np

from ..domain import LightReading
from .config import LightConfig

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
