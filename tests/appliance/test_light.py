"""The light/obstruction check on real photos: normal, darkened, covered, blank wall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from deskwatch.vision.config import LightConfig
from deskwatch.vision.light import measure_light

CFG = LightConfig()


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_real_photos_are_neither_dark_nor_obstructed(photos: Path) -> None:
    for path in sorted(photos.glob("*.jpg")):
        r = measure_light(load(path), CFG)
        assert not r.low_light and not r.obstructed, (path.name, r)


def test_a_dark_room_is_low_light_not_obstructed(photos: Path) -> None:
    for path in sorted(photos.glob("*.jpg")):
        dark = (load(path).astype(np.float32) * 0.12).astype(np.uint8)
        r = measure_light(dark, CFG)
        assert r.low_light and not r.obstructed, (path.name, r)


def test_a_covered_lens_is_obstructed() -> None:
    rng = np.random.default_rng(0)
    covered = rng.normal(8, 1.5, (480, 640, 3)).clip(0, 255).astype(np.uint8)  # sensor noise behind a finger
    r = measure_light(covered, CFG)
    assert r.obstructed and not r.low_light


def test_a_blank_wall_is_obstructed_even_when_bright() -> None:
    y = np.linspace(170, 185, 640, dtype=np.float32)  # a gently lit wall at arm's length
    wall = np.repeat(np.repeat(y[None, :, None], 480, axis=0), 3, axis=2).astype(np.uint8)
    r = measure_light(wall, CFG)
    assert r.obstructed and r.mean_luma > 150


def blurred(image: np.ndarray, sigma_at_640: float) -> np.ndarray:
    """The scene through a misted lens: a Gaussian blur of ``sigma_at_640`` px at 640 px wide."""
    from PIL import ImageFilter

    radius = sigma_at_640 * image.shape[1] / 640
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


def test_edge_sharpness_tells_a_misted_lens_from_a_smooth_sharp_picture(photos: Path) -> None:
    """A portrait against a blurred background still has sharp edges somewhere (eyes, hair);
    a misted lens leaves none. The photos as taken and as a 1280x720 frame stay well above the
    bar, blurred as a misted lens every one falls under it."""
    from deskwatch.vision.imageops import resize
    from deskwatch.vision.light import edge_sharpness

    for path in sorted(photos.glob("*.jpg")):
        image = load(path)
        frame = resize(np.ascontiguousarray(image), 1280, round(image.shape[0] * 1280 / image.shape[1]))
        assert edge_sharpness(image) > 3 * CFG.nobody_blur_sharpness, path.name
        assert edge_sharpness(frame) > 2 * CFG.nobody_blur_sharpness, path.name
        assert edge_sharpness(blurred(image, 20)) < CFG.nobody_blur_sharpness, path.name
