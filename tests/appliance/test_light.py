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


def with_gain_noise(image: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    """A camera's frame at full exposure: its gain noise on every pixel."""
    noise = np.random.default_rng(seed).normal(0.0, sigma, image.shape)
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def test_a_room_with_its_lights_off_is_low_light_not_an_accusation(photos: Path) -> None:
    """At 2-4 % of its light a room's contrast falls under obstructed_contrast (2-3 grey levels),
    but its pattern of brighter and darker parts is still there, scaled down with the light: a
    camera_obstructed there would tell the supervisor that the worker covered the camera when
    the lights were off. (Synthetic: the labelled photos dimmed, with a camera's gain noise.)"""
    from deskwatch.commands.bench import fit_frame

    for path in sorted(photos.glob("*.jpg")):
        frame = fit_frame(load(path), 1280, 720)
        for share, sigma in ((0.04, 2.5), (0.02, 1.5), (0.02, 4.0)):
            r = measure_light(with_gain_noise(frame * share, sigma, 1), CFG)
            assert r.low_light and not r.obstructed, (path.name, share, sigma, r)


def test_an_opaque_cover_is_obstructed_whatever_the_gain_noise() -> None:
    """A lens cap or a finger pressed on the lens: an even field, black to dim, with the sensor's
    noise at full exposure; it has no pattern beyond that noise, unlike a dark room. (With more
    noise than obstructed_contrast it is low_light: a check lost, no accusation.)"""
    for level in (0.0, 2.0, 5.0, 16.0):
        for sigma in (1.5, 2.5, 4.0):
            cap = with_gain_noise(np.full((720, 1280, 3), level, np.float32), sigma, 2)
            r = measure_light(cap, CFG)
            assert r.obstructed and not r.low_light, (level, sigma, r)
