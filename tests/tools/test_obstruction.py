"""The obstruction figure (``deskwatch_dev.obstruction``): its synthetic scenes are camera bursts
and show what they say, judged by the pixel statistics alone (the model runs are the tool's)."""

from __future__ import annotations

import numpy as np
import pytest

from deskwatch.vision.light import LightConfig, measure_light
from deskwatch_dev import obstruction
from tests.support.common import PHOTOS

CFG = LightConfig()


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    from deskwatch.commands.bench import fit_frame
    from deskwatch_dev.phonefigures import _load

    return fit_frame(_load(PHOTOS / "single_01.jpg"), obstruction.W, obstruction.H)


def scenes() -> dict[str, obstruction.Maker]:
    return {
        **obstruction._worker_scenes(),
        **obstruction._empty_scenes(),
        **obstruction._covered_scenes(),
        **obstruction._dark_scenes(),
    }


def test_every_scene_is_a_reproducible_burst_of_camera_frames(frame: np.ndarray) -> None:
    for name, make in scenes().items():
        burst = make(frame, (None, None), obstruction._rng("single_01.jpg", name), 5)
        assert len(burst) == 5, name
        for image in burst:
            assert image.dtype == np.uint8 and image.shape == (obstruction.H, obstruction.W, 3), name
        again = make(frame, (None, None), obstruction._rng("single_01.jpg", name), 5)
        assert all(np.array_equal(a, b) for a, b in zip(burst, again, strict=True)), name
    assert "," not in "".join(obstruction.scene_names())  # --scenes splits on commas


def test_the_scenes_are_what_they_say(frame: np.ndarray) -> None:
    """A lens cap and a sticky note are covered, a room with its lights off too dark, and a
    hand or a top in some frames leaves the others as the photo."""
    made = {name: make(frame, (None, None), obstruction._rng("t", name), 5) for name, make in scenes().items()}
    for name in ("lens cap", "sticky note"):
        assert all(measure_light(f, CFG).obstructed for f in made[name]), name
    for name in ("dark room 8 %", "dark room 4 %"):
        readings = [measure_light(f, CFG) for f in made[name]]
        assert all(r.low_light and not r.obstructed for r in readings), (name, readings)
    clear = [measure_light(f, CFG) for f in made["hand 1 frame"]]
    assert [r.mean_luma > 100 for r in clear] == [True] * 5  # skin is bright, the photo too
    settling = [measure_light(f, CFG) for f in made["settling + torso 2"]]
    assert [r.low_light for r in settling] == [True, False, False, False, False]
    assert abs(settling[1].mean_luma - settling[4].mean_luma) < 1 and settling[2].detail < settling[1].detail / 5


def test_an_unknown_scene_is_refused_with_the_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert obstruction.main(["--scenes", "lens cap,no such scene"]) == 2
    err = capsys.readouterr().err
    assert "no such scene" in err and "lens cap" in err and "dark room 4 %" in err
