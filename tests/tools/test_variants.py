"""The camera-variation figure (``deskwatch_dev.variants``): which findings a photo's labels
contradict, variants that stay camera frames, and a run of the real models on a small folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from deskwatch_dev import variants
from tests.support.common import PHOTOS

PICKED = ("phone_hand_02.jpg", "phone_desk_06.jpg", "multi_04.jpg")


def test_false_findings_are_the_ones_the_labels_contradict() -> None:
    alone = {"persons": 1, "persons_exact": True, "phone_in_use": False, "eating": False}
    assert variants.false_findings(alone, {"extra_person", "phone_use", "eating", "away_from_desk"}) == [
        "phone_use",
        "eating",
        "extra_person",
        "away_from_desk",
    ]
    crowd = {"persons": 1, "persons_exact": False}  # roughly one: another person may be there
    assert variants.false_findings(crowd, {"extra_person"}) == []
    nobody = {"persons": 0}
    assert variants.false_findings(nobody, {"away_from_desk", "extra_person"}) == ["extra_person"]
    assert variants.false_findings(nobody, {"presentation_attack"}) == ["presentation_attack"]
    calling = {"persons": 3, "phone_in_use": True}
    assert variants.false_findings(calling, {"phone_use", "extra_person"}) == []
    assert variants.true_findings(calling, {"phone_use", "extra_person", "eating"}) == ["phone_use", "extra_person"]


def test_every_variant_is_an_rgb_uint8_frame() -> None:
    image = np.random.default_rng(1).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    for name, vary in {**variants.VARIANTS, **variants.HARSH_VARIANTS}.items():
        out = np.ascontiguousarray(vary(image))
        assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3, name
        smaller = {"3/4 size": (67, 120), "85 % crop": (78, 136), "70 % crop": (64, 112)}
        assert out.shape[:2] == smaller.get(name, (90, 160)), name
    assert np.array_equal(variants.VARIANTS["mirrored"](image), image[:, ::-1])
    assert variants.VARIANTS["darker"](image).mean() < image.mean() < variants.VARIANTS["brighter"](image).mean()
    assert np.array_equal(variants.VARIANTS["noise 8"](image), variants.VARIANTS["noise 8"](image))  # reproducible


def test_the_home_variants_are_what_a_home_desks_camera_gives() -> None:
    """Each stays a frame of the photo's size, and is what it says: NoIR at night near grey and
    brighter in the middle than at the corners, NoIR by day pinker, backlit a clipped pane and a
    darker room, the screen's glow dim and bluer on one side, a wide lens magnifying the middle,
    the worker at the edge with the scene moved over."""
    rng = np.random.default_rng(2)
    image = np.clip(rng.normal(120, 30, (120, 200, 3)), 0, 255).astype(np.uint8)
    home = variants.HOME_VARIANTS
    for name, vary in home.items():
        out = np.ascontiguousarray(vary(image))
        assert out.dtype == np.uint8 and out.shape == image.shape, name
    night = home["NoIR night"](image).astype(np.float32)
    assert np.abs(night - night.mean(axis=-1, keepdims=True)).mean() < 6  # near monochrome
    assert night[50:70, 90:110].mean() > 1.5 * night[:15, :15].mean()  # the illuminator's falloff
    day = home["NoIR day"](image).astype(np.float32)
    assert day[..., 0].mean() > day[..., 1].mean() + 30 and day[..., 2].mean() > day[..., 1].mean() + 30  # magenta
    backlit = home["backlit"](image)
    assert (backlit[:40, :40] == 255).all() and backlit[:, 120:].mean() < 0.5 * image[:, 120:].mean()
    glow = home["screen glow"](image).astype(np.float32)
    assert glow.mean() < 40 and glow[:, 150:, 2].mean() > glow[:, 150:, 0].mean()
    assert glow[:, 150:].mean() > 2 * glow[:, :50].mean()  # lit from one side
    ramp = np.repeat(np.repeat(np.linspace(0, 255, 200, dtype=np.uint8)[None, :, None], 120, axis=0), 3, axis=2)
    wide = home["wide 160"](ramp)
    assert abs(int(wide[60, 100, 0]) - int(ramp[60, 100, 0])) <= 2  # the centre stays
    assert int(wide[60, 120, 0]) - int(wide[60, 100, 0]) < int(ramp[60, 120, 0]) - int(ramp[60, 100, 0])  # magnified
    edge = home["edge left"](image)
    assert np.array_equal(edge[:, :120], image[:, 80:]) and (edge[:, 120:] == edge[0, 199]).all()
    assert np.array_equal(home["edge right"](image)[:, 80:], image[:, :120])


def test_harsh_and_home_are_asked_for_one_at_a_time(capsys: pytest.CaptureFixture[str]) -> None:
    assert variants.main([str(PHOTOS), "--harsh", "--home"]) == 2
    assert "one at a time" in capsys.readouterr().err


def test_a_folder_without_labels_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert variants.main([str(tmp_path)]) == 2
    assert "no labels.yaml" in capsys.readouterr().err


def test_an_unknown_size_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert variants.main([str(PHOTOS), "--sizes", "file,640x480"]) == 2
    assert "--sizes takes file and/or 1280x720" in capsys.readouterr().err


def test_a_camera_frame_is_the_photo_fitted_into_1280x720() -> None:
    image = np.full((90, 160, 3), 200, np.uint8)
    assert variants.sized(image, "file") is image
    assert variants.sized(image, "1280x720").shape == (720, 1280, 3)


@pytest.mark.slow
def test_figures_on_real_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = yaml.safe_load((PHOTOS / "labels.yaml").read_text())
    picked = [f for f in labels["files"] if f["file"] in PICKED]
    for entry in picked:
        shutil.copy(PHOTOS / entry["file"], tmp_path / entry["file"])
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump({"files": picked}))
    assert variants.main([str(tmp_path), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals["photos"] == 3 and totals["variants"] == list(variants.VARIANTS)
    assert totals["sizes"] == ["file", "1280x720"]  # each variant as the file and as a camera frame
    assert totals["false"]["by_size"] == {"file": 0, "1280x720": 0}
    assert totals["false"]["by_finding"] == {}  # phone_desk_06 (one worker seen from above): no extra_person
    assert totals["found"]["phone_use"] >= 6  # the phone in both hands, in most variants
    assert totals["found"]["extra_person"] >= 6  # three people at a table


def test_bursts_take_a_count_from_0_to_100(capsys: pytest.CaptureFixture[str]) -> None:
    assert variants.main([str(PHOTOS), "--bursts", "-1"]) == 2
    assert "--bursts takes 0 to 100" in capsys.readouterr().err


@pytest.mark.slow
def test_a_false_one_frame_finding_is_scanned_again_as_bursts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """nophone_hand_04 (a tablet held in the lap, no face), backlit by a window and fitted into
    a camera frame, is called an empty desk as one frame (2026-12-01; brighter was until the
    hands' second look with the shadows lifted): --bursts scans that view again as camera
    bursts and counts those that still say so; a view without a false finding is not scanned
    again."""
    labels = yaml.safe_load((PHOTOS / "labels.yaml").read_text())
    picked = [f for f in labels["files"] if f["file"] in ("nophone_hand_04.jpg", "multi_04.jpg")]
    for entry in picked:
        shutil.copy(PHOTOS / entry["file"], tmp_path / entry["file"])
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump({"files": picked}))
    backlit = {"backlit": variants.HOME_VARIANTS["backlit"]}
    totals = variants.measure(tmp_path, verbose=True, sizes=("1280x720",), variants=backlit, bursts=3)
    assert totals["false"]["by_finding"] == {"away_from_desk": 1}
    row = totals["false_in_bursts"]["by_finding"]["away_from_desk"]
    assert row["views"] == 1 and 0 <= row["views_kept"] <= 1 and 0 <= row["bursts_kept"] <= 3
    assert totals["false_in_bursts"]["bursts_per_view"] == 3
    said = capsys.readouterr().out
    assert f"backlit (1280x720): away_from_desk [in {row['bursts_kept']} of 3 bursts]" in said
    assert "multi_04" not in said  # three people at a table: nothing false, nothing scanned again
