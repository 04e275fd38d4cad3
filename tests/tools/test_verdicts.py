"""The verdicts dump that compares machines (x86-64 against the Pi's aarch64): the real
models on two real photos, natively; the comparison on runs doctored by hand."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from deskwatch_dev import verdicts
from tests.support.common import PHOTOS


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("photos")
    for name in ("phone_hand_02.jpg", "eat_02.jpg", "eat_03.jpg"):
        shutil.copy(PHOTOS / name, folder / name)
    # eat_02 only enrols the worker (as on the whole folder): all photos choose whom, --only what runs
    return verdicts.measure(folder, only=["phone_*", "eat_03.jpg"])


@pytest.mark.slow  # the models on two photos: about 3 s of CPU
def test_each_photo_has_its_findings_and_the_numbers_behind_them_in_both_views(run: dict[str, Any]) -> None:
    assert set(run["photos"]) == {"phone_hand_02.jpg", "eat_03.jpg"}
    assert run["enrolled"] == "eat_02.jpg" and run["object_precision"] == "int8"
    for view in verdicts.VIEWS:
        phone, eating = run["photos"]["phone_hand_02.jpg"][view], run["photos"]["eat_03.jpg"][view]
        assert {"type": "phone_use", "behaviours": ["in_hand"]}.items() <= phone["findings"][0].items()
        assert [f["type"] for f in eating["findings"]] == ["eating"]
        held = [p for v in phone["phone_stage"] for p in v["phone_places"] if p["score"] is not None]
        assert held and all(p["evidence"] >= 0.5 and p["centernet"] >= 0.35 for p in held)
        assert any(p["labels"][0] == "donut" for v in eating["phone_stage"] for p in v["food_places"])
        face = eating["faces"][0]
        assert face["identity"] == "unknown" and face["distance"] > 0.6 and face["moire"] is not None
    assert run["photos"]["eat_03.jpg"]["file"]["size"] == [256, 256]
    assert run["photos"]["eat_03.jpg"]["1280x720"]["size"] == [1280, 720]


@pytest.mark.slow  # the models on two photos: about 3 s of CPU
def test_the_same_run_twice_compares_equal(run: dict[str, Any]) -> None:
    same = verdicts.compare(run, copy.deepcopy(run))
    assert same["verdicts_differing"] == [] and same["present_in_one_only"] == []
    assert same["scores_compared"] > 20 and same["identical"] == same["scores_compared"]
    assert same["abs_diff"]["max"] == 0.0 and same["largest"] == []


@pytest.mark.slow  # the models on two photos: about 3 s of CPU
def test_a_lost_finding_and_a_moved_score_are_named(run: dict[str, Any]) -> None:
    other = copy.deepcopy(run)
    view = other["photos"]["phone_hand_02.jpg"]["1280x720"]
    view["findings"] = []
    place = max(view["phone_stage"][0]["phone_places"], key=lambda p: p["evidence"])
    place["evidence"] -= 0.25
    diff = verdicts.compare(run, other)
    assert diff["verdicts_differing"] == [
        {"photo": "phone_hand_02.jpg", "view": "1280x720", "a": ["phone_use(in_hand)"], "b": []}
    ]
    assert diff["abs_diff"]["max"] == pytest.approx(0.25)
    top = diff["largest"][0]
    assert top["photo"] == "phone_hand_02.jpg" and top["score"] == "phone@2.25[0].evidence"
    assert len(diff["largest"]) == 1  # only what moved


def test_bad_input_gets_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verdicts.main([str(tmp_path / "nothing")]) == 2
    assert "no photo directory" in capsys.readouterr().err
    (tmp_path / "a.json").write_text("{not json")
    assert verdicts.main(["--compare", str(tmp_path / "a.json"), str(tmp_path / "a.json")]) == 2
    assert "cannot read a run to compare" in capsys.readouterr().err
    (tmp_path / "b.json").write_text(json.dumps({"photos": {}}))
    assert verdicts.main(["--compare", str(tmp_path / "b.json"), str(tmp_path / "b.json")]) == 2
    assert "not a verdicts run" in capsys.readouterr().err
