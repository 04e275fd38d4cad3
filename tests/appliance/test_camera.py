"""Camera backends and the burst: real files, fakes for failure, open only during a burst."""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deskwatch.app import Daemon, Parts
from deskwatch.camera import DONE_POLL_SECONDS, BurstInFlight, CameraError, open_camera, take_burst
from deskwatch.camera.config import CameraConfig
from deskwatch.camera.fake import FakeCamera
from deskwatch.camera.pi import PiCamera
from deskwatch.camera.replay import load_image, to_rgb
from deskwatch.camera.v4l2 import V4l2Camera
from deskwatch.config import load_config
from deskwatch.schedule import SystemClock
from deskwatch.vision.light import LightConfig, measure_light
from tests.support.common import FakeClock
from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier


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


def test_replay_starts_each_burst_on_a_burst_boundary(tmp_path: Path, photos: Path) -> None:
    """Material laid out one burst per scene (the demo's): a scan that took only 2 of its 3
    frames (settled early) leaves the third unread, and the next scan sees the next scene only."""
    scenes = ["single_01.jpg", "empty_04.jpg"]
    for i in range(6):
        (tmp_path / f"{i}.jpg").write_bytes((photos / scenes[i // 3]).read_bytes())
    cam = open_camera(CameraConfig(backend="replay", source=str(tmp_path), burst_frames=3))
    sizes = {name: Image.open(photos / name).size for name in scenes}
    cam.open()
    first = [cam.capture().shape[1::-1] for _ in range(2)]  # settled after 2 frames
    cam.close()
    cam.open()
    second = [cam.capture().shape[1::-1] for _ in range(3)]
    cam.close()
    assert first == [sizes["single_01.jpg"]] * 2 and second == [sizes["empty_04.jpg"]] * 3


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


def test_a_replay_image_too_large_to_decode_is_a_camera_error(tmp_path: Path) -> None:
    """Pillow refuses an image over twice its pixel limit with an exception of its own, not an
    OSError: it used to escape the scan (no audit record, no backoff)."""
    Image.new("1", (14000, 14000)).save(tmp_path / "0.png")  # 196 Mpx, a 24 KB file
    cam = open_camera(CameraConfig(backend="replay", source=str(tmp_path)))
    cam.open()
    with pytest.raises(CameraError, match=r"0\.png: too large to decode"):
        cam.capture()
    cam.close()


def unblocked(fn: Callable[[], object], pipe: Path) -> dict[str, object]:
    """``fn()`` in a thread: what it returned or raised, and whether it was still blocked
    after 10 s - then a writer opens and closes ``pipe`` so that a reader stuck in it gets
    end-of-file (this test must not hang where the code under test does)."""
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    out["blocked"] = thread.is_alive()
    if thread.is_alive():
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
    return out


def test_a_pipe_named_like_an_image_cannot_hang_the_replay_camera(
    tmp_path: Path, photos: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A named pipe (or a device, a socket) named like an image in a replay folder: reading it
    blocked the burst thread for ever in Image.open, the scan waited for the burst, and the
    watchdog restarted a daemon that hung again. Only regular files are replayed: the others
    are left out of the folder's images, named in the log; and read by name they are a camera
    error at once."""
    (tmp_path / "0.jpg").write_bytes((photos / "single_01.jpg").read_bytes())
    os.mkfifo(tmp_path / "1.jpg")
    cam = open_camera(CameraConfig(backend="replay", source=str(tmp_path), burst_frames=3, burst_seconds=0.2))

    def scan() -> tuple[list[int], BaseException | None]:
        with BurstInFlight(cam, 3, 0.2, SystemClock()) as burst:
            frames = [f.index for f in burst]
        return frames, burst.error

    result = unblocked(scan, tmp_path / "1.jpg")
    assert result == {"value": ([0, 1, 2], None), "blocked": False}
    assert "1.jpg" in caplog.text and "not a regular file" in caplog.text

    result = unblocked(lambda: load_image(tmp_path / "1.jpg"), tmp_path / "1.jpg")
    assert not result["blocked"] and isinstance(result.get("error"), CameraError), result
    assert "1.jpg: not a regular file" in str(result["error"])

    single = open_camera(CameraConfig(backend="replay", source=str(tmp_path / "1.jpg")))
    with pytest.raises(CameraError, match=r"1\.jpg: not a regular file"):
        single.open()


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow's own, at open: refused anyway
def test_a_small_file_of_a_huge_image_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    """A 20 KB PNG of 14000x12000 pixels (under Pillow's own limit of 179 Mpx) was decoded in
    full for every frame of every burst: ~1.8 GB at its peak, on a Pi with 1-4 GB. An image
    larger than the largest frame the camera config allows (4096x3072) is a camera error
    naming the file and its size, from the file's header alone."""
    Image.new("1", (14000, 12000)).save(tmp_path / "0.png")
    cam = open_camera(CameraConfig(backend="replay", source=str(tmp_path)))
    cam.open()
    t0 = time.perf_counter()
    with pytest.raises(CameraError, match=r"0\.png: too large to decode \(14000x12000"):
        cam.capture()
    assert time.perf_counter() - t0 < 0.5  # not decoded (that took seconds)
    cam.close()

    Image.new("1", (3072, 4096), 1).save(tmp_path / "0.png")  # the largest frame, on its side
    image = load_image(tmp_path / "0.png")
    assert image.shape == (4096, 3072, 3) and image.flags.writeable and image.min() == 255


def test_an_enrolment_photo_from_a_50_megapixel_phone_is_decoded_smaller(tmp_path: Path) -> None:
    """Enrolment's photos come from phones, some at 50 megapixels: a JPEG over the camera's
    largest frame is decoded at 1/2 (or 1/4, 1/8) of its size by the decoder itself, not
    refused with "scale it down". The replay camera still refuses it (it decodes every frame)."""
    Image.new("RGB", (8160, 6120), (120, 80, 60)).save(tmp_path / "phone.jpg", quality=80)
    image = load_image(tmp_path / "phone.jpg", shrink_jpeg=True)
    assert image.shape == (3060, 4080, 3) and abs(int(image[0, 0, 0]) - 120) <= 3
    with pytest.raises(CameraError, match="too large to decode"):
        load_image(tmp_path / "phone.jpg")


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_a_16_bit_replay_image_keeps_its_brightness(tmp_path: Path, photos: Path, mode: str) -> None:
    """A 16-bit greyscale PNG (what raw, infrared and thermal tools and ``convert -depth 16``
    write) replayed as a flat white frame: Pillow's conversion to RGB clips such pixels at 255
    instead of scaling them, and the light check called the lit desk camera_obstructed. Wide
    pixels are scaled from their 16-bit range, so the picture is the 8-bit one."""
    grey = np.asarray(Image.open(photos / "single_01.jpg").convert("L"))
    wide = grey.astype(np.uint32) * 257  # the same picture, 16 bits per pixel
    Image.fromarray(wide.astype(np.uint16)).save(tmp_path / "0.png")
    assert Image.open(tmp_path / "0.png").mode == "I;16"
    # the modes a 16-bit picture can have once opened (older Pillow: "I"), decoded from memory
    kinds = {"I;16": np.uint16, "I;16B": ">u2", "I": np.int32, "F": np.float32}
    opened = Image.frombytes(mode, grey.shape[::-1], wide.astype(kinds[mode]).tobytes())

    cam = open_camera(CameraConfig(backend="replay", source=str(tmp_path)))
    cam.open()
    replayed = cam.capture()
    cam.close()
    for image in (replayed, to_rgb(opened)):
        assert image.shape == (*grey.shape, 3) and image.dtype == np.uint8
        assert np.array_equal(image[:, :, 0], grey) and np.array_equal(image[:, :, 2], grey)
    light = measure_light(replayed, LightConfig())
    assert not light.obstructed and not light.low_light


def test_picamera2_off_a_pi_says_what_to_do() -> None:
    cam = open_camera(CameraConfig(backend="picamera2"))  # importing the backend must not need picamera2
    with pytest.raises(CameraError, match="picamera2 is not importable"):
        cam.open()


class Webcam:
    """``cv2.VideoCapture`` of a USB webcam at 30 fps whose frames are black for its first
    ``dark_seconds`` after it is opened (auto exposure settling). Each read waits for the
    webcam's next frame on the test's clock; ``grab`` takes one without decoding it."""

    def __init__(self, clock: FakeClock, dark_seconds: float) -> None:
        self.clock, self.dark_seconds = clock, dark_seconds
        self.scene = np.random.default_rng(1).integers(30, 230, (240, 320, 3), dtype=np.uint8)
        self.opened_at = clock.monotonic()
        self.released = False

    def isOpened(self) -> bool:
        return True

    def set(self, prop: int, value: float) -> bool:
        return True

    def _next(self) -> np.ndarray:
        self.clock.advance(1 / 30)
        lit = self.clock.monotonic() - self.opened_at >= self.dark_seconds
        return self.scene.copy() if lit else np.zeros_like(self.scene)

    def grab(self) -> bool:
        self._next()
        return True

    def read(self) -> tuple[bool, np.ndarray]:
        return True, self._next()

    def release(self) -> None:
        self.released = True


def usb_webcam(monkeypatch: pytest.MonkeyPatch, clock: FakeClock, dark_seconds: float) -> list[Webcam]:
    """OpenCV's VideoCapture replaced by webcams of :class:`Webcam`, one per open of the device
    (the list). Only that attribute: the rest of OpenCV serves the scan as usual (a stand-in
    module would stay bound in every module that imported cv2 meanwhile)."""
    import cv2

    opened: list[Webcam] = []

    def capture(device: int | str, api: int) -> Webcam:
        opened.append(Webcam(clock, dark_seconds))
        return opened[-1]

    monkeypatch.setattr(cv2, "VideoCapture", capture)
    return opened


def test_a_usb_webcams_warm_up_frames_are_not_part_of_the_burst(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """The v4l2 backend opens the webcam for each burst, and a webcam's first frames after it
    is opened are often black while its auto exposure settles: the burst's first frames were
    those. The frames of ``camera.warmup_seconds`` (1 s by default) are discarded first."""
    opened = usb_webcam(monkeypatch, clock, dark_seconds=1.0)
    cfg = CameraConfig(backend="v4l2", source="0")
    camera = V4l2Camera(cfg, monotonic=clock.monotonic)
    for _ in range(2):  # each burst opens the webcam anew, and waits for it anew
        t0 = clock.monotonic()
        frames = take_burst(camera, 5, 2.0, clock)
        assert [f.index for f in frames] == [0, 1, 2, 3, 4] and opened[-1].released
        assert [round(float(f.image.mean())) for f in frames] == [round(float(opened[-1].scene.mean()))] * 5
        assert clock.monotonic() - t0 == pytest.approx(cfg.warmup_seconds + 2.0, abs=0.1)
    assert len(opened) == 2

    usb_webcam(monkeypatch, clock, dark_seconds=0.5)
    first = take_burst(
        V4l2Camera(CameraConfig(backend="v4l2", warmup_seconds=0), monotonic=clock.monotonic), 1, 0, clock
    )
    assert first[0].image.max() == 0  # no warm-up asked for: the very first frame

    unplugged = usb_webcam(monkeypatch, clock, dark_seconds=0)
    monkeypatch.setattr(Webcam, "grab", lambda self: False)
    with pytest.raises(CameraError, match="delivered no frame"):
        take_burst(V4l2Camera(cfg, monotonic=clock.monotonic), 5, 2.0, clock)
    assert unplugged[-1].released  # a failed warm-up leaves the device free for the next attempt


def test_a_usb_webcam_warming_up_is_no_covered_camera(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock, write_config: Callable[..., Path]
) -> None:
    """A webcam black for about its first second after it is opened, at a lit desk with the
    worker at it: 3 of the burst's 5 frames (over 2 s) were black, and the scan reported
    camera_obstructed against the worker."""
    usb_webcam(monkeypatch, clock, dark_seconds=1.2)
    cfg = load_config(write_config("camera: {backend: v4l2, source: '0', burst_frames: 5, burst_seconds: 2.0}"))
    delivery = RecordingDelivery()
    daemon = Daemon(
        cfg,
        clock=clock,
        parts=Parts(
            camera=V4l2Camera(cfg.camera, monotonic=clock.monotonic),
            vision=ScriptedVision(),
            delivery=delivery,
            notifier=SilentNotifier(),
        ),
    )
    record = daemon.scanner.scan("schedule")
    assert record is not None and record.frames == 5
    assert [e["type"] for e, _ in delivery.events] == [] and delivery.scans[0]["outcome"] == "clear"


class Picamera2:
    """picamera2's camera at 30 fps whose frames are black for ``dark_seconds`` after each
    start: its auto exposure starts from the last scan's, here in the dark."""

    dark_seconds = 1.0
    clock = FakeClock()

    def __init__(self, number: int) -> None:
        self.started_at: float | None = None
        self.scene = np.random.default_rng(1).integers(30, 230, (240, 320, 3), dtype=np.uint8)

    def create_video_configuration(self, **kwargs: object) -> dict[str, object]:
        return dict(kwargs)

    def configure(self, config: dict[str, object]) -> None:
        pass

    def start(self) -> None:
        self.started_at = self.clock.monotonic()

    def stop(self) -> None:
        self.started_at = None

    def close(self) -> None:
        pass

    def _next(self) -> np.ndarray:
        assert self.started_at is not None, "read while stopped"
        self.clock.advance(1 / 30)
        lit = self.clock.monotonic() - self.started_at >= self.dark_seconds
        return self.scene.copy() if lit else np.zeros_like(self.scene)

    def capture_metadata(self) -> dict[str, object]:
        self._next()
        return {}

    @contextlib.contextmanager
    def captured_request(self) -> Iterator[types.SimpleNamespace]:
        image = self._next()
        yield types.SimpleNamespace(make_array=lambda stream: image)


def test_the_pi_cameras_warm_up_frames_are_not_part_of_the_burst(
    monkeypatch: pytest.MonkeyPatch, clock: FakeClock
) -> None:
    """The Pi camera is started for each burst, its exposure where the last scan left it
    (minutes ago, maybe in another light): its first frames were the burst's. The frames of
    ``camera.warmup_seconds`` after the start are discarded first."""
    monkeypatch.setattr(Picamera2, "clock", clock)
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=Picamera2))
    camera = PiCamera(CameraConfig(backend="picamera2"), monotonic=clock.monotonic)
    for _ in range(2):
        frames = take_burst(camera, 5, 2.0, clock)
        assert all(f.image.mean() > 30 for f in frames), [round(float(f.image.mean())) for f in frames]
        assert camera._cam.started_at is None  # stopped after the burst


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


def test_burst_in_flight_keeps_the_pace_and_closes_the_camera(clock: FakeClock) -> None:
    cam = FakeCamera()
    with BurstInFlight(cam, 5, 2.0, clock) as burst:
        frames = list(burst)
    assert [f.index for f in frames] == [0, 1, 2, 3, 4] and burst.captured == 5 and burst.error is None
    # waited in slices (a consumer that leaves is noticed within DONE_POLL_SECONDS), 2 s in all
    assert max(clock.waits) <= DONE_POLL_SECONDS + 1e-9 and sum(clock.waits) == pytest.approx(2.0)
    assert (frames[-1].captured_at - frames[0].captured_at).total_seconds() == pytest.approx(2.0)
    assert cam.opens == 1 and not cam.is_open


def test_burst_in_flight_hands_each_frame_over_before_the_next_is_taken(clock: FakeClock) -> None:
    """The consumer gets a frame while the camera waits for the next one (the camera here
    waits until the consumer has it, as a camera's gap outlasts a frame's analysis)."""
    taken = threading.Event()
    log: list[str] = []

    class Patient(FakeCamera):
        def capture(self) -> np.ndarray:
            if self.captures:
                assert taken.wait(5.0), "the previous frame was never handed over"
                taken.clear()
            log.append(f"captured {self.captures}")
            return super().capture()

    with BurstInFlight(Patient(), 3, 1.0, clock) as burst:
        for frame in burst:
            log.append(f"analysed {frame.index}")
            taken.set()
    assert log == ["captured 0", "analysed 0", "captured 1", "analysed 1", "captured 2", "analysed 2"]


def test_burst_in_flight_ends_where_the_camera_failed(clock: FakeClock) -> None:
    class Unplugged(FakeCamera):
        def capture(self) -> np.ndarray:
            if self.captures == 2:
                raise CameraError("unplugged")
            return super().capture()

    cam = Unplugged()
    with BurstInFlight(cam, 5, 2.0, clock) as burst:
        frames = list(burst)
    assert len(frames) == 2 and isinstance(burst.error, CameraError) and not cam.is_open

    cam = FakeCamera()
    cam.fail_open = OSError("no such device")
    with BurstInFlight(cam, 5, 2.0, clock) as burst:
        assert list(burst) == []
    assert isinstance(burst.error, OSError) and burst.captured == 0


def test_burst_in_flight_stops_early_on_shutdown(clock: FakeClock) -> None:
    cam = FakeCamera()
    stop = threading.Event()
    stop.set()
    with BurstInFlight(cam, 5, 2.0, clock, stop) as burst:
        frames = list(burst)
    assert len(frames) == 1 and burst.error is None and not cam.is_open


def test_burst_in_flight_left_early_takes_no_more_frames() -> None:
    """A consumer that leaves on the first frame (it failed, or its scan was settled): the
    camera takes no frame after that and is closed when the with block is left, without
    waiting for the next frame's time. Real time, frames 3 s apart: the consumer leaves while
    the camera waits for the second."""
    cam = FakeCamera()
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="bad frame"), BurstInFlight(cam, 5, 12.0, SystemClock()) as burst:
        for _ in burst:
            raise ValueError("bad frame")
    assert burst.captured == 1 and cam.captures == 1 and not cam.is_open
    assert time.monotonic() - t0 < 2.5  # closed soon after (~0.1 s), not at the next frame 3 s in


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_a_turned_camera_delivers_its_pictures_upright(tmp_path: Path, photos: Path, degrees: int) -> None:
    """camera.rotation: a camera mounted upside down or on its side delivers the picture turned
    that many degrees clockwise, whatever the backend: what the scan analyses stands upright."""
    from deskwatch.config import load_config_text

    upright = np.asarray(Image.open(photos / "single_01.jpg").convert("RGB"))
    mounted = np.rot90(upright, degrees // 90)  # what the camera sees, turned the other way
    Image.fromarray(mounted).save(tmp_path / "mounted.png")
    cfg = load_config_text(
        f"device: {{id: d, site: s, worker_id: w}}\nstate_dir: {tmp_path}\n"
        f"camera: {{backend: replay, source: {tmp_path / 'mounted.png'}, rotation: {degrees}}}\n"
    )
    (frame,) = take_burst(open_camera(cfg.camera), 1, 0.0, SystemClock())
    assert frame.image.flags.c_contiguous and np.array_equal(frame.image, upright)


@pytest.mark.parametrize("value", ["45", "'180'", "-90"])
def test_a_rotation_that_is_not_a_quarter_turn_is_refused_naming_the_choices(tmp_path: Path, value: str) -> None:
    from deskwatch.config import ConfigError, load_config_text

    with pytest.raises(ConfigError) as err:
        load_config_text(f"device: {{id: d, site: s, worker_id: w}}\ncamera: {{rotation: {value}}}\n")
    assert "camera.rotation" in str(err.value) and "one of 0, 90, 180, 270" in str(err.value)
