"""Phones: the whole-frame detector plus the weak votes fused at each ear (BlazeFace ears,
or the body pose's ears where the hand hides the face), on the shared real photos.

Measured with the shipped int8 pipeline (2026-11-29): phones found on 4 of the 6 phone
photos (phone_01, phone_04 by the whole-frame pass; phone_02 by the face ears + face
crop, evidence 0.68; phone_05 by the pose ears, evidence 0.47), none on the other 30.
Missed: phone_03 (a flip phone held at lap height, not at an ear) and phone_only_01
(a phone lying on a laptop, nobody there). The ear evidence threshold is 0.4; the
largest evidence at any ear of a photo without a phone is 0.25 (eat_02).
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from deskwatch.domain import Box, Detection, Face
from deskwatch.vision.phones import EarZone, evidence, face_ear_zones, phones_at_ears
from deskwatch.vision.pose import INPUT_SIZE, Pose, PoseEstimator, pose_square
from tests.support.vision import Photo, vision_config

PHONE = "cell phone"


def phone_files(photos: list[Photo], analyses: dict[str, Any]) -> list[str]:
    return [p.file for p in photos if analyses[p.file].labelled(PHONE)]


# -- on the real photos ------------------------------------------------------------------
@pytest.mark.slow
def test_four_of_six_phone_photos_found_and_no_false_phones(
    first_set_photos: list[Photo], int8_analyses: dict[str, Any]
) -> None:
    found = phone_files(first_set_photos, int8_analyses)
    with_phone = {p.file for p in first_set_photos if p.labels["phone"]}
    assert len(with_phone) == 5 and len(first_set_photos) == 29
    false = sorted(set(found) - with_phone)
    assert false == [], f"phones reported on photos without one: {false}"
    # today 3/5 (phone_01/02/05); phone_04, also found, left the set (unknown licence)
    assert len(set(found) & with_phone) >= 3, f"phones found only on {sorted(found)}"


@pytest.mark.slow
def test_phones_in_use_pass_the_policy_score(labelled_photos: list[Photo], int8_analyses: dict[str, Any]) -> None:
    """A phone the ear fusion confirms carries its evidence as the score, so the
    policy's phone_use rule (min_score 0.3) sees it."""
    in_use = [p for p in labelled_photos if p.labels["phone_in_use"]]
    strong = [p.file for p in in_use if any(d.score >= 0.3 for d in int8_analyses[p.file].labelled(PHONE))]
    assert len(strong) >= 4, strong


@pytest.mark.slow
def test_the_ear_fusion_is_what_finds_the_two_extra_phones(
    vision_state: Path, labelled_photos: list[Photo], int8_analyses: dict[str, Any]
) -> None:
    """Without the second pass and the pose, only the whole-frame pass's phones remain."""
    from deskwatch.app import build_vision

    plain = build_vision(
        vision_config(vision_state, object_precision="int8", phone_second_pass=False, phone_pose=False)
    )
    try:
        phones = [p for p in labelled_photos if p.labels["phone"]]
        without = {p.file for p in phones if plain.analyze(p.image).labelled(PHONE)}
    finally:
        plain.close()
    with_fusion = set(phone_files(phones, int8_analyses))
    assert without < with_fusion, (without, with_fusion)
    assert len(with_fusion - without) >= 2


@pytest.mark.slow
def test_pose_of_a_person_whose_face_is_hidden(int8_vision: Any, labelled_photos: list[Photo]) -> None:
    """phone_05: the hand and cards hide the face from BlazeFace; the pose still puts
    the ears in the upper part of the person box, and the pose model's time is bounded."""
    photo = next(p for p in labelled_photos if p.file == "phone_05.jpg")
    h, w = photo.image.shape[:2]
    person = Detection("person", 0.8, Box(0.1, 0.0, 1.0, 1.0))
    [pose] = int8_vision.pose.estimate_all(photo.image, [person], 2)
    assert pose.presence >= 0.5
    for ear in (7, 8):
        x, y = pose.points[ear]
        assert 0.1 * w <= x <= w and 0 <= y <= 0.6 * h
    assert 0 < int8_vision.pose.invoke_ms < 2000


def test_pose_model_is_verified_against_the_manifest(vision_state: Path) -> None:
    from deskwatch.vision.pipeline import POSE_MODEL
    from deskwatch.vision.runtime import ModelStore

    store = ModelStore(vision_config(vision_state).vision)
    try:
        entry, _content = store.verify(POSE_MODEL)
        assert entry.info["source"]["package"] == "mediapipe" and entry.info["source"]["version"] == "0.10.21"
        assert "Apache-2.0" in entry.info["source"]["upstream_licence"]
        model = store.load(POSE_MODEL)
        assert model.input_shape == (1, INPUT_SIZE, INPUT_SIZE, 3)
        assert {"Identity", "Identity_1"} <= set(model.outputs)
    finally:
        store.close()


# -- the fusion itself -------------------------------------------------------------------
W, H = 1000, 1000


def vote(score: float, cx: float, cy: float, size: float = 0.04) -> Detection:
    return Detection(PHONE, score, Box(cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2))


EAR = EarZone(x=500, y=300, reach=60, max_size=100, source="face")


def test_evidence_is_a_noisy_or() -> None:
    assert evidence([]) == 0.0
    assert evidence([0.5]) == pytest.approx(0.5)
    assert evidence([0.5, 0.5]) == pytest.approx(0.75)
    assert evidence([0.17, 0.16, 0.14, 0.12]) == pytest.approx(0.47, abs=0.01)


