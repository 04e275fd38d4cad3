"""Camera backends and the burst: real files, fakes for failure, open only during a burst."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deskwatch.camera import CameraError, open_camera, take_burst
from deskwatch.camera.config import CameraConfig
from deskwatch.camera.fake import FakeCamera
from tests.support.common import FakeClock


def test_replay_directory_in_order_and_wraps(tmp_path: Path, photos: Path) -> None:
    for i, name in enumerate(["single_01.jpg", "empty_04.jpg"]):
        (tmp_path / f"{i}.jpg").write_bytes((photos / name).read_bytes())
    (tmp_path / "notes.txt").write_text("ignored")
    cam = open_camera(CameraConfig(backend="replay", source=str(tmp_path)))
    cam.open()
    shapes = [cam.capture().shape for _ in range(3)]
    cam.close()
    w0 = Image.open(photos / "single_01.jpg").size
    assert shapes[0][:2] == (w0[1], w0[0]) and shapes[2] == shapes[0] and shapes[1] != shapes[0]


def test_replay_video(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2")
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for v in (10, 120, 240):
        writer.write(np.full((48, 64, 3), v, np.uint8))
    writer.release()
    cam = open_camera(CameraConfig(backend="replay", source=str(path)))
    cam.open()
    means = [int(cam.capture().mean()) for _ in range(4)]
    cam.close()
    assert means[0] < 30 < means[1] < 200 < means[2] and abs(means[3] - means[0]) < 10  # wrapped around


@pytest.mark.parametrize(
    ("source", "needle"),
    [("missing-dir/", "no such file or directory"), ("notes.txt", "not a readable image"), ("empty", "no images")],
)
def test_replay_bad_source_is_a_clear_camera_error(tmp_path: Path, source: str, needle: str) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "empty").mkdir()
    cam = open_camera(CameraConfig(backend="replay", source=str(tmp_path / source)))
    with pytest.raises(CameraError, match=needle):
        cam.open()
        cam.capture()


def test_picamera2_off_a_pi_says_what_to_do() -> None:
    cam = open_camera(CameraConfig(backend="picamera2"))  # importing the backend must not need picamera2
    with pytest.raises(CameraError, match="picamera2 is not importable"):
        cam.open()


def test_burst_spreads_frames_and_closes_the_camera(clock: FakeClock) -> None:
    cam = FakeCamera()
    frames = take_burst(cam, 5, 2.0, clock)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert clock.waits == pytest.approx([0.5, 0.5, 0.5, 0.5])
    assert (frames[-1].captured_at - frames[0].captured_at).total_seconds() == pytest.approx(2.0)
    assert cam.opens == 1 and not cam.is_open
    assert all(f.image.flags["C_CONTIGUOUS"] and f.image.dtype == np.uint8 for f in frames)


def test_burst_closes_the_camera_when_a_read_fails(clock: FakeClock) -> None:
    cam = FakeCamera()
    cam.fail_capture = CameraError("unplugged")
    with pytest.raises(CameraError):
        take_burst(cam, 3, 1.0, clock)
    assert not cam.is_open


def test_burst_stops_early_on_shutdown(clock: FakeClock) -> None:
    cam = FakeCamera()
    stop = threading.Event()
    stop.set()
    frames = take_burst(cam, 5, 2.0, clock, stop)
    assert len(frames) == 1 and not cam.is_open
