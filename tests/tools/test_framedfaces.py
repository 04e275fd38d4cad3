"""deskwatch_dev.framedfaces: clear errors for what it cannot measure (the figure itself is
held by tests/appliance/test_vision_liveness.py on real photos)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deskwatch.vision.liveness import frame_sides
from deskwatch_dev import framedfaces


def test_a_folder_without_labels_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert framedfaces.main([str(tmp_path)]) == 2
    assert "no labels.yaml" in capsys.readouterr().err


def test_bursts_take_a_count_from_1_to_100(capsys: pytest.CaptureFixture[str]) -> None:
    assert framedfaces.main(["--bursts", "0"]) == 2
    assert "from 1 to 100" in capsys.readouterr().err


def test_the_drawn_frame_surrounds_the_face_on_four_sides() -> None:
    image = np.full((720, 1280, 3), 128, np.uint8)
    face = (600, 300, 680, 390)
    assert frame_sides(image, face) == 0
    assert frame_sides(framedfaces.framed(image, face, framedfaces.SIZES[0], framedfaces.COLOURS["wood"]), face) == 4
