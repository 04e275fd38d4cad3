"""The technician's pictures of a home are anonymised: ``selftest --snapshot`` writes a
full-resolution JPEG wherever it is asked (a USB stick perhaps), and ``aim`` draws the
live view in a terminal; both blur everybody but the worker the policy places at the
desk, with the evidence blur, before a box is drawn. The real selftest on a real photo
of three people: the same detectors that found the two others' faces in the photo find
them no more in the snapshot, and still find the worker's (the control)."""

from __future__ import annotations

import os
import pwd
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deskwatch.cli import main
from deskwatch.domain import Box, Detection, Face, Frame, FrameAnalysis, LightReading
from deskwatch.policy.config import PolicyConfig
from deskwatch.technician.aim import AimView
from deskwatch.technician.snapshot import anonymise_for_framing, write_snapshot
from tests.support.common import PHOTOS, REPO
from tests.support.vision import load_rgb

MODELS_READY = (REPO / "models" / "manifest.yaml").exists()
AS_ME = ["--service-user", pwd.getpwuid(os.geteuid()).pw_name]  # the checks run here, as whoever runs the tests
LIGHT = LightReading(120.0, 50.0, 0.02, 8.0, False, False)
# multi_06.jpg: three people at a cafe table; the desk zone is drawn round the woman on the
# right, so she is the worker and the two on the left are not
ZONE = [0.6, 0.3, 1.0, 1.0]


def write_config(tmp_path: Path, photo: str = "multi_06.jpg") -> Path:
    state = tmp_path / "state"
    state.mkdir(mode=0o700, exist_ok=True)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"device: {{id: desk-0042, site: acme-support, worker_id: w-1187}}\nstate_dir: {state}\n"
        f"camera: {{backend: replay, source: {PHOTOS / photo}}}\n"
        "mqtt: {host: 127.0.0.1, tls: {enabled: false}}\n"
        f"policy: {{desk_zone: {ZONE}}}\n"
    )
    cfg.chmod(0o640)
    return cfg


def faces_at(analysis: FrameAnalysis, box: Box) -> list[Face]:
    return [f for f in analysis.faces if f.box.iou(box) > 0.3]


