"""The whole-scan timer that compares a change with the tree before it (issue 13): real
models on real photos, each as a burst analysed as the scanner does, findings kept."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deskwatch_dev import wholescans
from tests.support.common import PHOTOS


def test_a_burst_is_five_noisy_copies_the_same_for_every_run() -> None:
    still = np.full((4, 6, 3), 128, dtype=np.uint8)
    first, again = wholescans.noisy_burst(still, 5, seed=3), wholescans.noisy_burst(still, 5, seed=3)
    assert len(first) == 5 and all((a == b).all() for a, b in zip(first, again, strict=True))
    assert not (first[0] == first[1]).all()  # each frame its own noise
    assert all(abs(float(f.mean()) - 128) < 2 for f in first)


@pytest.mark.slow
def test_times_whole_scans_and_keeps_their_findings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("face_03.jpg", "eat_03.jpg"):
        shutil.copy(PHOTOS / name, tmp_path / name)
    assert wholescans.main([str(tmp_path), "--rounds", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scans"] == 2 and result["frames_per_scan"] == 5
    assert result["identity_enrolled_from"] in {"face_03.jpg", "eat_03.jpg"}  # the worker is enrolled: identity runs
    assert 0 < result["scan_ms"]["p50"] <= result["scan_ms"]["p95"]
    assert "eating" in result["findings"]["eat_03.jpg"]


@pytest.mark.slow
def test_the_everyday_scan_settles_and_closes_the_camera_early(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--own-worker --camera: face_03's worker enrolled from that photo, alone: the burst settles
    after 3 of 5 frames; multi_03 (two faces) cannot be enrolled and is left out."""
    for name in ("face_03.jpg", "multi_03.jpg"):
        shutil.copy(PHOTOS / name, tmp_path / name)
    assert wholescans.main([str(tmp_path), "--rounds", "1", "--own-worker", "--camera"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["scans"] == 1 and list(result["findings"]) == ["face_03.jpg"]
    assert result["findings"]["face_03.jpg"] == []
    assert result["camera"]["scans"] == 1 and result["camera"]["frames_analysed_mean"] == 3
    assert result["camera"]["open_s"]["mean"] > 0


def test_a_missing_folder_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert wholescans.main([str(tmp_path / "nothing")]) == 2
    assert "no photo directory" in capsys.readouterr().err
