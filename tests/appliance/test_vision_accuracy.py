"""The detectors on the shared real photos, against labels.yaml.

Floors, not exact numbers: each one sits a little below what the shipped models
reach today (noted next to it), so that a decoding, preprocessing or threshold
regression breaks them while a one-box wobble does not.
"""

# ruff: noqa: F811  (the fixtures are imported below until conftest registers tests.support.vision)
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from tests.support.vision import (  # noqa: F401
    Photo,
    float_detections,
    int8_analyses,
    int8_vision,
    labelled_photos,
    vision_state,
)

pytestmark = pytest.mark.slow


def persons(analysis: Any) -> int:
    return len(analysis.labelled("person"))


def exact(photos: list[Photo], *categories: str) -> list[Photo]:
    return [p for p in photos if p.category in categories and p.labels["persons_exact"]]


def test_one_person_counted_on_single_person_photos(labelled_photos: list[Photo], int8_analyses: dict) -> None:
    singles = exact(labelled_photos, "single", "face", "eat")
    right = [p.file for p in singles if persons(int8_analyses[p.file]) == 1]
    assert len(singles) == 20
    assert len(right) >= 14, f"only {right} counted one person"  # today 15/16


def test_groups_counted(labelled_photos: list[Photo], int8_analyses: dict) -> None:
    groups = exact(labelled_photos, "multi")
    found = sum(min(persons(int8_analyses[p.file]), p.labels["persons"]) for p in groups)
    extra = sum(max(0, persons(int8_analyses[p.file]) - p.labels["persons"]) for p in groups)
    right = sum(persons(int8_analyses[p.file]) == p.labels["persons"] for p in groups)
    total = sum(p.labels["persons"] for p in groups)
    assert found >= total - 3, f"found {found} of {total} people"  # today 18/19
    assert extra <= 4  # today 2
    assert right >= 4  # today 5/7


def test_nobody_on_empty_scenes(labelled_photos: list[Photo], int8_analyses: dict) -> None:
    empty = [p for p in labelled_photos if p.category == "empty"]
    with_people = [p.file for p in empty if persons(int8_analyses[p.file]) > 0]
    assert with_people == [], with_people
    assert not any(int8_analyses[p.file].faces for p in empty)


def test_faces_found_where_labelled(labelled_photos: list[Photo], int8_analyses: dict) -> None:
    labelled = [p for p in labelled_photos if p.labels["faces"] > 0]
    found = sum(min(len(int8_analyses[p.file].faces), p.labels["faces"]) for p in labelled)
    total = sum(p.labels["faces"] for p in labelled)
    assert found >= total - 2, f"{found} of {total} labelled faces"  # today 30/30
    # small faces in a group: the short-range 128 px whole-frame pass alone finds none on multi_04
    assert len(int8_analyses["multi_04.jpg"].faces) >= 3


def test_faces_have_keypoints_and_a_facing_estimate(int8_analyses: dict) -> None:
    face = max(int8_analyses["face_01.jpg"].faces, key=lambda f: f.score)
    assert len(face.keypoints) == 6
    right_eye, left_eye, nose = face.keypoints[0], face.keypoints[1], face.keypoints[2]
    assert right_eye[0] < nose[0] < left_eye[0]  # subject's right eye is on the image's left
    assert face.box.x0 < nose[0] < face.box.x1 and face.box.y0 < nose[1] < face.box.y1
    assert face.facing > 0.5  # a frontal portrait
    assert 0.1 < face.box.height < 0.6  # size relative to the frame


def test_phones_found_without_false_phones(first_set_photos: list[Photo], int8_analyses: dict) -> None:
    with_phone = [p.file for p in first_set_photos if int8_analyses[p.file].labelled("cell phone")]
    false = [f for f in with_phone if not next(p for p in first_set_photos if p.file == f).labels["phone"]]
    assert false == []
    assert len(with_phone) >= 2  # today 2/5 (phone_03, phone_05; the phone stage, see test_vision_phones.py)


def test_every_detection_is_normalised_and_labelled(int8_analyses: dict) -> None:
    for analysis in int8_analyses.values():
        for d in analysis.detections:
            assert 0.0 <= d.box.x0 < d.box.x1 <= 1.0 and 0.0 <= d.box.y0 < d.box.y1 <= 1.0
            assert d.label and 0.0 < d.score <= 1.0
        assert "objects" in analysis.timings_ms and "total" in analysis.timings_ms


