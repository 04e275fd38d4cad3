"""``deskwatch aim``: live framing in the terminal through the daemon's own detectors; stops by itself."""

from __future__ import annotations

import io
import re
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deskwatch.domain import Box, Detection, Face, Frame, FrameAnalysis, LightReading
from deskwatch.policy.config import PolicyConfig
from deskwatch.technician.aim import AimView, half_blocks, run_aim
from tests.support.common import REPO

PHOTOS = REPO / "tests/data/photos"
LIGHT = LightReading(120.0, 50.0, 0.02, 8.0, False, False)


def test_half_blocks_carry_the_upper_and_lower_pixel() -> None:
    image = Image.new("RGB", (2, 2))
    image.putpixel((0, 0), (255, 0, 0))
    image.putpixel((0, 1), (0, 0, 255))
    [line] = half_blocks(image, 2)
    assert line.startswith("\x1b[38;2;255;0;0m\x1b[48;2;0;0;255m\u2580") and line.endswith("\x1b[0m")


def test_the_view_draws_the_zone_and_says_what_the_policy_sees() -> None:
    frame = Frame(np.full((360, 640, 3), 90, dtype=np.uint8), datetime.now(UTC))
    seen = FrameAnalysis(
        0, LIGHT, [Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0))], [Face(Box(0.4, 0.25, 0.55, 0.45), 0.9)]
    )
    view = AimView(lambda f: seen, PolicyConfig(desk_zone=[0.25, 0.0, 0.75, 1.0]), columns=64)
    lines, status = view.render(frame)
    assert len(lines) == round(64 * 360 / 640 / 2)  # 18 text rows for a 16:9 picture
    assert "\x1b[38;2;255;212;0m" in "".join(lines)  # the desk zone's yellow is on screen
    assert status == "1 people (1 in the desk zone), 1 faces, light ok (120/255)"