@pytest.mark.skipif(not MODELS_READY, reason="models/ not built")
def test_the_snapshot_blurs_everyone_but_the_worker(tmp_path: Path, int8_vision: Any, capsys: Any) -> None:
    photo = load_rgb(PHOTOS / "multi_06.jpg")
    before = int8_vision.analyze(photo)
    worker_face = next(f for f in before.faces if Box(*ZONE).contains(*f.box.centre))
    others = [f for f in before.faces if f is not worker_face]
    assert len(others) == 2, "multi_06 shows three faces to the detector"

    cfg = write_config(tmp_path)
    snap = tmp_path / "usb" / "aim.jpg"
    main(
        ["selftest", "--config", str(cfg), "--snapshot", str(snap), "--skip", "clock", "--skip", "broker", "-q", *AS_ME]
    )
    err = capsys.readouterr().err
    assert "framing picture written to" in err and "the worker at the desk left sharp" in err
    assert snap.stat().st_mode & 0o777 == 0o600
    picture = load_rgb(snap)
    assert picture.shape == photo.shape
    after = int8_vision.analyze(picture)
    assert faces_at(after, worker_face.box), "the worker's face must stay visible for aiming"
    for face in others:
        assert not faces_at(after, face.box), f"a face at {face.box} is still found in the snapshot"
    assert "2 face(s)" in err

    # the worker reads in the audit trail that a picture was kept, and where
    assert main(["history", "--config", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert f"technician kept a framing picture on the device at {snap}" in out
    assert "2 face(s)" in out


def test_no_snapshot_when_nobody_could_be_found_to_blur(tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(tmp_path)
    snap = tmp_path / "aim.jpg"
    skips = ["--skip", "clock", "--skip", "broker", "--skip", "models", "--skip", "framing"]
    main(["selftest", "--config", str(cfg), "--snapshot", str(snap), "-q", *skips, *AS_ME])
    captured = capsys.readouterr()
    assert not snap.exists() and not list(tmp_path.glob("aim.jpg*"))
    assert f"no snapshot written to {snap}" in captured.err and "--skip framing" in captured.err
    assert "camera" in captured.out  # the checks' table is still printed


@pytest.mark.skipif(not MODELS_READY, reason="models/ not built")
def test_an_unwritable_snapshot_path_is_a_message_not_a_traceback(tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(tmp_path, photo="single_04.jpg")
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the technician thought a folder was")
    snap = blocker / "aim.jpg"
    main(
        ["selftest", "--config", str(cfg), "--snapshot", str(snap), "--skip", "clock", "--skip", "broker", "-q", *AS_ME]
    )
    captured = capsys.readouterr()
    assert f"no snapshot written to {snap}" in captured.err and "Traceback" not in captured.err
    assert "framing" in captured.out


def checkerboard(h: int, w: int, square: int = 4) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.where(((x // square) + (y // square)) % 2 == 0, 230, 20).astype(np.uint8)[..., None].repeat(3, axis=2)


def test_anonymise_for_framing_keeps_only_the_worker() -> None:
    image = checkerboard(360, 640)
    worker = Detection("person", 0.9, Box(0.6, 0.2, 0.95, 1.0))
    bystander = Detection("person", 0.9, Box(0.05, 0.2, 0.35, 1.0))
    worker_face = Face(Box(0.7, 0.25, 0.82, 0.45), 0.9)
    bystander_face = Face(Box(0.12, 0.25, 0.24, 0.45), 0.9)
    analysis = FrameAnalysis(0, LIGHT, [worker, bystander], [worker_face, bystander_face])
    done = anonymise_for_framing(image, analysis, PolicyConfig(desk_zone=[0.5, 0.0, 1.0, 1.0]))
    assert (done.faces, done.bodies, done.worker_sharp) == (1, 1, True)
    assert done.blurred_ids == {id(bystander), id(bystander_face)}
    x0, y0, x1, y1 = bystander.box.to_pixels(640, 360)
    assert image[y0:y1, x0:x1].std() < 40  # the checkerboard (std 105) is gone
    x0, y0, x1, y1 = worker.box.to_pixels(640, 360)
    assert np.array_equal(image[y0:y1, x0:x1], checkerboard(360, 640)[y0:y1, x0:x1])

    # with nobody at the desk, nobody is the worker: everyone is blurred
    image = checkerboard(360, 640)
    done = anonymise_for_framing(image, analysis, PolicyConfig(desk_zone=[0.0, 0.0, 0.02, 0.02]))
    assert (done.faces, done.bodies, done.worker_sharp) == (2, 2, False)
    x0, y0, x1, y1 = worker.box.to_pixels(640, 360)
    assert image[y0:y1, x0:x1].std() < 40


def test_the_aim_view_blurs_the_bystander_at_terminal_size() -> None:
    frame = Frame(checkerboard(360, 640, square=20), datetime.now(UTC))
    bystander = Detection("person", 0.9, Box(0.05, 0.1, 0.4, 1.0))
    seen = FrameAnalysis(0, LIGHT, [bystander], [])

    def cells(policy: PolicyConfig) -> list[str]:
        lines, _ = AimView(lambda f: seen, policy, columns=128).render(frame)
        return [line.split("\u2580")[10] for line in lines[2:-2]]  # a column inside the bystander

    blurred = cells(PolicyConfig(desk_zone=[0.5, 0.0, 1.0, 1.0]))  # the bystander is outside the zone
    sharp = cells(PolicyConfig(desk_zone=[0.0, 0.0, 0.5, 1.0]))  # the same box is the worker's
    assert len(set(sharp)) > 1  # the checkerboard reaches the terminal
    assert blurred != sharp


def test_the_snapshot_never_writes_through_a_planted_link(tmp_path: Path) -> None:
    """The selftest runs as root and ``/tmp/aim.jpg`` is the README's example: links planted at
    the picture's name or at its temporary name are replaced, their targets left alone."""
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0")
    out = tmp_path / "aim.jpg"
    out.symlink_to(victim)
    (tmp_path / ".aim.jpg.tmp").symlink_to(victim)
    frame = Frame(checkerboard(90, 160), datetime.now(UTC))
    write_snapshot(out, frame, FrameAnalysis(0, LIGHT), PolicyConfig())
    assert victim.read_text() == "root:x:0:0"
    assert not out.is_symlink() and out.read_bytes()[:2] == b"\xff\xd8"  # a JPEG of its own
    assert out.stat().st_mode & 0o777 == 0o600
    assert not (tmp_path / ".aim.jpg.tmp").exists()
