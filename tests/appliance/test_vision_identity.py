"""Identity on the repository's photos, for both backends (tflite, the default, and
face_recognition, the reference): the same person matched, different people not, the
TFLite network computing dlib's descriptors, separation no worse than dlib's;
templates 0600 and tagged with their backend, a backend change asks for enrolment;
enrolment with consent and quality checks; profiles without identity."""

# ruff: noqa: F811  (the fixtures are imported below until conftest registers tests.support.vision)
from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deskwatch.app import build_vision
from deskwatch.cli import main
from deskwatch.vision.identity import (
    DlibEmbedder,
    FaceEmbedder,
    IdentityChecker,
    read_templates,
    save_templates,
    template_path,
)
from deskwatch.vision.pipeline import build_embedder
from tests.support.vision import (  # noqa: F401
    PHOTOS,
    Photo,
    int8_vision,
    labelled_photos,
    load_rgb,
    vision_config,
    vision_state,
)

pytestmark = pytest.mark.slow

# Photos of known identities (labels.yaml same_person_as) and one face each.
IDENTITY_PHOTOS = ["face_01", "face_02", "face_03", "face_04", "face_06", "face_07", "face_08", "single_03"]
BACKENDS = ["tflite", "face_recognition"]


@pytest.fixture(scope="module")
def embedders(int8_vision: Any) -> dict[str, FaceEmbedder]:
    tflite_cfg = dataclasses.replace(int8_vision.cfg, identity_backend="tflite")
    return {"tflite": build_embedder(tflite_cfg, int8_vision.store), "face_recognition": DlibEmbedder()}


@pytest.fixture(scope="module")
def descriptors(
    int8_vision: Any, labelled_photos: list[Photo], embedders: dict[str, FaceEmbedder]
) -> dict[str, dict[str, np.ndarray]]:
    """backend -> file stem -> descriptor of the photo's largest face."""
    out: dict[str, dict[str, np.ndarray]] = {b: {} for b in BACKENDS}
    for p in labelled_photos:
        stem = p.file.rsplit(".", 1)[0]
        if stem in IDENTITY_PHOTOS:
            face = max(int8_vision.faces.detect(p.image), key=lambda f: f.box.area)
            for backend, embedder in embedders.items():
                d = embedder.embed(p.image, face)
                assert d is not None, f"{backend} could not describe the face of {p.file}"
                out[backend][stem] = d
    return out