def test_it_stops_by_itself() -> None:
    frame = Frame(np.zeros((90, 160, 3), dtype=np.uint8), datetime.now(UTC))
    view = AimView(lambda f: FrameAnalysis(0, LIGHT), PolicyConfig(desk_zone=[0.0, 0.0, 1.0, 1.0]), columns=20)
    now = [0.0]
    out = io.StringIO()
    shown = run_aim(
        view,
        lambda: frame,
        out,
        seconds=5,
        interval=1.0,
        monotonic=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert (shown == 5 and "stops in 0 s" in out.getvalue().splitlines()[-1]) or shown == 5
    shown = run_aim(
        view,
        lambda: frame,
        out,
        seconds=10_000,
        interval=60.0,
        monotonic=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert shown == 10  # capped at 600 s whatever was asked: frames at 0, 60, ... 540 s


@pytest.mark.parametrize(("seconds", "interval"), [(float("nan"), 1.0), (120.0, float("nan")), (float("inf"), 1.0)])
def test_no_number_keeps_the_camera_open_past_the_cap(seconds: float, interval: float) -> None:
    frame = Frame(np.zeros((90, 160, 3), dtype=np.uint8), datetime.now(UTC))
    view = AimView(lambda f: FrameAnalysis(0, LIGHT), PolicyConfig(desk_zone=[0.0, 0.0, 1.0, 1.0]), columns=20)
    now = [0.0]
    captured = [0]

    def capture() -> Frame:
        captured[0] += 1
        assert now[0] <= 600 and captured[0] <= 600, f"still capturing at {now[0]:.0f} s, frame {captured[0]}"
        return frame

    shown = run_aim(
        view,
        capture,
        io.StringIO(),
        seconds=seconds,
        interval=interval,
        monotonic=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert 1 <= shown <= 600


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["aim", "--seconds", "nan"], "--seconds"),
        (["aim", "--interval", "nan"], "--interval"),
        (["aim", "--seconds", "inf"], "--seconds"),
        (["aim", "--seconds", "-5"], "--seconds"),
        (["jobs", "run-queued", "--settle", "nan"], "--settle"),
        (["jobs", "run-queued", "--ready-timeout", "inf"], "--ready-timeout"),
        (["update", "confirm", "--settle", "nan"], "--settle"),
        (["update", "confirm", "--ready-timeout", "nan"], "--ready-timeout"),
    ],
)
def test_seconds_that_are_not_a_finite_number_are_a_usage_error(
    argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from deskwatch.cli import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {named}: " in err and "a number of seconds, 0 or more" in err and argv[-1] in err


def replay_desk(tmp_path: Path) -> tuple[Path, Path]:
    """(state directory, config file) of a desk whose camera replays single_01.jpg."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"device: {{id: desk-1, site: acme, worker_id: w-1}}\nstate_dir: {state}\n"
        f"camera: {{backend: replay, source: {PHOTOS / 'single_01.jpg'}}}\n"
        "mqtt: {host: 127.0.0.1, tls: {enabled: false}}\n"
    )
    return state, cfg


@pytest.mark.skipif(not (REPO / "models" / "manifest.yaml").exists(), reason="models/ not built")
def test_aim_command_on_a_replay_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from deskwatch.cli import main

    _state, cfg = replay_desk(tmp_path)
    assert main(["aim", "--config", str(cfg), "--seconds", "0", "--columns", "40"]) == 0
    out, err = capsys.readouterr()
    status = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", out.splitlines()[-1])
    assert status.startswith("1 people (1 in the desk zone), 1 faces, light ok"), status
    assert "aim stopped after 1 frames" in err
    assert not list(tmp_path.rglob("*.jpg"))  # nothing saved
    assert main(["history", "--config", str(cfg)]) == 0
    assert "technician aimed the camera" in capsys.readouterr().out  # the worker can see it


def test_the_aim_line_says_a_blurred_picture_is_blurred() -> None:
    """A technician aiming a new camera with its protective film still on the lens sees why
    nothing is found, not 'light ok'."""
    from deskwatch.domain import FrameAnalysis, LightReading
    from deskwatch.technician.aim import describe

    misted = LightReading(120.0, 40.0, 0.0, 1.0, False, True, sharpness=0.02, blurred=True)
    line = describe(FrameAnalysis(frame_index=0, light=misted), [0.0, 0.0, 1.0, 1.0], 0.3)
    assert line.endswith("BLURRED: clean the lens (120/255)"), line
    dark = LightReading(20.0, 10.0, 0.9, 1.0, True, False)
    assert "TOO DARK" in describe(FrameAnalysis(frame_index=0, light=dark), [0.0, 0.0, 1.0, 1.0], 0.3)


@pytest.mark.skipif(not (REPO / "models" / "manifest.yaml").exists(), reason="models/ not built")
@pytest.mark.parametrize("stop", ["ctrl-c", "camera fails"])
def test_the_audit_says_how_long_the_camera_really_was_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, stop: str
) -> None:
    """The worker's history said "live view for up to 120 s" however the session ended: a
    technician's Ctrl-C after two frames, or a camera that failed, read as two minutes of
    camera. The record is made before the first frame and completed with the time the
    camera was really open, the frames it gave and why it closed."""
    import contextlib
    import json
    import sqlite3
    import time

    import deskwatch.camera.replay as replay
    from deskwatch.audit import audit_path
    from deskwatch.camera import CameraError
    from deskwatch.cli import main

    state, cfg = replay_desk(tmp_path)
    real = replay.ReplayCamera.capture
    taken = [0]

    def capture(self: replay.ReplayCamera) -> np.ndarray:
        taken[0] += 1
        if taken[0] == 3:
            if stop == "ctrl-c":
                raise KeyboardInterrupt
            raise CameraError("no frame within 5 s")
        return real(self)

    monkeypatch.setattr(replay.ReplayCamera, "capture", capture)
    t0 = time.monotonic()
    code = main(["aim", "--config", str(cfg), "--seconds", "120", "--interval", "0.2", "--columns", "20"])
    took = time.monotonic() - t0
    assert code == (0 if stop == "ctrl-c" else 69)
    assert "aim stopped after 2 frames" in capsys.readouterr().err or stop != "ctrl-c"
    with contextlib.closing(sqlite3.connect(audit_path(str(state)))) as db:
        [(kind, raw)] = db.execute("SELECT kind, detail FROM events").fetchall()
    detail = json.loads(raw)
    assert kind == "aim_capture" and detail["asked_seconds"] == 120.0
    assert 0 < detail["open_seconds"] <= took < 60 and detail["frames"] == 2, detail
    assert detail["stopped"] == ("Ctrl-C" if stop == "ctrl-c" else "the camera failed: no frame within 5 s")
    assert main(["history", "--config", str(cfg)]) == 0
    line = capsys.readouterr().out
    assert f"the camera open {detail['open_seconds']} s of the 120.0 s asked, 2 frames" in line, line
    assert "up to 120" not in line