def test_one_weak_vote_at_an_ear_is_not_a_phone() -> None:
    assert phones_at_ears([EAR], [vote(0.25, 0.51, 0.31)], [], width=W, height=H, min_evidence=0.4) == []


def test_several_votes_at_an_ear_are_a_phone_with_their_evidence_as_score() -> None:
    votes = [vote(0.2, 0.51, 0.31), vote(0.18, 0.52, 0.30), vote(0.15, 0.50, 0.32)]
    [phone] = phones_at_ears([EAR], votes, [], width=W, height=H, min_evidence=0.4)
    assert phone.label == PHONE
    assert phone.score == pytest.approx(evidence(v.score for v in votes))
    assert phone.box.x0 < 0.51 < phone.box.x1 and phone.box.y0 < 0.31 < phone.box.y1


def test_votes_away_from_the_ear_or_too_large_do_not_count() -> None:
    far = [vote(0.3, 0.7, 0.3), vote(0.3, 0.5, 0.6)]  # 200 / 300 px from the ear
    big = [vote(0.3, 0.5, 0.3, size=0.2), vote(0.3, 0.51, 0.31, size=0.15)]  # 200 / 150 px: no phone that size
    assert phones_at_ears([EAR], far + big, [], width=W, height=H, min_evidence=0.4) == []


def test_no_second_phone_where_one_was_found() -> None:
    votes = [vote(0.2, 0.51, 0.31), vote(0.2, 0.52, 0.30), vote(0.2, 0.50, 0.32)]
    already = [vote(0.45, 0.51, 0.31, size=0.06)]
    assert phones_at_ears([EAR], votes, already, width=W, height=H, min_evidence=0.4) == []
    both_ears = [EAR, EarZone(510, 305, 60, 100, "pose")]
    assert len(phones_at_ears(both_ears, votes, [], width=W, height=H, min_evidence=0.4)) == 1


def test_small_faces_have_no_ear_zone() -> None:
    kps = ((0.45, 0.3), (0.55, 0.3), (0.5, 0.35), (0.5, 0.4), (0.4, 0.33), (0.6, 0.33))
    near = Face(Box(0.4, 0.25, 0.6, 0.45), 0.9, kps)
    far = Face(Box(0.4, 0.25, 0.42, 0.27), 0.9, kps)
    zones = face_ear_zones([near, far], W, H, min_face=0.06)
    assert len(zones) == 2 and {round(z.x) for z in zones} == {400, 600}
    assert zones[0].reach == pytest.approx(0.6 * 200)


# -- pose geometry and bounded cost --------------------------------------------------------
def test_pose_square_frames_a_whole_body_and_extends_a_head_and_shoulders_box() -> None:
    cx, cy, side = pose_square(Box(0.4, 0.1, 0.6, 0.9), W, H)  # standing: tall and narrow
    assert side == pytest.approx(1.25 * 800) and cx == pytest.approx(500)
    assert cy - side / 2 < 100 and cy + side / 2 > 900  # the whole box inside
    cx, cy, side = pose_square(Box(0.1, 0.2, 0.9, 1.0), W, H)  # webcam: cut off by the bottom edge
    assert side == pytest.approx(2.0 * 800)
    assert cy - side / 2 < 200 < cy  # the head is in the upper half, the body continues below the frame


class FakePoseModel:
    file = "fake-pose.tflite"
    input_shape = (1, INPUT_SIZE, INPUT_SIZE, 3)

    def __init__(self) -> None:
        self.outputs: dict[str, dict[str, Any]] = {"Identity": {}, "Identity_1": {}}
        self.calls = 0
        self.invoke_ms = 5.0

    def run(self, tensor: np.ndarray) -> dict[str, np.ndarray]:
        assert tensor.shape == (1, INPUT_SIZE, INPUT_SIZE, 3) and tensor.dtype == np.float32
        assert tensor.min() >= 0.0 and tensor.max() <= 1.0
        self.calls += 1
        lm = np.zeros((39, 5), np.float32)
        lm[:, :2] = INPUT_SIZE / 2  # every landmark at the centre of the square
        return {"Identity": lm.reshape(1, -1), "Identity_1": np.array([[0.9]], np.float32)}


def test_pose_runs_on_the_largest_persons_only_and_maps_back_to_the_frame() -> None:
    model = FakePoseModel()
    estimator = PoseEstimator(model)  # type: ignore[arg-type]
    image = np.full((H, W, 3), 128, np.uint8)
    persons = [
        Detection("person", 0.9, Box(0.0, 0.0, 0.1, 0.2)),
        Detection("person", 0.9, Box(0.3, 0.1, 0.7, 0.9)),
        Detection("person", 0.9, Box(0.8, 0.5, 0.9, 0.7)),
        Detection("person", 0.9, Box(0.1, 0.2, 0.3, 0.6)),
    ]
    poses = estimator.estimate_all(image, persons, limit=2)
    assert model.calls == 2 and estimator.invoke_ms == pytest.approx(10.0)
    assert [p.person for p in poses] == [persons[1], persons[3]]
    cx, cy, _ = pose_square(persons[1].box, W, H)
    assert isinstance(poses[0], Pose) and poses[0].presence == pytest.approx(0.9)
    assert np.allclose(poses[0].points, [cx, cy], atol=1e-3)


def test_pose_estimator_rejects_a_model_with_another_input() -> None:
    bad = SimpleNamespace(file="x.tflite", input_shape=(1, 128, 128, 3), outputs={"Identity": {}, "Identity_1": {}})
    with pytest.raises(ValueError, match="256"):
        PoseEstimator(bad)  # type: ignore[arg-type]