def same_person(a: str, b: str, photos: list[Photo]) -> bool:
    labels = {p.file.rsplit(".", 1)[0]: p.labels for p in photos}
    return f"{b}.jpg" == labels[a]["same_person_as"] or f"{a}.jpg" == labels[b]["same_person_as"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_person_matched_different_people_not(
    backend: str, descriptors: dict[str, dict[str, np.ndarray]], labelled_photos: list[Photo]
) -> None:
    enc = descriptors[backend]
    assert len(enc) == len(IDENTITY_PHOTOS)
    pairs = list(itertools.combinations(IDENTITY_PHOTOS, 2))
    same = [(a, b) for a, b in pairs if same_person(a, b, labelled_photos)]
    assert len(same) == 4
    for a, b in pairs:
        distance = float(np.linalg.norm(enc[a] - enc[b]))
        if (a, b) in same:
            assert distance <= 0.6, f"{backend}: {a} and {b} are one person but {distance:.3f} apart"
        else:
            assert distance > 0.6, f"{backend}: {a} and {b} are different people but only {distance:.3f} apart"


def test_tflite_network_computes_dlibs_descriptors(
    int8_vision: Any, labelled_photos: list[Photo], embedders: dict[str, FaceEmbedder]
) -> None:
    """On dlib's own 150x150 chips, the converted network (int8 weights) gives dlib's
    descriptors within 0.08 (face_recognition's tolerance is 0.6): the conversion is right."""
    import dlib  # type: ignore[import-untyped]

    from deskwatch.vision.identity import face_pixels

    tflite = embedders["tflite"]
    dlib_embedder = embedders["face_recognition"]
    assert isinstance(dlib_embedder, DlibEmbedder)
    model = tflite.model  # type: ignore[attr-defined]
    gaps = []
    for p in labelled_photos:
        if p.file.rsplit(".", 1)[0] not in [*IDENTITY_PHOTOS, "multi_07", "multi_08", "single_01"]:
            continue
        h, w = p.image.shape[:2]
        for face in int8_vision.faces.detect(p.image):
            box = face_pixels(face, w, h)
            if box[3] - box[1] < 60:
                continue
            ref = dlib_embedder.encode(p.image, box)
            shape = dlib_embedder._shape(p.image, dlib.rectangle(*box))
            chip = np.asarray(dlib.get_face_chip(p.image, shape, 150, 0.25), np.float32)
            ours = next(iter(model.run(chip[None]).values())).reshape(-1)
            gaps.append(float(np.linalg.norm(ours - ref)))
    assert len(gaps) >= 10
    assert max(gaps) < 0.08, f"TFLite vs dlib on dlib's chips: {sorted(gaps)}"


def test_a_group_photo_links_each_of_its_people_to_their_own_face() -> None:
    """``same_person_as`` as a list: each linked person gets the group's face closest to
    their other photos, a different face each, closest pairs first; a face nobody links
    stays somebody new."""
    from deskwatch.domain import Box, Face
    from deskwatch.technician.faceid_bench import LabelledFace, assign_people

    def lf(file: str, index: int, *vector: float) -> LabelledFace:
        out = LabelledFace(file, index, Face(Box(0, 0, 1, 1), 1.0), "")
        out.descriptors["b"] = np.asarray(vector)
        return out

    a1, a2, b1 = lf("a1.jpg", 0, 0, 0), lf("a2.jpg", 0, 0.1, 0), lf("b1.jpg", 0, 5, 5)
    g = [lf("g.jpg", 0, 5.2, 5), lf("g.jpg", 1, 9, 9), lf("g.jpg", 2, 0.2, 0.1)]
    assign_people([a1, a2, b1, *g], [("a1.jpg", "a2.jpg"), ("g.jpg", "a1.jpg"), ("g.jpg", "b1.jpg")], "b")
    assert a1.who == a2.who == g[2].who
    assert b1.who == g[0].who != a1.who
    assert g[1].who not in {a1.who, b1.who}


def test_separation_no_worse_than_dlib(int8_vision: Any, embedders: dict[str, FaceEmbedder]) -> None:
    """Every face of the repository's photos, both backends, 23 pairs of photos of one
    person (three people with 3-7 photos each taken on other days, one of them hard: a
    beanie, eyes closed, dusk). At the default tolerance (0.6) the TFLite backend accepts
    no more impostor pairs than dlib; at the same number of false accepts as dlib it
    rejects no more genuine pairs (the two backends' trade-off curves, compared at dlib's
    operating point); the spread between the distributions (d') is no smaller."""
    from deskwatch.technician import faceid_bench as fb

    items = fb.collect_faces(PHOTOS, int8_vision.faces.detect, 60)
    fb.describe(items, embedders, repeats=1)
    faces = [lf for lf, _ in items]
    fb.assign_people(faces, fb.read_links(PHOTOS), "face_recognition")
    grid = [round(0.55 + 0.005 * k, 3) for k in range(31)]  # 0.55 .. 0.70
    ours, ref = (fb.separation(faces, b, grid) for b in BACKENDS)
    assert ours["genuine_pairs"] == ref["genuine_pairs"] >= 23  # the labelled same-person pairs
    at_ours, at_ref = ours["at_tolerance"]["0.6"], ref["at_tolerance"]["0.6"]
    assert at_ours["false_accepts"] <= at_ref["false_accepts"], (ours, ref)
    matched = [ours["at_tolerance"][f"{t:g}"] for t in grid]
    matched = [a for a in matched if a["false_accepts"] <= at_ref["false_accepts"]]
    assert min(a["false_rejects"] for a in matched) <= at_ref["false_rejects"], (ours["at_tolerance"], at_ref)
    assert ours["d_prime"] >= ref["d_prime"] - 0.1, (ours["d_prime"], ref["d_prime"])
    # the faces the face mesh declines (profiles, a hand) are not described: never "unknown"
    assert ours["not_described"] <= 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_no_photo_of_the_worker_is_called_somebody_else(
    backend: str, int8_vision: Any, embedders: dict[str, FaceEmbedder]
) -> None:
    """The undecided band (vision.identity_unknown_distance, 0.65): no pair of photos of
    one person is further apart, so none is "unknown" - the first step of an
    unrecognized_person accusation - while most pairs of different people still are."""
    from deskwatch.technician.faceid_bench import identity_figures
    from deskwatch.vision.config import VisionConfig

    unknown_distance = VisionConfig().unknown_distance
    fig = identity_figures(
        PHOTOS, int8_vision.faces.detect, {backend: embedders[backend]}, None,
        min_face_px=60, tolerance=0.6, unknown_distance=unknown_distance, repeats=1,
    )  # fmt: skip
    sep = fig["backends"][backend]["separation"]
    band = sep["undecided_band"]
    assert band["genuine_called_unknown"] == 0, sep["genuine"]
    assert band["genuine_not_judged"] >= 3  # face_12 (the beanie) against his other photos
    assert band["impostors_not_judged"] <= 0.04 * sep["impostor_pairs"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_hard_photo_of_the_worker_is_not_judged_others_are_unknown(
    backend: str, int8_vision: Any, labelled_photos: list[Photo], embedders: dict[str, FaceEmbedder]
) -> None:
    """Enrolled from face_03: the same man in a beanie, eyes closed, at dusk (face_12) is
    neither the worker nor somebody else ("uncertain"); Biden (face_10) and the two other
    men beside the worker in multi_10 are unknown; the worker among them is the worker."""
    photos = {p.file: p for p in labelled_photos}
    worker = photos["face_03.jpg"]
    face = max(int8_vision.faces.detect(worker.image), key=lambda f: f.box.area)
    template = embedders[backend].embed(worker.image, face)
    assert template is not None
    checker = IdentityChecker(embedders[backend], template[None], 0.6, 60, 3, unknown_distance=0.65)

    def identities(name: str) -> list[str]:
        image = photos[name].image
        faces = sorted(checker.check(image, int8_vision.faces.detect(image)), key=lambda f: f.box.x0)
        return [f.identity or "-" for f in faces if f.identity]

    assert identities("face_12.jpg") == ["uncertain"]
    assert identities("face_10.jpg") == ["unknown"]
    assert identities("multi_10.jpg") == ["unknown", "worker", "unknown"]
    # the band switched off (equal to the tolerance): the hard photo is an unknown face
    checker.unknown_distance = 0.6
    assert identities("face_12.jpg") == ["unknown"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_group_photo_marks_only_the_enrolled_worker(
    backend: str,
    int8_vision: Any,
    descriptors: dict[str, dict[str, np.ndarray]],
    labelled_photos: list[Photo],
    embedders: dict[str, FaceEmbedder],
) -> None:
    multi_07 = next(p for p in labelled_photos if p.file == "multi_07.jpg")  # same_person_as face_03
    checker = IdentityChecker(embedders[backend], descriptors[backend]["face_03"][None], 0.6, 60, 3)
    faces = checker.check(multi_07.image, int8_vision.faces.detect(multi_07.image))
    assert sorted(f.identity or "-" for f in faces) == ["unknown", "worker"]


def test_mesh_declines_what_is_not_a_usable_face(int8_vision: Any, embedders: dict[str, FaceEmbedder]) -> None:
    """Profiles turned away from the camera get no descriptor (identity None, not
    "unknown"): no unrecognized_person from a face nobody could recognise."""
    tflite = embedders["tflite"]
    declined = []
    for name in ("phone_hand_03.jpg", "phone_desk_01.jpg"):
        image = load_rgb(PHOTOS / name)
        faces = int8_vision.faces.detect(image)
        assert faces, name
        declined += [tflite.embed(image, f) is None for f in faces]
    assert all(declined)


def write_config(tmp_path: Path, profile: str | None = None, backend: str | None = None) -> Path:
    cfg = vision_config(tmp_path / "state", **({"profile": profile} if profile else {}))
    import yaml

    doc: dict[str, Any] = {
        "device": {"id": cfg.device.id, "site": cfg.device.site, "worker_id": cfg.device.worker_id},
        "mqtt": {"host": "localhost"},
        "state_dir": cfg.state_dir,
        "policy": {"profile": cfg.policy.profile},
    }
    if backend:
        doc["vision"] = {"identity_backend": backend}
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
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
    assert "identity backend tflite" in out
    path = template_path(tmp_path / "state", "w-test")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    templates, _problem = read_templates(tmp_path / "state", "w-test")
    assert templates is not None and templates.encodings.shape == (2, 128)
    assert templates.backend == "tflite" and len(templates.model_sha256) == 64
    assert str(templates.encodings[0][0])[:6] not in out  # the templates themselves are never printed

    from deskwatch.config import load_config

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

    # the device switches to the reference backend: the templates are not compared, and
    # the log says what to do
    caplog.set_level(logging.ERROR)
    vision = build_vision(load_config(write_config(tmp_path, backend="face_recognition")))
    try:
        assert not vision.identity_enabled
        assert vision.identity_problem == (
            "the templates are from another backend or model: enrol worker w-test again"
        )  # what the status reasons say (the worker is enrolled, yet nobody is checked)
        analysis = vision.analyze(load_rgb(PHOTOS / "face_02.jpg"))
        assert analysis.faces and all(f.identity is None for f in analysis.faces)
    finally:
        vision.close()
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "backend 'tflite'" in message and "backend 'face_recognition'" in message
    assert "deskwatch enroll --worker w-test --consent" in message


def test_enrol_skips_a_photo_too_large_to_decode(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Pillow refuses an image over twice its pixel limit with an exception that is no OSError:
    one such file in the folder ended the whole enrolment with a traceback."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("face_01.jpg", "face_02.jpg"):  # the same person twice
        shutil.copy(PHOTOS / name, photos / name)
    Image.new("1", (14000, 14000)).save(photos / "huge.png")  # 196 Mpx in a 24 KB file
    argv = ["enroll", "--config", str(write_config(tmp_path)), "--worker", "w-test", "--images", str(photos)]
    assert main([*argv, "--consent", "--min-images", "2"]) == 0
    captured = capsys.readouterr()
    assert "skip huge.png: too large to decode" in captured.err and "enrolled worker w-test" in captured.out


def test_enrol_from_16_bit_photos(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """16-bit greyscale PNGs (an infrared camera's, ``convert -depth 16``'s) were read as flat
    white pictures - Pillow clips such pixels at 255 - and no face was found in them: enrolment
    reads its photos with the replay camera's loader, which scales them to 8 bits."""
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("face_01", "face_02"):  # the same person twice
        grey = np.asarray(Image.open(PHOTOS / f"{name}.jpg").convert("L")).astype(np.uint16) * 257
        Image.fromarray(grey).save(photos / f"{name}.png")
    argv = ["enroll", "--config", str(write_config(tmp_path)), "--worker", "w-test", "--images", str(photos)]
    assert main([*argv, "--consent", "--min-images", "2"]) == 0, capsys.readouterr().err
    assert "enrolled worker w-test" in capsys.readouterr().out


def camera_config(tmp_path: Path) -> Path:
    import yaml

    config = write_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["camera"] = {"backend": "replay", "source": str(PHOTOS / "face_01.jpg")}
    config.write_text(yaml.safe_dump(doc))
    return config


def test_enrolling_from_the_camera_shows_in_the_workers_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The camera used outside a scan is in `deskwatch history`, as aim's and the selftest's use is."""
    config = camera_config(tmp_path)
    argv = ["enroll", "--config", str(config), "--worker", "w-test", "--camera", "config", "--consent"]
    main([*argv, "--frames", "2", "--min-images", "1"])  # stored or not (a replayed photo is no live face)
    capsys.readouterr()
    assert main(["history", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "technician took 2 photo(s) with the camera to enrol worker w-test" in out, out


def test_enrolling_from_a_camera_that_fails_records_the_photos_it_took(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The camera gives two photos of the 20 asked for, then fails (a USB webcam unplugged):
    history said the technician "took 20 photo(s)", recorded before the first was taken."""
    import shutil

    import yaml

    frames = tmp_path / "frames"
    frames.mkdir()
    shutil.copy(PHOTOS / "face_01.jpg", frames / "a.jpg")
    shutil.copy(PHOTOS / "face_02.jpg", frames / "b.jpg")
    (frames / "c.jpg").write_bytes(b"\xff\xd8 the third photo never comes")
    config = camera_config(tmp_path)
    doc = yaml.safe_load(config.read_text())
    doc["camera"]["source"] = str(frames)
    config.write_text(yaml.safe_dump(doc))
    argv = ["enroll", "--config", str(config), "--worker", "w-test", "--camera", "config", "--consent"]
    with pytest.raises(SystemExit) as gone:
        main([*argv, "--frames", "20"])
    assert gone.value.code == 69
    assert "c.jpg: not a readable image" in capsys.readouterr().err
    assert main(["history", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "technician took 2 photo(s) with the camera to enrol worker w-test; then the camera failed: " in out, out
    assert "20 photo" not in out


@pytest.mark.parametrize("frames", ["61", "0", "100000"])
def test_enrolling_from_the_camera_takes_at_most_60_photos(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], frames: str
) -> None:
    """Every photo is held in memory and the camera stays open while they are taken."""
    config = camera_config(tmp_path)
    argv = ["enroll", "--config", str(config), "--worker", "w-test", "--camera", "config", "--consent"]
    assert main([*argv, "--frames", frames]) == 2
    assert "--frames must be 1 to 60" in capsys.readouterr().err
    assert not (tmp_path / "state" / "audit.sqlite3").exists()  # the camera was never opened


def test_templates_from_before_backends_stay_usable_by_face_recognition_only(tmp_path: Path) -> None:
    """A format-1 file (encodings and source only) was made by face_recognition."""
    from deskwatch.vision.identity import TemplateMismatch, Templates, check_compatible

    path = template_path(tmp_path, "w-1")
    path.parent.mkdir(mode=0o700)
    with open(path, "wb") as fh:
        np.savez(fh, encodings=np.ones((2, 128)), source=np.array("old"))
    templates, _problem = read_templates(tmp_path, "w-1")
    assert templates is not None and templates.encodings.shape == (2, 128)
    assert (templates.backend, templates.model_sha256) == ("face_recognition", "")

    class Fake:
        def __init__(self, backend: str, sha: str):
            self.backend, self.model_sha256, self.last_ms = backend, sha, 0.0

        def embed(self, image: np.ndarray, face: Any) -> None:
            return None

    check_compatible(templates, Fake("face_recognition", "a" * 64), "w-1")
    with pytest.raises(TemplateMismatch, match="enroll --worker w-1"):
        check_compatible(templates, Fake("tflite", "b" * 64), "w-1")
    tagged = Templates(templates.encodings, "tflite", "b" * 64)
    check_compatible(tagged, Fake("tflite", "b" * 64), "w-1")
    with pytest.raises(TemplateMismatch, match="model bbbbbbbbbbbb"):  # a rebuilt model is another model
        check_compatible(tagged, Fake("tflite", "c" * 64), "w-1")


@pytest.mark.parametrize("profile", ["uk", "minimal"])
def test_profiles_without_identity_never_run_it(tmp_path: Path, profile: str) -> None:
    from deskwatch.config import load_config

    config = write_config(tmp_path, profile)
    cfg = load_config(config)
    save_templates(cfg.state_dir, cfg.device.worker_id, np.zeros((1, 128)), backend="tflite", model_sha256="0" * 64)
    vision = build_vision(cfg)
    try:
        assert not vision.identity_enabled
        analysis = vision.analyze(load_rgb(PHOTOS / "face_02.jpg"))
        assert analysis.faces and all(f.identity is None for f in analysis.faces)
        assert "identity" not in analysis.timings_ms
        assert "face_landmark.tflite" not in vision.model_hashes()  # the identity models are not even loaded
    finally:
        vision.close()


def test_templates_written_atomically_with_private_modes(tmp_path: Path) -> None:
    path = save_templates(tmp_path / "state", "w-1", np.ones((3, 128)), backend="tflite", model_sha256="0" * 64)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["w-1.npz"]  # no temporary file left
    with pytest.raises(ValueError):
        template_path(tmp_path, "../escape")
    with pytest.raises(ValueError):
        save_templates(tmp_path / "state", "w-1", np.ones((3, 128)), backend="other", model_sha256="")


def test_a_damaged_templates_file_turns_identity_off_with_a_reason_and_the_daemon_starts(
    tmp_path: Path, int8_vision: Any
) -> None:
    """An empty file (a full disk), a cut one, a directory in its place: none of them may stop
    the daemon (build_vision raised EOFError at the start); the identity check is off, the
    status says why and what to do, and a new enrolment is picked up at the next frame."""
    from deskwatch.config import load_config

    config = write_config(tmp_path)
    state = tmp_path / "state"
    good = save_templates(state, "w-test", np.ones((2, 128)), backend="tflite", model_sha256="0" * 64)
    whole = good.read_bytes()
    cases = {"empty": b"", "cut": whole[: len(whole) // 2], "garbage": b"PK\x03\x04" + b"\x00" * 64}
    for name, data in cases.items():
        good.write_bytes(data)
        templates, problem = read_templates(state, "w-test")
        assert templates is None and problem is not None and "enrol worker w-test again" in problem, name
        vision = build_vision(load_config(config))
        try:
            assert not vision.identity_enabled and vision.identity_problem == problem, name
            save_templates(  # enrolled again: used from the next frame on
                state,
                "w-test",
                np.ones((2, 128)),
                backend="tflite",
                model_sha256=vision.store.entry("face_embedder_dlib_resnet.tflite").sha256,
            )
            vision.analyze(load_rgb(PHOTOS / "face_01.jpg"))
            assert vision.identity_enabled and vision.identity_problem is None, name
        finally:
            vision.close()
    good.unlink()
    good.mkdir()
    assert read_templates(state, "w-test")[1] is not None  # "are not a regular file"


def test_templates_readable_by_others_are_refused_when_they_cannot_be_made_private(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loose file the service user may not chmod (root's, copied in with sudo cp) must not
    stop the daemon, nor be used as it is: refused, with the reason."""
    path = save_templates(tmp_path, "w-1", np.ones((2, 128)), backend="tflite", model_sha256="0" * 64)
    os.chmod(path, 0o644)

    def refuse(target: Any, mode: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "chmod", refuse)
    templates, problem = read_templates(tmp_path, "w-1")
    assert templates is None and problem is not None
    assert "mode 644 (readable by others) and cannot be made 0600" in problem
    monkeypatch.undo()
    templates, problem = read_templates(tmp_path, "w-1")  # its own: tightened, then used
    assert templates is not None and problem is None and stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("linked", ["file", "directory"])
def test_templates_reached_through_a_link_are_refused_and_what_it_names_is_left_alone(
    tmp_path: Path, linked: str
) -> None:
    """The daemon's user owns the templates directory, and root's tools (sudo deskwatch scan,
    aim) read the templates too: a link the user put there, to a file of root's readable by
    all (/etc/passwd), had root tighten that file to 0600 (and try it as templates)."""
    victim_dir = tmp_path / "etc"
    victim_dir.mkdir()
    victim = victim_dir / ("passwd" if linked == "file" else "w-1.npz")
    victim.write_text("root:x:0:0::/root:/bin/bash\n")
    victim.chmod(0o644)
    templates = tmp_path / "state" / "templates"
    if linked == "file":
        templates.mkdir(parents=True)
        (templates / "w-1.npz").symlink_to(victim)
    else:
        templates.parent.mkdir()
        templates.symlink_to(victim_dir)
    found, problem = read_templates(tmp_path / "state", "w-1")
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644, "root changed the mode of the link's target"
    assert found is None and problem is not None
    named = templates / "w-1.npz" if linked == "file" else templates
    assert (
        f"are reached through a symbolic link ({named}): remove it (rm {named}) and enrol worker w-1 again" in problem
    )


def test_templates_that_unpack_to_more_than_an_enrolment_are_refused_without_unpacking_them(tmp_path: Path) -> None:
    """The daemon's user writes the templates directory and root's scan and aim read it: a
    small npz whose encodings inflate to gigabytes of zeros was inflated whole before its
    shape was judged (a 2 MB file: 2.5 GB held by root's scan). Here 64 MB in 64 KB."""
    import io
    import tracemalloc
    import zipfile

    path = save_templates(tmp_path, "w-1", np.ones((2, 128)), backend="tflite", model_sha256="0" * 64)
    rows = (64 << 20) // (128 * 8)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (rows, 128)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("encodings.npy", "w") as member:
            member.write(header.getvalue())
            for _ in range(64):
                member.write(bytes(1 << 20))
        archive.writestr("backend.npy", b"")
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        found, problem = read_templates(tmp_path, "w-1")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"{peak / 2**20:.0f} MB held to read a {path.stat().st_size} byte file"
    assert found is None and problem is not None
    assert (
        f"are not an enrolment's (encodings.npy unpacks to {rows * 128 * 8 + len(header.getvalue())} bytes" in problem
    )


@pytest.fixture
def reachable(tmp_path: Path) -> Any:
    """A folder another user can reach, as /var/lib is (pytest's own are root's alone)."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="deskwatch-identity-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def service_state(base: Path) -> tuple[Path, Any]:
    import pwd

    nobody = pwd.getpwnam("nobody")
    state = base / "state"
    state.mkdir(mode=0o700)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    return state, nobody


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it writes as root into another user's directory")
def test_templates_enrolled_as_root_belong_to_the_state_directorys_owner(tmp_path: Path, reachable: Path) -> None:
    """`sudo deskwatch enroll` writes into the service user's state directory: the files must
    be that user's, or the daemon (User=deskwatch) cannot read them and its identity check is
    silently off."""
    state, nobody = service_state(reachable)
    path = save_templates(state, "w-1", np.ones((2, 128)), backend="tflite", model_sha256="0" * 64)
    for p in (path, path.parent):
        assert (p.stat().st_uid, p.stat().st_gid) == (nobody.pw_uid, nobody.pw_gid), p
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    mine = save_templates(tmp_path / "own", "w-1", np.ones((2, 128)), backend="tflite", model_sha256="0" * 64)
    assert mine.stat().st_uid == 0  # a directory root owns keeps root's files


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it writes as root into another user's directory")
@pytest.mark.parametrize("planted", ["templates", "templates/w-1.npz"])
def test_enrolling_as_root_follows_no_link_the_service_user_put_in_its_state_directory(
    reachable: Path, planted: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The service user (a compromised daemon) made templates/ a link to a directory root owns
    (/etc/sudoers.d, /etc/systemd/system): `sudo deskwatch enroll` chmod'ed it 0700, gave it to
    that user and wrote into it - root for the taking. Now root writes there as the directory's
    owner would, and the link is refused saying so."""
    import pwd

    state, nobody = service_state(reachable)
    victim = reachable / "sudoers.d"
    victim.mkdir(mode=0o750)
    (victim / "README").write_text("root's")
    if planted == "templates":
        (state / "templates").symlink_to(victim)
    else:  # a directory of its own, holding a link where the file goes
        (state / "templates").mkdir(mode=0o700)
        os.chown(state / "templates", nobody.pw_uid, nobody.pw_gid)
        (state / planted).symlink_to(victim / "w-1.npz")
    os.lchown(state / planted, nobody.pw_uid, nobody.pw_gid)
    try:
        save_templates(state, "w-1", np.ones((2, 128)), backend="tflite", model_sha256="0" * 64)
    except OSError as exc:
        assert planted == "templates", exc
        assert "symbolic link" in str(exc), exc
    st = victim.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o750)
    assert sorted(p.name for p in victim.iterdir()) == ["README"]
    if planted != "templates":  # the link is replaced by the file, which is the service user's
        stored = state / planted
        assert not stored.is_symlink() and stored.stat().st_uid == pwd.getpwnam("nobody").pw_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it writes as root into another user's directory")
def test_sudo_enroll_in_a_fresh_process_stores_the_service_users_templates(reachable: Path) -> None:
    """The whole command as a technician runs it: nothing it does with the service user's
    rights may need what only root can reach (numpy's lazy imports from a Python under /root)."""
    import pwd
    import subprocess
    import sys

    from tests.support.common import PHOTOS, REPO

    config = write_config(reachable)
    nobody = pwd.getpwnam("nobody")
    os.chown(reachable / "state", nobody.pw_uid, nobody.pw_gid)
    argv = ["enroll", "--config", str(config), "--worker", "w-1", "--images", str(PHOTOS / "face_01.jpg")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(REPO / d) for d in ("daemon", "contract"))}
    proc = subprocess.run(
        [sys.executable, "-m", "deskwatch", *argv, "--min-images", "1", "--consent"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stored = reachable / "state" / "templates" / "w-1.npz"
    assert (stored.stat().st_uid, stat.S_IMODE(stored.stat().st_mode)) == (nobody.pw_uid, 0o600)


def test_a_face_too_short_for_the_liveness_check_is_not_identity_checked() -> None:
    """A face cut by the frame's edge, 64 px wide and 58 tall: the liveness check (60 px) does
    not judge it, and the identity check measured the squared box (64) and recognised it as the
    worker - a face nothing had checked for liveness counted as the worker."""
    from deskwatch.domain import Box, Face
    from deskwatch.vision.identity import IdentityChecker

    class Stub:
        backend, model_sha256, last_ms = "tflite", "0" * 64, 0.0
        calls = 0

        def embed(self, image: np.ndarray, face: Any) -> np.ndarray:
            Stub.calls += 1
            return np.zeros(128)

    image = np.full((720, 1280, 3), 128, np.uint8)
    short = Face(box=Box(600 / 1280, 0.0, 664 / 1280, 58 / 720), score=0.9)
    tall = Face(box=Box(600 / 1280, 0.0, 664 / 1280, 64 / 720), score=0.9)
    checker = IdentityChecker(Stub(), np.zeros((1, 128)), 0.6, 60, 2, 0.0)
    assert [f.identity for f in checker.check(image, [short, tall])] == [None, "worker"]
    assert Stub.calls == 1


def test_identity_reused_within_a_burst_only_for_the_same_face(
    int8_vision: Any, descriptors: dict[str, dict[str, np.ndarray]], embedders: dict[str, FaceEmbedder]
) -> None:
    from datetime import UTC, datetime, timedelta

    from PIL import Image

    checker = IdentityChecker(embedders["tflite"], descriptors["tflite"]["face_01"][None], reuse_seconds=3.0)
    t0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    worker = load_rgb(PHOTOS / "face_01.jpg")
    first = checker.check(worker, int8_vision.faces.detect(worker), t0)
    assert [f.identity for f in first] == ["worker"] and checker.last_reused == 0 and checker.last_ms > 0
    again = checker.check(worker, int8_vision.faces.detect(worker), t0 + timedelta(seconds=0.5))
    assert [f.identity for f in again] == ["worker"] and checker.last_reused == 1 and checker.last_ms == 0
    late = checker.check(worker, int8_vision.faces.detect(worker), t0 + timedelta(seconds=4))
    assert checker.last_reused == 0 and late[0].identity == "worker"  # too old: described again
    # someone else in the same place a moment later is described, not taken for the worker
    other = load_rgb(PHOTOS / "face_03.jpg")
    other = np.ascontiguousarray(np.asarray(Image.fromarray(other).resize(worker.shape[1::-1])))
    faces = int8_vision.faces.detect(other)
    result = checker.check(other, faces, t0 + timedelta(seconds=4.5))
    assert checker.last_reused == 0 and [f.identity for f in result] == ["unknown"]
    assert checker.check(worker, int8_vision.faces.detect(worker), None) and checker.last_reused == 0
    # a face the liveness check called a picture is not checked at all
    picture = dataclasses.replace(int8_vision.faces.detect(worker)[0], live=False)
    assert checker.check(worker, [picture], None)[0].identity is None


def test_selftest_says_when_the_templates_need_a_new_enrolment(tmp_path: Path, int8_vision: Any) -> None:
    from deskwatch.technician.selftest import _template_problem
    from deskwatch.vision.identity import IdentityTarget
    from deskwatch.vision.pipeline import FACE_EMBEDDER_MODEL

    cfg = vision_config(tmp_path)
    target = IdentityTarget(cfg.state_dir, "w-1")
    save_templates(cfg.state_dir, "w-1", np.ones((1, 128)), backend="face_recognition", model_sha256="")
    problem = _template_problem(cfg.vision, int8_vision.store, target)
    assert problem and "backend 'face_recognition'" in problem and "deskwatch enroll --worker w-1" in problem
    sha = int8_vision.store.entry(FACE_EMBEDDER_MODEL).sha256
    save_templates(cfg.state_dir, "w-1", np.ones((1, 128)), backend="tflite", model_sha256=sha)
    assert _template_problem(cfg.vision, int8_vision.store, target) is None
