"""The presence check's hands (vision/hands.py): palms, then the hand landmark model's
presence score, on real photos with the shipped models; the decoding and the hand's square
on made-up outputs; the models held while the desk is empty and let go for the pose model."""

from __future__ import annotations

import math
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deskwatch.vision.config import VisionConfig
from deskwatch.vision.hands import (
    ANCHORS,
    HAND_MODEL,
    PALM_MODEL,
    PALM_SIZE,
    HandCheck,
    Palm,
    decode_palms,
    hand_square,
)
from deskwatch.vision.runtime import ModelError, ModelStore, read_manifest
from tests.support.vision import MODELS, Photo

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def test_the_anchors_are_mediapipes_palm_grid() -> None:
    assert ANCHORS.shape == (2016, 2)
    assert np.allclose(ANCHORS[0], [0.5 / 24, 0.5 / 24]) and np.allclose(ANCHORS[1], ANCHORS[0])  # 2 per cell
    assert np.allclose(ANCHORS[2], [1.5 / 24, 0.5 / 24])
    assert np.allclose(ANCHORS[1152], [0.5 / 12, 0.5 / 12]) and np.allclose(ANCHORS[1157], ANCHORS[1152])  # 6 per cell
    assert np.allclose(ANCHORS[-1], [11.5 / 12, 11.5 / 12])


def _outputs(places: dict[int, tuple[float, tuple[float, float], float]]) -> tuple[np.ndarray, np.ndarray]:
    """Raw detector outputs with a palm of (logit, (dx, dy) offset, size) at the given anchors,
    its wrist 10 px below the centre and its middle finger's base 10 px above."""
    regressors = np.zeros((2016, 18), np.float32)
    logits = np.full(2016, -20.0, np.float32)
    for i, (logit, (dx, dy), size) in places.items():
        logits[i] = logit
        regressors[i, :4] = (dx, dy, size, size)
        regressors[i, 4:6] = (dx, dy + 10)  # keypoint 0: the wrist
        regressors[i, 8:10] = (dx, dy - 10)  # keypoint 2: the middle finger's base
    return regressors, logits


def test_palms_come_back_in_frame_pixels_best_first_one_per_place() -> None:
    # a 1280x720 frame letterboxed into 192: scale 0.15, black bars of 42 px above and below
    scale, pad = PALM_SIZE / 1280, (0, 42)
    i = 24 * 10 + 5  # cell (5, 10) of the stride-8 grid: its anchors' centre is (44, 84) in the input
    regressors, logits = _outputs(
        {
            i * 2: (3.0, (4.0, 0.0), 30.0),
            i * 2 + 1: (2.0, (5.0, 1.0), 30.0),  # the same palm again from the cell's other anchor
            1152 + 6 * 30: (1.0, (0.0, 0.0), 20.0),  # another place, weaker
            100: (-2.0, (0.0, 0.0), 20.0),  # 0.12: not worth a look
        }
    )
    palms = decode_palms(regressors, logits, scale, pad)
    assert [round(p.score, 3) for p in palms] == [round(1 / (1 + math.exp(-3)), 3), round(1 / (1 + math.exp(-1)), 3)]
    first = palms[0]
    assert first.centre == pytest.approx(((44 + 4) / scale, (84 - 42) / scale))
    assert first.size == pytest.approx((30 / scale, 30 / scale))
    assert first.wrist == pytest.approx(((44 + 4) / scale, (84 + 10 - 42) / scale))
    assert decode_palms(regressors, logits, scale, pad, limit=1) == palms[:1]


def test_the_hand_square_points_from_the_wrist_to_the_fingers() -> None:
    up = Palm(0.9, (100.0, 100.0), (40.0, 40.0), wrist=(100.0, 120.0), middle_base=(100.0, 80.0))
    centre, side, angle = hand_square(up)
    assert angle == pytest.approx(0.0)
    assert centre == pytest.approx((100.0, 80.0))  # half a palm towards the fingers
    assert side == pytest.approx(2.6 * 40)
    right = Palm(0.9, (100.0, 100.0), (40.0, 40.0), wrist=(80.0, 100.0), middle_base=(120.0, 100.0))
    centre, _, angle = hand_square(right)
    assert angle == pytest.approx(math.pi / 2)
    assert centre == pytest.approx((120.0, 100.0))


@pytest.fixture(scope="module")
def hand_check(tmp_path_factory: pytest.TempPathFactory) -> HandCheck:
    return HandCheck(ModelStore(VisionConfig(models_dir=str(MODELS), threads=2)), threshold=0.5)


