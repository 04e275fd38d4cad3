"""Rule outcomes on the real photos in tests/data/photos against their labels,
through the real vision pipeline, and the profiles' behaviour end to end (the uk
profile never runs an identity check, even with a worker enrolled).

Each photo is one frame (a burst of one). The bars below are what the shipped
detectors reach today (measured: phone_use 2/5, eating 2/4, no false phone, one
false eating - a raised wine glass in multi_07); they guard against regressions
and above all against false findings."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from deskwatch.domain import Frame, FrameAnalysis
from deskwatch.policy.engine import Policy, PolicyContext
from tests.support.common import PHOTOS, in_first_set
from tests.support.policy import make_config

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
pytestmark = pytest.mark.slow


def _vision(cfg):
    try:
        from deskwatch.app import build_vision

        return build_vision(cfg)
    except Exception as exc:  # models or runtime missing on this machine
        pytest.skip(f"vision pipeline unavailable: {exc}")


def load(name: str) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(Image.open(PHOTOS / name).convert("RGB")))


@pytest.fixture(scope="module")
def labels() -> dict[str, dict]:
    if not (PHOTOS / "labels.yaml").exists():
        pytest.skip(f"shared photos not found at {PHOTOS}")
    files = yaml.safe_load((PHOTOS / "labels.yaml").read_text())["files"]
    return {e["file"]: e for e in files if in_first_set(e["file"])}


@pytest.fixture(scope="module")
def outcomes(labels) -> dict[str, tuple[set[str], int, int]]:
    cfg = make_config()
    vision = _vision(cfg)
    out = {}
    try:
        for name in labels:
            analysis = vision.analyze(Frame(load(name), NOW))
            res = Policy(cfg.policy).evaluate([analysis], PolicyContext(NOW, "cli", confirming=True))
            out[name] = ({f.type for f in res.findings}, res.persons, res.bystanders)
    finally:
        vision.close()
    return out


def test_phone_use_is_never_reported_without_a_phone_in_use(labels, outcomes):
    false = [n for n, lab in labels.items() if not lab["phone_in_use"] and "phone_use" in outcomes[n][0]]
    assert false == []
    found = [n for n, lab in labels.items() if lab["phone_in_use"] and "phone_use" in outcomes[n][0]]
    assert len(found) >= 2, f"phone_use found only on {found}"  # today phone_03, phone_05


def test_eating_matches_the_labels(labels, outcomes):
    found = [n for n, lab in labels.items() if lab["eating"] and "eating" in outcomes[n][0]]
    false = [n for n, lab in labels.items() if not lab["eating"] and "eating" in outcomes[n][0]]
    assert len(found) >= 1, f"eating found only on {found}"  # today eat_03 (eat_02/04: nothing at the mouth seen twice)
    assert false == [], (
        f"eating reported without eating on {false}"
    )  # the toast of multi_07 was, before the phone stage


def test_away_only_where_nobody_is_there(labels, outcomes):
    away = {n for n in labels if "away_from_desk" in outcomes[n][0]}
    with_people = {n for n, lab in labels.items() if lab["persons"] > 0}
    assert away & with_people == set()
    empty = {n for n, lab in labels.items() if lab["persons"] == 0 and not lab.get("phone")}
    assert away & empty == empty


def test_people_counts_match_the_labels(labels, outcomes):
    exact = {n: lab["persons"] for n, lab in labels.items() if lab.get("persons_exact", True) and lab["persons"] <= 4}
    close = [n for n, k in exact.items() if abs(outcomes[n][1] - k) <= 1]
    assert len(close) >= 0.9 * len(exact), {n: (outcomes[n][1], k) for n, k in exact.items() if n not in close}


def test_single_worker_photos_are_clear(labels, outcomes):
    singles = [n for n in labels if n.startswith(("single_", "face_"))]
    assert singles
    noisy = {n: outcomes[n][0] for n in singles if outcomes[n][0]}
    assert noisy == {}


@pytest.fixture
def enrolled_state(tmp_path: Path) -> str:
    """A state_dir with the worker of face_01/face_02 enrolled."""
    from deskwatch.vision.identity import save_templates
    from deskwatch.vision.pipeline import build_embedder

    cfg = make_config(state_dir=str(tmp_path))
    vision = _vision(cfg)
    try:
        image = load("face_01.jpg")
        (face,) = vision.analyze(Frame(image, NOW)).faces[:1]
        embedder = build_embedder(cfg.vision, vision.store)
        enc = embedder.embed(image, face)
    finally:
        vision.close()
    save_templates(
        str(tmp_path),
        cfg.device.worker_id,
        np.asarray([enc]),
        backend=embedder.backend,
        model_sha256=embedder.model_sha256,
    )
    return str(tmp_path)


def analyse(cfg, names: list[str]) -> dict[str, FrameAnalysis]:
    vision = _vision(cfg)
    try:
        return {n: vision.analyze(Frame(load(n), NOW)) for n in names}
    finally:
        vision.close()


def test_full_profile_checks_identity_when_a_worker_is_enrolled(enrolled_state):
    cfg = make_config(state_dir=enrolled_state)
    got = analyse(cfg, ["face_02.jpg", "face_03.jpg"])
    assert [f.identity for f in got["face_02.jpg"].faces[:1]] == ["worker"]  # same person
    assert [f.identity for f in got["face_03.jpg"].faces[:1]] == ["unknown"]
    p = Policy(
        make_config("policy: {rules: {unrecognized_person: {consecutive_checks: 1}}}", state_dir=enrolled_state).policy
    )
    res = p.evaluate([got["face_03.jpg"]], PolicyContext(NOW, "schedule"))
    assert "unrecognized_person" in {f.type for f in res.findings}


def test_uk_never_runs_an_identity_check(enrolled_state, monkeypatch):
    from deskwatch.vision import identity

    calls = []
    for backend in (identity.TfliteEmbedder, identity.DlibEmbedder):
        real = backend.embed
        monkeypatch.setattr(backend, "embed", lambda self, *a, real=real, **k: calls.append(1) or real(self, *a, **k))
    uk = make_config("policy: {profile: uk}\nschedule: {mode: fixed, fixed_times: ['10:00']}", state_dir=enrolled_state)
    got = analyse(uk, ["face_02.jpg", "face_03.jpg", "multi_08.jpg"])
    assert calls == []
    assert all(f.identity is None for a in got.values() for f in a.faces)
    p = Policy(uk.policy)
    for a in got.values():
        res = p.evaluate([a], PolicyContext(NOW, "schedule"))
        check = next(c for c in res.checks if c.rule == "unrecognized_person")
        assert check.outcome == "skipped"
        assert res.findings == [] or {f.type for f in res.findings} <= {"phone_use", "low_light", "camera_obstructed"}


def test_the_workers_own_face_is_theirs_on_every_one_person_photo(labelled_photos, int8_analyses):
    """A box takes as its person's own face (kept sharp in evidence, judged by the identity
    check) only a face where their head can be; every one-person photo's face found in the
    worker's box is there, the head bowed over a book (nophone_hand_03), an arm held out
    (single_06) or cut by the frame's top above arms at a keyboard (phone_desk_01) included."""
    from deskwatch.policy.rules import people_view

    policy = make_config().policy
    checked, lost = [], []
    for photo in labelled_photos:
        analysis = int8_analyses[photo.file]
        view = people_view(analysis, policy)
        if photo.labels["persons"] != 1 or view.worker is None or view.worker.detection is None:
            continue
        inside = [f for f in analysis.faces if view.worker.box.contains(*f.box.centre) and f.live is not False]
        if len(inside) != 1 or photo.file == "phone_hand_02.jpg":  # no face there: a thumb over the phone
            continue
        checked.append(photo.file)
        if view.worker.own_face is not inside[0]:
            lost.append(photo.file)
    assert len(checked) >= 18, checked  # 19 today
    assert lost == []
