"""The phone figures command (issue 12's per-category table) on a small labelled folder:
the real models on real photos, each as the file and as a 1280x720 camera frame."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from deskwatch_dev import phonefigures
from tests.support.common import PHOTOS

PICKED = ("phone_hand_02.jpg", "nophone_hand_05.jpg", "phone_desk_01.jpg", "eat_03.jpg")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    labels = yaml.safe_load((PHOTOS / "labels.yaml").read_text())
    picked = [f for f in labels["files"] if f["file"] in PICKED]
    for entry in picked:
        shutil.copy(PHOTOS / entry["file"], tmp_path / entry["file"])
    (tmp_path / "labels.yaml").write_text(yaml.safe_dump({"files": picked}))
    return tmp_path


@pytest.mark.slow
def test_each_photo_is_counted_in_its_categories_both_ways(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    summary = phonefigures.measure(folder, verbose=False)
    for view in phonefigures.VIEWS:
        counts = summary[view]
        assert counts["phone in use"] == {"photos": 1, "found_in_use": ["phone_hand_02.jpg"], "found_on_desk": []}
        assert counts["hard negative"]["photos"] == 1 and counts["hard negative"]["found_in_use"] == []
        assert counts["phone on a desk"]["photos"] == 1 and counts["phone on a desk"]["found_in_use"] == []
        assert counts["no phone in use"]["photos"] == 3 and counts["no phone in use"]["found_in_use"] == []
        assert counts["eating"] == {"photos": 1, "found_eating": ["eat_03.jpg"]}
        assert counts["not eating"] == {"photos": 3, "found_eating": []}
    assert phonefigures.main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert "phone in use       1 photos, phone in use found 1  phone_hand_02.jpg" in out


@pytest.mark.slow
def test_the_scan_view_counts_what_the_policy_reports_on_a_noisy_burst(folder: Path) -> None:
    """--bursts: the supervisor's view, phone_use and eating as findings of a whole scan."""
    counts = phonefigures.measure(folder, verbose=False, bursts=True)[phonefigures.BURST]
    assert counts["phone in use"]["found_in_use"] == ["phone_hand_02.jpg"]
    assert counts["hard negative"]["found_in_use"] == [] and counts["phone on a desk"]["found_in_use"] == []
    assert counts["eating"] == {"photos": 1, "found_eating": ["eat_03.jpg"]}
    assert counts["not eating"]["found_eating"] == []


def test_a_folder_without_labels_is_refused_with_what_to_do(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert phonefigures.main([str(tmp_path)]) == 2
    assert "no labels.yaml" in capsys.readouterr().err