def _photo(photos: list[Photo], name: str) -> np.ndarray:
    return next(p.image for p in photos if p.file == name)


def test_hands_on_a_table_are_found_and_the_empty_scenes_have_none(
    hand_check: HandCheck, labelled_photos: list[Photo]
) -> None:
    """phone_desk_02: two hands on a café table (nothing else of the person in view):
    both found, ~0.98-1.0; the empty scenes (a phone on closed laptops among them, which the
    palm detector alone takes for a palm) have none."""
    hands = hand_check.find(_photo(labelled_photos, "phone_desk_02.jpg"))
    assert len(hands) >= 2 and hands[0].score >= 0.9, hands
    assert hand_check.model_ms > 0
    for hand in hands:  # both at the top of the photo, over the laptop's keyboard and left of the cup
        assert hand.box.centre[1] < 0.3 and 0.1 < hand.box.centre[0] < 0.55 and hand.box.width < 0.4, hand
    empty = [p for p in labelled_photos if p.category == "empty" or p.file == "phone_only_01.jpg"]
    assert len(empty) >= 3
    for photo in empty:
        for view in (photo.image, np.ascontiguousarray(photo.image[:, ::-1])):
            assert hand_check.find(view) == [], photo.file


def test_a_hand_the_landmark_model_reads_only_mirrored_is_still_a_hand(
    hand_check: HandCheck, labelled_photos: list[Photo]
) -> None:
    """nophone_hand_04's left two thirds: a hand holding a tablet from below, its arm in view.
    The landmark model gives the palm's square 0.38 (under the 0.5 bar) and its mirror image
    ~0.7: the hand is found, at the hand (lower left), as it is in the mirrored photo."""
    image = _photo(labelled_photos, "nophone_hand_04.jpg")
    left = np.ascontiguousarray(image[:, : image.shape[1] * 2 // 3])
    for view, mirrored in ((left, False), (np.ascontiguousarray(left[:, ::-1]), True)):
        hands = hand_check.find(view)
        assert hands and hands[0].score >= 0.5, (mirrored, hands)
        x = 1 - hands[0].box.centre[0] if mirrored else hands[0].box.centre[0]
        assert x < 0.5 and hands[0].box.centre[1] > 0.4, (mirrored, hands[0])


def test_fingers_at_the_top_of_a_camera_frame_are_found_in_its_squares(
    hand_check: HandCheck, labelled_photos: list[Photo]
) -> None:
    """phone_desk_02's centre (a laptop and a cup, the typing hands cut to their fingers at the
    top edge) as a 1280x720 frame: shrunk whole into the palm detector's 192 px it shows no
    palm at all; its left and right squares (720 px) show the fingers' hand, found at the top
    of the frame. The same with a frame too narrow to have squares: nothing."""
    from deskwatch.commands.bench import fit_frame

    image = _photo(labelled_photos, "phone_desk_02.jpg")
    h, w = image.shape[:2]
    centre = np.ascontiguousarray(image[h // 6 : h * 5 // 6, w // 6 : w * 5 // 6])
    frame = fit_frame(centre, 1280, 720)
    hands = hand_check.find(frame)
    assert hands and hands[0].score >= 0.5, hands
    assert hands[0].box.centre[1] < 0.35 and 0.1 < hands[0].box.centre[0] < 0.9, hands[0]
    assert hand_check.find(fit_frame(centre, 800, 720)) == []  # 1.1:1, looked at whole only


def test_the_hand_models_stay_until_released(labelled_photos: list[Photo]) -> None:
    store = ModelStore(VisionConfig(models_dir=str(MODELS), threads=2))
    check = HandCheck(store, threshold=0.5)
    assert store._models == {}  # verified at the start, loaded when a frame needs them
    hands = check.find(_photo(labelled_photos, "phone_desk_02.jpg"))
    assert hands and set(store._models) == {PALM_MODEL, HAND_MODEL}
    held = dict(store._models)
    assert check.find(_photo(labelled_photos, "phone_desk_02.jpg")) == hands
    assert store._models == held  # the same interpreters: nothing loaded again for the next frame
    assert check.release() and store._models == {} and not check.release()
    manifest = read_manifest(MODELS)
    assert store.loaded() == {f: manifest[f].sha256 for f in (PALM_MODEL, HAND_MODEL)}  # still reported in use
    assert check.find(_photo(labelled_photos, "phone_desk_02.jpg")) == hands  # loaded (and verified) again


def test_the_pose_and_the_hand_models_are_never_held_together(
    tmp_path: Path, labelled_photos: list[Photo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An empty desk lets the pose model go and loads the hand models, which stay while the
    desk stays empty (no loading on the next frames of the burst) and go before the pose
    model comes back for a person: the two (~26 and ~24 MB) are never held at once."""
    from deskwatch.app import build_vision
    from deskwatch.vision.pipeline import POSE_MODEL
    from tests.support.vision import vision_config

    vision = build_vision(vision_config(tmp_path, object_precision="int8"))
    store = vision.store
    built: list[str] = []
    build = store._build
    monkeypatch.setattr(store, "_build", lambda file: built.append(file) or build(file))
    try:
        empty, person = _photo(labelled_photos, "empty_04.jpg"), _photo(labelled_photos, "single_01.jpg")
        vision.analyze(person)
        assert POSE_MODEL in store._models and PALM_MODEL not in store._models
        vision.analyze(empty)
        assert "presence" in vision.analyze(empty).timings_ms  # nobody: the hands were looked for
        assert POSE_MODEL not in store._models and PALM_MODEL in store._models
        assert built.count(PALM_MODEL) == 1  # twice looked, once loaded
        vision.analyze(person)
        assert POSE_MODEL in store._models and not {PALM_MODEL, HAND_MODEL} & set(store._models)
        assert built.count(POSE_MODEL) == 1
    finally:
        vision.close()


def test_a_missing_or_altered_hand_model_stops_the_start(tmp_path: Path) -> None:
    for name in ("manifest.yaml", PALM_MODEL):
        shutil.copy(MODELS / name, tmp_path / name)
    with pytest.raises(ModelError, match=r"hand_landmark_lite\.tflite.*reinstall"):
        HandCheck(ModelStore(VisionConfig(models_dir=str(tmp_path))), threshold=0.5)
    shutil.copy(MODELS / HAND_MODEL, tmp_path / HAND_MODEL)
    data = bytearray((tmp_path / PALM_MODEL).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / PALM_MODEL).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        HandCheck(ModelStore(VisionConfig(models_dir=str(tmp_path))), threshold=0.5)


def test_hands_keep_the_desk_from_being_called_empty(int8_vision: Any, labelled_photos: list[Photo]) -> None:
    """phone_desk_02 mirrored: NanoDet's person is 0.36, under the away rule's 0.4, and
    CenterNet sees nobody: the frame was "nobody at the desk". Now the presence check looks
    (no person the rule counts) and the surest hand is the worker."""
    from deskwatch.domain import Frame
    from deskwatch.policy.engine import Policy, PolicyContext
    from tests.support.policy import make_config

    image = np.ascontiguousarray(_photo(labelled_photos, "phone_desk_02.jpg")[:, ::-1])
    analysis = int8_vision.analyze(Frame(image, NOW, 0))
    assert "presence" in analysis.timings_ms
    persons = sorted(analysis.labelled("person"), key=lambda d: -d.score)
    assert persons[0].score >= 0.9 and persons[0].box.width < 0.6  # a hand's square, not a body
    assert all(d.score < 0.4 for d in persons[1:])
    outcome = Policy(make_config().policy).evaluate([analysis], PolicyContext(NOW, "cli", confirming=True))
    assert "away_from_desk" not in {f.type for f in outcome.findings}


def test_the_check_looks_where_nobody_reaches_what_the_away_rule_counts(tmp_path: Path) -> None:
    """The pipeline learns the away rule's bars from the policy, and with the profile's rule
    off there is no presence check and no hand model in use."""
    import dataclasses

    from deskwatch.app import build_vision
    from deskwatch.domain import Box, Detection, Face
    from tests.support.vision import vision_config

    cfg = vision_config(tmp_path)
    rules = dataclasses.replace(
        cfg.policy.rules,
        away_from_desk=dataclasses.replace(cfg.policy.rules.away_from_desk, min_person_score=0.3, min_face_score=0.6),
    )
    vision = build_vision(dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, rules=rules)))
    try:
        assert vision.counts_from == (0.3, 0.6) and vision.hands is not None
        box = Box(0.2, 0.2, 0.6, 0.9)
        assert vision.nobody_counted([Detection("person", 0.29, box), Detection("cup", 0.9, box)], [])
        assert not vision.nobody_counted([Detection("person", 0.3, box)], [])
        assert vision.nobody_counted([], [Face(box, 0.59)])
        assert not vision.nobody_counted([], [Face(box, 0.6)])
    finally:
        vision.close()
    off = dataclasses.replace(rules, away_from_desk=dataclasses.replace(rules.away_from_desk, enabled=False))
    vision = build_vision(dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, rules=off)))
    try:
        assert vision.presence is None and vision.hands is None
        assert not {PALM_MODEL, HAND_MODEL} & set(vision.model_hashes())
    finally:
        vision.close()


def test_the_pose_model_is_let_go_while_hands_are_looked_for_and_comes_back_for_the_next_person(
    int8_vision: Any, labelled_photos: list[Photo]
) -> None:
    """Looking for hands must not hold more memory than a frame with a person: the phone
    stage's pose model (~20 MB) is let go first, and loaded again (and verified) when a
    person is in view; the verdicts do not change."""
    from deskwatch.domain import Box, Detection, Frame
    from deskwatch.vision.pipeline import POSE_MODEL

    # a phone held in a hand, and faces: the pose finds the hand (without a face the hand models
    # would be asked to vouch for it, the pose let go for them: Vision.somebody_holds)
    person = _photo(labelled_photos, "phone_03.jpg")
    empty = next(p.image for p in labelled_photos if p.category == "empty")
    before = int8_vision.analyze(Frame(person, NOW, 0))
    assert POSE_MODEL in int8_vision.store._models and "phones" in before.timings_ms
    weak = Detection("person", 0.36, Box(0.3, 0.3, 0.7, 0.9))  # a trace of somebody, under the away rule's bar
    assert int8_vision.somebody(empty, [weak])[0] == []  # looked for hands: none
    assert POSE_MODEL not in int8_vision.store._models  # let go ...
    assert POSE_MODEL in int8_vision.model_hashes()  # ... and still reported in use
    after = int8_vision.analyze(Frame(person, NOW, 2))
    assert POSE_MODEL in int8_vision.store._models
    assert [d.to_json() for d in after.detections] == [d.to_json() for d in before.detections]
    assert any(d.behaviour == "in_hand" for d in after.detections)


def test_no_desk_is_called_empty_before_the_hands_were_looked_for(
    int8_vision: Any, labelled_photos: list[Photo], monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default (vision.hand_check_from 0) every frame where nobody counts gets the hand
    check, the repo's empty scenes included, and none of them shows a hand. With a
    hand_check_from above 0 (an operator saving the hand models on empty rooms) it looks only
    where something hints at a person: the empty scenes show no such trace."""
    import dataclasses

    from deskwatch.domain import Box, Detection, Frame

    looked: list[str] = []
    find = int8_vision.hands.find
    monkeypatch.setattr(int8_vision.hands, "find", lambda image: looked.append("x") or find(image))
    empty = [p for p in labelled_photos if p.category == "empty" or p.file == "phone_only_01.jpg"]
    nobody = []
    for photo in empty:
        for view in (photo.image, np.ascontiguousarray(photo.image[:, ::-1])):
            analysis = int8_vision.analyze(Frame(view, NOW, 0))
            if "presence" not in analysis.timings_ms:
                continue  # somebody counted already (a picture on a wall, ...): no presence check
            nobody.append(photo.file)
            persons = analysis.labelled("person")  # a weak person box on a monitor may stay, under the bar
            assert all(d.score < int8_vision.counts_from[0] for d in persons), (photo.file, persons)
    assert len(nobody) >= 4 and len(looked) == len(nobody), (nobody, looked)

    looked.clear()
    gated = dataclasses.replace(int8_vision.cfg, hand_check_from=0.15)
    monkeypatch.setattr(int8_vision, "cfg", gated)
    for photo in empty:
        int8_vision.analyze(Frame(photo.image, NOW, 0))
    assert looked == []
    int8_vision.somebody(empty[0].image, [Detection("person", 0.36, Box(0.3, 0.3, 0.7, 0.9))])
    assert looked == ["x"]


def test_typing_hands_with_no_trace_of_a_person_are_somebody_at_the_desk(
    int8_vision: Any, labelled_photos: list[Photo]
) -> None:
    """phone_desk_05 mirrored, in a 1280x720 frame: hands on a keyboard seen from above.
    NanoDet finds no person, BlazeFace no face, CenterNet's person is 0.149: with the former
    trace gate (0.15) the hands were never looked for and the desk was called empty. The
    hand models find both hands (0.99)."""
    from deskwatch.commands.bench import fit_frame
    from deskwatch.domain import Frame
    from deskwatch.policy.engine import Policy, PolicyContext
    from tests.support.policy import make_config

    image = fit_frame(np.ascontiguousarray(_photo(labelled_photos, "phone_desk_05.jpg")[:, ::-1]), 1280, 720)
    analysis = int8_vision.analyze(Frame(image, NOW, 0))
    assert "presence" in analysis.timings_ms
    persons = analysis.labelled("person")
    assert persons and persons[0].score >= 0.9 and persons[0].box.width < 0.4, persons  # a hand's square
    outcome = Policy(make_config().policy).evaluate([analysis], PolicyContext(NOW, "cli", confirming=True))
    assert "away_from_desk" not in {f.type for f in outcome.findings}


def test_hands_in_shadow_are_found_with_the_shadows_lifted(hand_check: HandCheck, labelled_photos: list[Photo]) -> None:
    """nophone_hand_04's hands holding a tablet in front of a bright window (the camera exposes
    for the window: the hands a dark silhouette) and through a 160-degree lens: the palm
    detector finds no hand in them as they are, so the worker was away_from_desk; looked at
    again with the shadows lifted, the hand is found (``deskwatch_dev.variants --home``). The
    empty scenes under the same conditions have none, lifted or not."""
    from deskwatch_dev.variants import HOME_VARIANTS

    image = _photo(labelled_photos, "nophone_hand_04.jpg")
    for condition in ("backlit", "wide 160"):
        hands = hand_check.find(np.ascontiguousarray(HOME_VARIANTS[condition](image)))
        assert hands and hands[0].score >= 0.5, (condition, hands)
    empty = [p for p in labelled_photos if p.category == "empty" or p.file == "phone_only_01.jpg"]
    for photo in empty:
        for condition, vary in HOME_VARIANTS.items():
            assert hand_check.find(np.ascontiguousarray(vary(photo.image))) == [], (photo.file, condition)


def test_models_loaded_again_after_an_empty_desk_say_so_once_at_info(
    tmp_path: Path, labelled_photos: list[Photo], caplog: pytest.LogCaptureFixture
) -> None:
    """The pose and hand models change places at every empty desk (above): each model's first load
    is an operator's line in the journal, the swaps after it are not. The soak (make soak) found 302
    of the daemon's 1530 lines over 30 simulated days to be these reloads, three at every scan of an
    empty desk, in a journal meant to read one line per scan and per event."""
    import logging

    from deskwatch.app import build_vision
    from tests.support.vision import vision_config

    empty, person = _photo(labelled_photos, "empty_04.jpg"), _photo(labelled_photos, "single_01.jpg")
    with caplog.at_level(logging.DEBUG, logger="deskwatch.vision.runtime"):
        vision = build_vision(vision_config(tmp_path, object_precision="int8"))
        try:
            for _ in range(3):
                vision.analyze(person)
                vision.analyze(empty)
        finally:
            vision.close()
    loads = [r.getMessage().split()[2] for r in caplog.records if r.getMessage().startswith("loaded model")]
    info = [r.getMessage().split()[2] for r in caplog.records if r.getMessage().startswith("loaded model")
            and r.levelno >= logging.INFO]  # fmt: skip
    assert sorted(info) == sorted(set(loads))  # each model once at INFO
    assert {PALM_MODEL, HAND_MODEL, "pose_landmark_full_pruned.tflite"} <= set(info)
    assert len(loads) - len(info) >= 6  # the swaps are still there (twice each), at DEBUG


def test_a_phone_in_hand_with_no_face_and_a_weak_person_is_vouched_for_by_the_hand_models_without_holding_both(
    int8_vision: Any, labelled_photos: list[Photo]
) -> None:
    """A phone held in both hands (phone_hand_01) through a 120 degree lens, as a 1280x720 frame:
    no face, NanoDet's person under 0.6, so the pose's hands alone do not put the phone in hand
    (Vision.somebody_holds); the hand models confirm a hand, so it stays in hand. The pose model
    was let go for them (the two are never held together) and comes back for the next frame,
    with the same verdict."""
    from deskwatch.domain import Frame
    from deskwatch.vision.pipeline import PERSON_STRONG, POSE_MODEL
    from deskwatch_dev.variants import HOME_VARIANTS, sized

    person = sized(
        np.ascontiguousarray(HOME_VARIANTS["wide 120"](_photo(labelled_photos, "phone_hand_01.jpg"))), "1280x720"
    )
    first = int8_vision.analyze(Frame(person, NOW, 0))
    assert first.faces == [] and max(d.score for d in first.labelled("person")) < PERSON_STRONG
    assert [d.behaviour for d in first.labelled("cell phone")] == ["in_hand"]
    assert POSE_MODEL not in int8_vision.store._models and int8_vision.hands._held  # let go for the hands
    second = int8_vision.analyze(Frame(person, NOW, 1))
    assert [d.to_json() for d in second.detections] == [d.to_json() for d in first.detections]
