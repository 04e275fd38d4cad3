"""Identity on the shared photos: the same person matched, different people not;
enrolment with consent and quality checks; templates 0600; profiles without identity."""

# ruff: noqa: F811  (the fixtures are imported below until conftest registers tests.support.vision)
from __future__ import annotations

import itertools
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deskwatch.app import build_vision
from deskwatch.cli import main
from deskwatch.vision.identity import FaceEncoder, face_pixels, load_templates, save_templates, template_path
from tests.support.vision import (  # noqa: F401
    PHOTOS,
    Photo,
    int8_vision,
    labelled_photos,
    vision_config,
    vision_state,
)

pytestmark = pytest.mark.slow

# Photos of known identities (labels.yaml same_person_as) and one face each.
IDENTITY_PHOTOS = ["face_01", "face_02", "face_03", "face_04", "face_06", "face_07", "face_08", "single_03"]


@pytest.fixture(scope="module")
def encoder() -> FaceEncoder:
    return FaceEncoder()


@pytest.fixture(scope="module")
def encodings(int8_vision: Any, labelled_photos: list[Photo], encoder: FaceEncoder) -> dict[str, np.ndarray]:
    """file stem -> 128-d encoding of the photo's largest face (BlazeFace crop)."""
    out = {}
    for p in labelled_photos:
        stem = p.file.rsplit(".", 1)[0]
        if stem in IDENTITY_PHOTOS:
            face = max(int8_vision.faces.detect(p.image), key=lambda f: f.box.area)
            out[stem] = encoder.encode(p.image, face_pixels(face, p.image.shape[1], p.image.shape[0]))
    return out


def same_person(a: str, b: str, photos: list[Photo]) -> bool:
    labels = {p.file.rsplit(".", 1)[0]: p.labels for p in photos}
    return f"{b}.jpg" == labels[a]["same_person_as"] or f"{a}.jpg" == labels[b]["same_person_as"]


def test_same_person_matched_different_people_not(
    encodings: dict[str, np.ndarray], labelled_photos: list[Photo]
) -> None:
    assert len(encodings) == len(IDENTITY_PHOTOS)
    pairs = list(itertools.combinations(IDENTITY_PHOTOS, 2))
    same = [(a, b) for a, b in pairs if same_person(a, b, labelled_photos)]
    assert len(same) == 4
    for a, b in pairs:
        distance = float(np.linalg.norm(encodings[a] - encodings[b]))
        if (a, b) in same:
            assert distance <= 0.6, f"{a} and {b} are one person but {distance:.3f} apart"
        else:
            assert distance > 0.6, f"{a} and {b} are different people but only {distance:.3f} apart"


def test_group_photo_marks_only_the_enrolled_worker(
    int8_vision: Any, encodings: dict[str, np.ndarray], labelled_photos: list[Photo]
) -> None:
    from deskwatch.vision.identity import IdentityChecker

    multi_07 = next(p for p in labelled_photos if p.file == "multi_07.jpg")  # same_person_as face_03
    checker = IdentityChecker(int8_vision._encoder or FaceEncoder(), encodings["face_03"][None], 0.6, 60, 3)
    faces = checker.check(multi_07.image, int8_vision.faces.detect(multi_07.image))
    assert sorted(f.identity or "-" for f in faces) == ["unknown", "worker"]


