"""The arm64 bench's host side (``python -m deskwatch_dev.vmtest bench``): the photos it carries
and the tables it prints from the two machines' JSON. The emulated run itself takes ~40 minutes
(``make vm-bench``) and is not part of the suite."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deskwatch_dev import vmbench

REPO_PHOTOS = Path(__file__).resolve().parents[1] / "data" / "photos"


def test_the_default_photos_exist_and_carry_only_their_labels(tmp_path: Path) -> None:
    out = vmbench.stage_photos(vmbench.photo_set(REPO_PHOTOS, vmbench.PHOTOS), tmp_path / "photos")
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".jpg") == sorted(vmbench.PHOTOS)
    labels = yaml.safe_load((out / "labels.yaml").read_text())
    assert sorted(f["file"] for f in labels["files"]) == sorted(vmbench.PHOTOS)
    assert "label_definitions" in labels  # the rest of the file kept as it is


def test_a_missing_photo_is_named() -> None:
    with pytest.raises(SystemExit, match=r"nope\.jpg"):
        vmbench.photo_set(REPO_PHOTOS, ("face_01.jpg", "nope.jpg"))


def test_the_command_is_the_same_on_both_machines_and_takes_the_extra_flags() -> None:
    cmd = vmbench.bench_command("/opt/deskwatch/venv/bin/python", "/photos", "--no-hog --rounds 2")
    assert cmd[:4] == ["/opt/deskwatch/venv/bin/python", "-m", "deskwatch", "bench"]
    assert cmd[-3:] == ["--no-hog", "--rounds", "2"] and "--json" in cmd


def test_figures_side_by_side_with_gaps_for_what_a_run_lacks() -> None:
    arm = {"peak_rss_mb": 201.5, "bursts": {"peak_rss_mb": 207.0, "scan_ms": {"p50": 9000.0}}}
    x86 = {"peak_rss_mb": 189.9, "process_peak_rss_mb": 196.1}
    assert vmbench.figure(arm, "bursts.peak_rss_mb") == 207.0
    assert vmbench.figure(x86, "bursts.peak_rss_mb") is None
    assert vmbench.figure(None, "peak_rss_mb") is None
    lines = vmbench.side_by_side([arm, None], [x86])
    assert "arm64 #2" in lines[0] and "x86-64 #1" in lines[0]
    one_frame = next(line for line in lines if line.startswith("peak RSS, one frame"))
    assert one_frame.split()[-3:] == ["201.5", "-", "189.9"]  # the failed arm64 run shows as a gap


def test_per_model_growth_arm_minus_x86() -> None:
    def probe(anon: float, first: float, borrowed: bool = False) -> dict[str, object]:
        model: dict[str, object] = {"file": "m.tflite", "load": {"RssAnon_mb": anon, "RssFile_mb": 0.1}}
        model |= {"borrowed": True, "held_mb": anon} if borrowed else {"first_invoke": {"RssAnon_mb": first}}
        return {
            "models": [model],
            "runtime": "ai-edge-litert 2.3.0",
            "python": "3.11",
            "after_first_invokes": {"VmRSS": 160.0, "RssAnon": 120.0},
        }

    lines = vmbench.per_model(probe(12.0, 1.5), probe(10.0, 0.5))
    row = next(line for line in lines if line.startswith("m.tflite"))
    assert row.endswith("+3.0")
    assert vmbench.per_model(None, None) == []
    only_arm = vmbench.per_model(probe(12.0, 0.0, borrowed=True), None)
    assert " b" in next(line for line in only_arm if line.startswith("m.tflite"))


def test_wheel_versions_from_dist_info_names_and_differences_said(tmp_path: Path) -> None:
    for name in ("numpy-2.4.6.dist-info", "ai_edge_litert-2.3.0.dist-info", "PyYAML-6.0.4.dist-info"):
        (tmp_path / name).mkdir()
    (tmp_path / "numpy").mkdir()
    found = vmbench.dist_versions(tmp_path)
    assert found == {"numpy": "2.4.6", "ai-edge-litert": "2.3.0", "pyyaml": "6.0.4"}
    line = vmbench.version_lines(found, {"numpy": "2.4.6", "ai-edge-litert": "2.4.0"})[0]
    assert "numpy 2.4.6," in line
    assert "ai-edge-litert arm64 2.3.0 / x86-64 2.4.0 (DIFFERENT)" in line