def test_int8_person_recall_within_5_points_of_float(
    labelled_photos: list[Photo], int8_vision: Any, float_detections: dict
) -> None:
    photos = [p for p in labelled_photos if p.labels["persons_exact"]]
    total = sum(p.labels["persons"] for p in photos)

    def recall(counts: dict[str, int]) -> float:
        return sum(min(counts[p.file], p.labels["persons"]) for p in photos) / total

    int8 = {p.file: sum(d.label == "person" for d in int8_vision.objects.detect(p.image)) for p in photos}
    flt = {p.file: sum(d.label == "person" for d in float_detections[p.file]) for p in photos}
    assert recall(flt) >= 0.85
    assert recall(int8) >= recall(flt) - 0.05, (recall(int8), recall(flt))


def test_dark_frame_skips_the_detectors(int8_vision: Any, labelled_photos: list[Photo]) -> None:
    dark = (labelled_photos[0].image // 12).astype(np.uint8)
    analysis = int8_vision.analyze(dark)
    assert analysis.light.low_light or analysis.light.obstructed
    assert analysis.detections == [] and analysis.faces == []
    assert "objects" not in analysis.timings_ms


def lamp_lit(image: np.ndarray, light: float, seed: int) -> np.ndarray:
    """The scene in an unlit room (``light`` of its light, in linear terms, with a camera's
    noise) with a bright lamp filling the top-left corner: bright on average, dark elsewhere."""
    rng = np.random.default_rng(seed)
    linear = (image.astype(np.float32) / 255.0) ** 2.2 * light
    out = np.clip(linear ** (1 / 2.2) * 255 + rng.normal(0, 3.0, image.shape), 0, 255).astype(np.uint8)
    h, w = out.shape[:2]
    out[: int(h * 0.35), : int(w * 0.42)] = 235
    return out


def test_a_lamp_in_an_unlit_room_is_too_dark_to_check_not_an_empty_desk(
    int8_vision: Any, labelled_photos: list[Photo], int8_analyses: dict
) -> None:
    """A lamp (or a screen, a window) in view keeps the frame's mean brightness over the
    low-light bar while the rest of the room is too dark to see into: where the detectors see
    nobody there, the desk is not called empty (vision.light.nobody_dark_fraction). Before,
    eat_03, multi_04 and phone_05 at 1-2 % of their light were away_from_desk. Somebody the
    detectors still see in such a frame is checked as before."""
    from datetime import UTC, datetime

    from deskwatch.domain import Frame
    from deskwatch.policy.engine import Policy, PolicyContext
    from tests.support.policy import make_config

    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    policy = Policy(make_config().policy)
    away, too_dark, checked = [], [], []
    for seed, photo in enumerate(p for p in labelled_photos if p.labels["persons"]):
        for light in (0.02, 0.01):
            frame = lamp_lit(photo.image, light, seed)
            analysis = int8_vision.analyze(Frame(frame, now, 0))
            assert analysis.light.mean_luma >= 40  # the mean alone says there is light enough
            outcome = policy.evaluate([analysis], PolicyContext(now, "cli", confirming=True))
            types = {f.type for f in outcome.findings}
            if "away_from_desk" in types:
                away.append(f"{photo.file} {light}")
            (too_dark if "low_light" in types else checked).append(photo.file)
    assert away == [], away
    assert too_dark and checked  # the rule is where nobody is seen, not on every dark frame
    # and no photo as it was taken (empty rooms included) is too dark: the darkest, single_06, is 54 % dark
    assert [p for p, a in int8_analyses.items() if a.light.low_light] == []


def test_a_misted_lens_is_a_covered_camera_not_an_empty_desk(int8_vision: Any, labelled_photos: list[Photo]) -> None:
    """A misted or smeared lens, or translucent tape over it, keeps the picture's brightness and
    contrast (the pixel statistics let it through) and the detectors find nobody in it: before,
    19 of the 42 photos with people in them, blurred so (sigma 20 px at 640 px wide), were
    away_from_desk. Where nobody is seen in a picture with no sharp edge anywhere
    (vision.light.nobody_blur_sharpness), the camera counts as covered; somebody still seen
    through the mist is checked as before."""
    from datetime import UTC, datetime

    from deskwatch.domain import Frame
    from deskwatch.policy.engine import Policy, PolicyContext
    from tests.appliance.test_light import blurred
    from tests.support.policy import make_config

    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    policy = Policy(make_config().policy)
    away, misted, checked = [], [], []
    for photo in (p for p in labelled_photos if p.labels["persons"]):
        analysis = int8_vision.analyze(Frame(np.ascontiguousarray(blurred(photo.image, 20)), now, 0))
        outcome = policy.evaluate([analysis], PolicyContext(now, "cli", confirming=True))
        found = {f.type: f.detail for f in outcome.findings}
        if "away_from_desk" in found:
            away.append(photo.file)
        if "camera_obstructed" in found:
            assert "blurred" in found["camera_obstructed"], found
            misted.append(photo.file)
        else:
            checked.append(photo.file)
    assert away == [], away
    assert misted and checked


def test_a_framed_photo_on_the_wall_behind_the_worker_is_not_a_second_person(
    int8_vision: Any, labelled_photos: list[Photo]
) -> None:
    """A framed photo (or a poster, a TV) on the wall behind the worker shows a face that looks
    at the camera, and the policy took it for a second person facing the screen: before, a
    framed print of three of the repo's portraits hung behind the one person of each
    single/face/eat photo, as a camera frame, made 32 extra_person findings in 90 views
    (``deskwatch_dev.pictures``, synthetic). A face beside the worker's with straight edges on
    all four sides is nobody reading the screen (``Face.framed``); never a presentation attack."""
    from datetime import UTC, datetime

    from deskwatch.domain import Frame
    from deskwatch.policy.engine import Policy, PolicyContext
    from deskwatch_dev.pictures import hang, portraits, printed
    from deskwatch_dev.variants import sized
    from tests.support.common import PHOTOS
    from tests.support.policy import make_config

    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    policy = Policy(make_config().policy)
    hung = [p for p in portraits(int8_vision, PHOTOS) if p[0] in ("face_01.jpg", "face_02.jpg", "face_08.jpg")]
    assert len(hung) == 3
    accused, views, framed = [], 0, 0
    for photo in exact(labelled_photos, "single", "face", "eat"):
        frame = sized(photo.image, "1280x720")
        people = int8_vision.analyze(Frame(frame, now, 0)).labelled("person")
        worker_x = max(people, key=lambda d: d.box.area).box.centre[0] if people else 0.5
        for source, crop, share in hung:
            if source == photo.file:
                continue
            picture, inner = printed(crop, "framed print")
            for height in (0.10, 0.14):
                view = hang(frame, picture, share * inner, height, worker_x)
                assert view is not None
                analysis = int8_vision.analyze(Frame(view, now, 0))
                views += 1
                framed += any(f.framed for f in analysis.faces)
                outcome = policy.evaluate([analysis], PolicyContext(now, "cli", confirming=True))
                found = {f.type for f in outcome.findings} & {"extra_person", "presentation_attack"}
                if found:
                    accused.append(f"{photo.file} + {source} at {height:.0%}: {sorted(found)}")
    assert views == 114
    assert framed >= views // 2  # the frame is seen in most views: the test is about it
    assert accused == [], accused


def test_short_range_model_finds_group_faces_through_the_person_pass(
    vision_state: Any, labelled_photos: list[Photo]
) -> None:
    from deskwatch.app import build_vision
    from tests.support.vision import vision_config

    group = next(p for p in labelled_photos if p.file == "multi_04.jpg")
    short = build_vision(vision_config(vision_state, face_model="short_range", phones={"enabled": False}))
    try:
        assert short.faces.detect(group.image) == []  # too small for the 128 px whole-frame pass
        analysis = short.analyze(group.image)
        assert len(analysis.faces) == 3
        assert all(f.facing > 0.5 for f in analysis.faces)  # three people looking at the camera
    finally:
        short.close()


# 1170 one-frame scans: 85-244 s alone on two cores (CI: 239 s), past 300 s when CI shared the machine
@pytest.mark.timeout(1200)
def test_no_accusation_a_camera_variation_of_the_photo_contradicts(
    labelled_photos: list[Photo], int8_vision: Any, int8_analyses: dict
) -> None:
    """Each photo as it is and in 12 variations a camera adds (``deskwatch_dev.variants``:
    mirrored, darker, brighter, gamma, warm light, JPEG, noise, blur, smaller, cropped,
    tilted), as the file and fitted into a 1280x720 camera frame, one frame through the
    policy: no phone_use, extra_person, eating or presentation_attack its labels contradict.
    Seen from above, a worker's arms and back once gave two strong person boxes (an
    extra_person on 11 of 360 scans of the first 8 variants, 5 of them on phone_desk_06), a
    man seen from behind was nobody (away_from_desk) once mirrored, and a travel mug held at
    the chest (multi_08 tilted -5, as a camera frame) was a phone in hand at 0.497; no
    away_from_desk either (its last miss, hands alone, went with the hands' second look)."""
    from datetime import UTC, datetime

    from deskwatch.domain import Frame
    from deskwatch.policy.engine import Policy, PolicyContext
    from deskwatch_dev.variants import SIZES, VARIANTS, false_findings, sized
    from tests.support.policy import make_config

    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    policy = Policy(make_config().policy)
    false: dict[str, list[str]] = {}
    for photo in labelled_photos:
        for name, vary in VARIANTS.items():
            varied = np.ascontiguousarray(vary(photo.image))
            for size in SIZES:  # the file, and fitted into a 1280x720 camera frame
                if name == "photo" and size == "file":
                    analysis = int8_analyses[photo.file]
                else:
                    analysis = int8_vision.analyze(Frame(sized(varied, size), now, 0))
                outcome = policy.evaluate([analysis], PolicyContext(now, "cli", confirming=True))
                for finding in false_findings(photo.labels, {f.type for f in outcome.findings}):
                    false.setdefault(finding, []).append(f"{photo.file} {name} {size}")
    assert "phone_use" not in false, false
    assert "extra_person" not in false, false
    assert "presentation_attack" not in false, false
    # phone_desk_02 and phone_hand_03 show a person's hands and nothing else of them: the
    # presence check's hands keep them from being an empty desk (vision/hands.py).
    # nophone_hand_04's brightened tablet-holding hands, as a camera frame, were one (no palm the
    # landmark model confirmed) until the hands were looked at again with the shadows lifted;
    # phone_desk_05's top-down hands mirrored were one until the hands were looked for on every
    # frame where nobody counts (CenterNet's 0.149 had been under the trace gate's 0.15).
    assert "away_from_desk" not in false, false
    # gold coins over the eyes (nophone_hand_02 mirrored) were a doughnut. A glass raised for a
    # toast whose rim, in one cropped camera-frame view, is 0.02 ear widths under the lips
    # (the doughnuts being eaten: 0.08 above to 0.04 below) is at the mouth in 2-D; no
    # geometry tells the two apart.
    assert set(false.get("eating", [])) <= KNOWN_EATING_IN_CAMERA_FRAMES, false


KNOWN_EATING_IN_CAMERA_FRAMES = {"multi_07.jpg 85 % crop 1280x720"}


def test_the_presence_check_finds_who_the_detector_missed_and_nobody_on_empty_scenes(
    labelled_photos: list[Photo], int8_vision: Any
) -> None:
    """single_08 mirrored: NanoDet scores the man standing with his back to the camera 0.2 and
    BlazeFace sees no face, so the frame looked empty; CenterNet's person (0.7) keeps it from
    being an empty desk. On the empty scenes it runs and finds nobody."""
    from datetime import UTC, datetime

    from deskwatch.domain import Frame
    from deskwatch.policy.engine import Policy, PolicyContext
    from tests.support.policy import make_config

    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    policy = Policy(make_config().policy)
    (man,) = [p for p in labelled_photos if p.file == "single_08.jpg"]
    analysis = int8_vision.analyze(Frame(np.ascontiguousarray(man.image[:, ::-1]), now, 0))
    assert "presence" in analysis.timings_ms and not analysis.faces
    (person,) = analysis.labelled("person")
    assert person.score >= 0.5 and 0.3 < person.box.centre[0] < 0.7
    outcome = policy.evaluate([analysis], PolicyContext(now, "cli", confirming=True))
    assert "away_from_desk" not in {f.type for f in outcome.findings}
    empty = [p for p in labelled_photos if p.category == "empty"]
    assert empty
    for photo in empty:  # CenterNet and the hands both look, and find nobody
        analysis = int8_vision.analyze(Frame(photo.image, now, 0))
        assert "presence" in analysis.timings_ms and analysis.labelled("person") == [], photo.file
        outcome = policy.evaluate([analysis], PolicyContext(now, "cli", confirming=True))
        assert "away_from_desk" in {f.type for f in outcome.findings}, photo.file