def write_config(tmp_path: Path, profile: str | None = None) -> Path:
    cfg = vision_config(tmp_path / "state", **({"profile": profile} if profile else {}))
    import yaml

    doc = {
        "device": {"id": cfg.device.id, "site": cfg.device.site, "worker_id": cfg.device.worker_id},
        "mqtt": {"host": "localhost"},
        "state_dir": cfg.state_dir,
        "policy": {"profile": cfg.policy.profile},
    }
    if profile == "uk":
        doc["schedule"] = {"mode": "fixed", "fixed_times": ["10:00"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    (tmp_path / "state").mkdir(exist_ok=True)
    return path


def test_enrol_refuses_without_consent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    assert main(["enroll", "--config", str(config), "--worker", "w-test", "--images", str(PHOTOS)]) == 2
    assert "consent" in capsys.readouterr().err
    assert not (tmp_path / "state" / "templates").exists()


def test_enrol_checks_quality_stores_0600_and_the_worker_is_recognised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("face_01.jpg", "multi_04.jpg", "empty_04.jpg", "face_07.jpg"):
        shutil.copy(PHOTOS / name, photos / name)
    config = write_config(tmp_path)
    argv = ["enroll", "--config", str(config), "--worker", "w-test", "--images", str(photos), "--consent"]
    assert main([*argv, "--min-images", "3"]) == 1  # only 2 usable photos: nothing stored
    assert not template_path(tmp_path / "state", "w-test").exists()
    assert main([*argv, "--min-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "rejected: multi_04.jpg (3 faces" in out and "rejected: empty_04.jpg (no face" in out
    path = template_path(tmp_path / "state", "w-test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    templates = load_templates(tmp_path / "state", "w-test")
    assert templates is not None and templates.shape == (2, 128)
    assert str(templates[0][0])[:6] not in out  # the templates themselves are never printed

    from deskwatch.config import load_config
    from tests.support.vision import load_rgb

    vision = build_vision(load_config(config))
    try:
        assert vision.identity_enabled
        worker = vision.analyze(load_rgb(PHOTOS / "face_02.jpg"))  # same person as face_01
        stranger = vision.analyze(load_rgb(PHOTOS / "face_04.jpg"))
        assert [f.identity for f in worker.faces] == ["worker"]
        assert [f.identity for f in stranger.faces] == ["unknown"]
        assert "identity" in worker.timings_ms
    finally:
        vision.close()


@pytest.mark.parametrize("profile", ["uk", "minimal"])
def test_profiles_without_identity_never_run_it(tmp_path: Path, profile: str) -> None:
    from deskwatch.config import load_config
    from tests.support.vision import load_rgb

    config = write_config(tmp_path, profile)
    cfg = load_config(config)
    save_templates(cfg.state_dir, cfg.device.worker_id, np.zeros((1, 128)))
    vision = build_vision(cfg)
    try:
        assert not vision.identity_enabled
        analysis = vision.analyze(load_rgb(PHOTOS / "face_02.jpg"))
        assert analysis.faces and all(f.identity is None for f in analysis.faces)
        assert "identity" not in analysis.timings_ms
    finally:
        vision.close()


def test_templates_written_atomically_with_private_modes(tmp_path: Path) -> None:
    path = save_templates(tmp_path / "state", "w-1", np.ones((3, 128)))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["w-1.npz"]  # no temporary file left
    with pytest.raises(ValueError):
        template_path(tmp_path, "../escape")


def test_identity_reused_within_a_burst_only_for_the_same_face(int8_vision: Any, encodings: dict) -> None:
    from datetime import UTC, datetime, timedelta

    from PIL import Image

    from deskwatch.vision.identity import IdentityChecker
    from tests.support.vision import load_rgb

    checker = IdentityChecker(int8_vision._encoder or FaceEncoder(), encodings["face_01"][None], reuse_seconds=3.0)
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    worker = load_rgb(PHOTOS / "face_01.jpg")
    first = checker.check(worker, int8_vision.faces.detect(worker), t0)
    assert [f.identity for f in first] == ["worker"] and checker.last_reused == 0 and checker.last_ms > 0
    again = checker.check(worker, int8_vision.faces.detect(worker), t0 + timedelta(seconds=0.5))
    assert [f.identity for f in again] == ["worker"] and checker.last_reused == 1 and checker.last_ms == 0
    late = checker.check(worker, int8_vision.faces.detect(worker), t0 + timedelta(seconds=4))
    assert checker.last_reused == 0 and late[0].identity == "worker"  # too old: encoded again
    # someone else in the same place a moment later is encoded, not taken for the worker
    other = load_rgb(PHOTOS / "face_03.jpg")
    other = np.ascontiguousarray(np.asarray(Image.fromarray(other).resize(worker.shape[1::-1])))
    faces = int8_vision.faces.detect(other)
    result = checker.check(other, faces, t0 + timedelta(seconds=4.5))
    assert checker.last_reused == 0 and [f.identity for f in result] == ["unknown"]
    assert checker.check(worker, int8_vision.faces.detect(worker), None) and checker.last_reused == 0
