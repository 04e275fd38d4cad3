"""The daemon's scan loop with one fake stage at a time and a fake clock (no sleeping)."""

from __future__ import annotations

import dataclasses
import gc
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deskwatch.app import Daemon, Parts, build_evidence
from deskwatch.audit import AuditLog
from deskwatch.camera import CameraError, take_burst
from deskwatch.camera.fake import FakeCamera
from deskwatch.config import load_config
from deskwatch.domain import Box, Detection, Face, Frame
from deskwatch.policy.engine import Policy, PolicyContext
from deskwatch.stages import Vision
from tests.support.common import FakeClock
from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier
from tests.support.faultfs import FaultFs
from tests.support.policy import face
from tests.support.vision import Photo, camera_burst


def bright_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(30, 230, (240, 320, 3), dtype=np.uint8)]


def make_daemon(
    write_config: Callable[..., Path],
    clock: FakeClock,
    *,
    extra: str = "",
    camera: FakeCamera | None = None,
    vision: Vision | None = None,
) -> tuple[Daemon, FakeCamera, RecordingDelivery]:
    cfg = load_config(write_config(extra))
    cam = camera or FakeCamera(frames=bright_frames())
    delivery = RecordingDelivery()
    daemon = Daemon(
        cfg,
        clock=clock,
        parts=Parts(camera=cam, vision=vision or ScriptedVision(), delivery=delivery, notifier=SilentNotifier()),
    )
    return daemon, cam, delivery


def test_interval_scans_open_the_camera_only_for_each_burst(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    daemon, cam, delivery = make_daemon(write_config, clock)
    start = clock.monotonic()
    assert daemon.run(max_scans=4, install_signals=False) == 0
    assert len(delivery.scans) == 4
    assert cam.opens == 4 and not cam.is_open  # one open per scan, closed after each burst
    assert cam.captures == 4 * 3
    assert delivery.events == []  # a person at a bright desk: nothing to report
    assert all(s["outcome"] == "clear" for s in delivery.scans)
    assert 3 * 5 <= clock.monotonic() - start <= 4 * 5 + 2  # every interval_seconds=5
    assert delivery.started and delivery.stopped


def test_a_settled_burst_ends_early_with_the_outcomes_of_the_whole_burst(
    write_config: Callable[..., Path], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The enrolled worker alone at the desk: after 3 of 5 frames nothing the last two could
    show would make a finding (policy.end_settled_bursts), so they are not analysed, and the
    scan reports what the whole burst reports. (That the camera then takes no more frames is
    test_camera's: this fake clock lets the burst run ahead of the analysis.)"""
    caplog.set_level(logging.INFO, logger="deskwatch.scanner")
    worker = (
        [Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0))],
        [face(Box(0.42, 0.25, 0.58, 0.5), identity="worker")],
    )
    records = {}
    for setting in ("true", "false"):
        vision = ScriptedVision(lambda f: worker)
        extra = f"camera: {{burst_frames: 5}}\npolicy: {{end_settled_bursts: {setting}}}"
        daemon, cam, delivery = make_daemon(write_config, clock, extra=extra, vision=vision)
        daemon.run(max_scans=1, install_signals=False)
        assert not cam.is_open
        records[setting] = (vision.analyzed, delivery.scans[0])
    (early, settled), (whole, full) = records["true"], records["false"]
    assert (early, whole) == (3, 5)
    done = [r.getMessage() for r in caplog.records if " done in " in r.getMessage()]
    # the operator's log (how the two frames divide into never taken and taken before the burst
    # settled depends on how far this fake clock let the camera run ahead: see the next test)
    assert "(settled: 2 " in done[0] and "settled" not in done[1], done
    assert settled["outcome"] == full["outcome"] == "clear" and settled["persons"] == full["persons"] == 1
    assert [(c["rule"], c["outcome"]) for c in settled["checks"]] == [(c["rule"], c["outcome"]) for c in full["checks"]]
    assert (
        next(c["reason"] for c in settled["checks"] if c["rule"] == "phone_use")
        == "phone in use in 0/3 frames (need 3)"
    )

    # a stranger in the second frame: after 3 frames 2 more could still make 3 with them; after
    # 4, one more cannot
    stranger = ([*worker[0], Detection("person", 0.9, Box(0.0, 0.1, 0.25, 1.0))], worker[1])
    vision = ScriptedVision(lambda f: stranger if f.index == 1 else worker)
    daemon, _cam, delivery = make_daemon(write_config, clock, extra="camera: {burst_frames: 5}", vision=vision)
    daemon.run(max_scans=1, install_signals=False)
    assert vision.analyzed == 4 and delivery.scans[0]["outcome"] == "clear"

    # nobody enrolled: the vision stage checks no face, so waiting for an identity result
    # would wait for nothing; a stage that checks faces (and has given no result yet) is waited for
    unchecked = (worker[0], [dataclasses.replace(worker[1][0], identity=None)])
    for enrolled, frames in ((False, 3), (True, 5)):
        vision = ScriptedVision(lambda f: unchecked)
        vision.identity_enabled = enrolled
        daemon, _cam, delivery = make_daemon(write_config, clock, extra="camera: {burst_frames: 5}", vision=vision)
        daemon.run(max_scans=1, install_signals=False)
        assert vision.analyzed == frames and delivery.scans[0]["outcome"] == "clear", enrolled


def test_a_burst_settled_behind_the_camera_counts_each_frame_once(
    write_config: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    """In real time, each frame's analysis slower than the camera's gap (0.6 s against 0.5 s,
    as on a slow Pi): when the burst is settled after 3 frames, the camera has already taken a
    fourth. It counts as taken (``frames``: the camera took it) and as let go unanalysed, not
    also as never taken; and the health's time a frame is per frame analysed."""
    import time

    from deskwatch.schedule import SystemClock

    caplog.set_level(logging.INFO, logger="deskwatch.scanner")
    worker = (
        [Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0))],
        [face(Box(0.42, 0.25, 0.58, 0.5), identity="worker")],
    )

    class Slow(ScriptedVision):
        def analyze(self, frame: Any, *, look_closer: bool = True) -> Any:
            time.sleep(0.6)
            return super().analyze(frame, look_closer=look_closer)

    vision = Slow(lambda f: worker)
    # the machine's own clock, which nobody may synchronise here (a container, CI)
    cfg = load_config(
        write_config("camera: {burst_frames: 5, burst_seconds: 2.0}\nschedule: {require_synced_clock: false}")
    )
    cam, delivery = FakeCamera(frames=bright_frames()), RecordingDelivery()
    daemon = Daemon(
        cfg, clock=SystemClock(), parts=Parts(camera=cam, vision=vision, delivery=delivery, notifier=SilentNotifier())
    )
    record = daemon.scanner.scan("cli")
    assert record is not None and vision.analyzed == 3 and not cam.is_open
    assert record.frames == cam.captures == delivery.scans[0]["frames"] >= 4  # frame 3 came at 1.5 s
    assert record.dropped_frames == record.frames - 3 and record.frames + record.unseen_frames == 5
    done = next(r.getMessage() for r in caplog.records if " done in " in r.getMessage())
    assert f"{record.frames} frames (settled: " in done and "taken before it settled, not analysed" in done, done
    per_frame = daemon.scanner.stats.inference_ms[-1]
    assert per_frame == pytest.approx(record.durations_ms["vision"] / 3, rel=0.02) and per_frame >= 590


def test_a_settled_burst_counts_the_people_the_whole_burst_counts(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    """The audit's persons and bystanders of a burst settled after 3 of 5 frames are counted at
    the persistence of the frames analysed: with the whole burst's need (3 of 5) they were the
    lowest count of the three - one frame with the two far-off people out of view - where the
    whole burst counted them."""
    worker = Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0))
    far = [Detection("person", 0.9, Box(0.0, 0.0, 0.1, 0.2)), Detection("person", 0.9, Box(0.85, 0.0, 0.95, 0.2))]
    me = [face(Box(0.42, 0.25, 0.58, 0.5), identity="worker")]
    counts = {}
    for setting in ("true", "false"):
        vision = ScriptedVision(lambda f: ([worker] if f.index == 2 else [worker, *far], me))
        extra = f"camera: {{burst_frames: 5}}\npolicy: {{end_settled_bursts: {setting}}}"
        daemon, _cam, delivery = make_daemon(write_config, clock, extra=extra, vision=vision)
        daemon.scanner.scan("cli")
        scan = delivery.scans[0]
        counts[setting] = (vision.analyzed, scan["outcome"], scan["persons"], scan["bystanders"])
    assert counts == {"true": (3, "clear", 3, 2), "false": (5, "clear", 3, 2)}


def test_dark_room_reports_low_light_not_away(write_config: Callable[..., Path], clock: FakeClock) -> None:
    dark = [(f // 8) for f in bright_frames()]
    daemon, cam, delivery = make_daemon(write_config, clock, camera=FakeCamera(frames=dark))
    daemon.run(max_scans=1, install_signals=False)
    types = [e["type"] for e, _ in delivery.events]
    assert types == ["low_light"]
    assert cam.opens == 1  # no confirming burst: darkness is not absence


def test_nobody_at_the_desk_is_confirmed_by_a_second_burst(write_config: Callable[..., Path], clock: FakeClock) -> None:
    nobody = ScriptedVision(lambda f: ([], []))
    daemon, cam, delivery = make_daemon(write_config, clock, vision=nobody)
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 2
    assert [e["type"] for e, _ in delivery.events] == ["away_from_desk"]
    assert delivery.scans[0]["frames"] == 6  # both bursts are in the audit record


def test_the_first_bursts_frames_are_let_go_before_the_confirming_burst(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    """Two bursts are never held at once: the first one is never reported once a
    confirmation is due (it is replaced, or the scan ends in an error)."""
    import gc
    import weakref

    class Tracking(FakeCamera):
        def __init__(self) -> None:
            super().__init__()
            self.taken: list[weakref.ref[np.ndarray]] = []
            self.alive_at_second_burst: int | None = None

        def capture(self) -> np.ndarray:
            if self.opens == 2 and self.alive_at_second_burst is None:
                gc.collect()
                self.alive_at_second_burst = sum(r() is not None for r in self.taken)
            image = super().capture()  # a new array each time (no fixed frames given)
            self.taken.append(weakref.ref(image))
            return image

    cam = Tracking()
    daemon, _, delivery = make_daemon(write_config, clock, camera=cam, vision=ScriptedVision(lambda f: ([], [])))
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 2 and [e["type"] for e, _ in delivery.events] == ["away_from_desk"]
    assert cam.alive_at_second_burst == 0  # before: all 3 of the first burst
    assert delivery.events[0][1]  # the evidence comes from the confirming burst


class PacedCamera(FakeCamera):
    """A camera whose gap between frames outlasts a frame's analysis (as on the appliance:
    0.5 s between frames, ~50 ms of analysis here): each frame after the first waits until
    the previous one was analysed (at most ``patience`` seconds: a scan that analyses
    only after the burst gets them all). Each capture is a fresh array, tracked."""

    def __init__(self, images: list[np.ndarray], patience: float = 0.3) -> None:
        super().__init__()
        self.images, self.patience = images, patience
        self.analysed = threading.Event()
        self.taken: list[weakref.ref[np.ndarray]] = []

    def capture(self) -> np.ndarray:
        if self.captures % len(self.images):
            self.analysed.wait(self.patience)
        self.analysed.clear()
        image = self.images[self.captures % len(self.images)].copy()
        super().capture()
        self.taken.append(weakref.ref(image))
        return image

    def alive(self) -> int:
        gc.collect()
        return sum(r() is not None for r in self.taken)


class CountingVision(ScriptedVision):
    """Records how many captured frames are alive while each frame is analysed."""

    def __init__(self, camera: PacedCamera, script: Callable[[Frame], tuple[list[Detection], list[Face]]]) -> None:
        super().__init__(script)
        self.camera, self.alive = camera, []

    def analyze(self, frame: Frame, *, look_closer: bool = True) -> Any:
        self.alive.append(self.camera.alive())
        try:
            return super().analyze(frame, look_closer=look_closer)
        finally:
            self.camera.analysed.set()


PHONE_SCORES = [0.6, 0.9, 0.7, 0.9, 0.5]  # the best frame is 1 (the earliest of the two at 0.9)


def phone_in_hand(frame: Frame) -> tuple[list[Detection], list[Face]]:
    person = Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0))
    return [person, Detection("cell phone", PHONE_SCORES[frame.index], Box(0.45, 0.5, 0.55, 0.6), "in_hand")], []


@pytest.mark.parametrize(
    ("script", "found"),
    [
        (ScriptedVision().script, []),  # the worker at the desk: no frame can be evidence
        (phone_in_hand, ["phone_use"]),  # the best phone so far is kept, as its picture
    ],
)
def test_a_scan_holds_one_full_frame_at_a_time(
    write_config: Callable[..., Path],
    clock: FakeClock,
    script: Callable[[Frame], tuple[list[Detection], list[Face]]],
    found: list[str],
) -> None:
    """Issue 13: frames are analysed as they come and let go, a frame that may become a
    finding's evidence kept as its evidence picture (anonymised and scaled down), so a
    scan of 5 holds 1 full frame at a time, not 5 (before: 5 while the last was analysed);
    the findings and their evidence are byte for byte what the whole burst held at once gives."""
    rng = np.random.default_rng(7)
    images = [rng.integers(30, 230, (480, 640, 3), dtype=np.uint8) for _ in range(5)]  # larger than a thumbnail
    cam = PacedCamera(images, patience=5.0)  # generous: alive()'s full gc.collect() can take 0.3 s on a slow runner
    vision = CountingVision(cam, script)
    extra = "camera: {burst_frames: 5}"
    daemon, _, delivery = make_daemon(write_config, clock, extra=extra, camera=cam, vision=vision)
    daemon.run(max_scans=1, install_signals=False)
    assert vision.alive == [1, 1, 1, 1, 1]

    # the same burst held whole, as the scanner did before
    cfg = load_config(write_config(extra))
    frames = take_burst(FakeCamera(frames=images), 5, 2.0, FakeClock())
    analyses = [ScriptedVision(script).analyze(f) for f in frames]
    outcome = Policy(cfg.policy).evaluate(analyses, PolicyContext(clock.now(), "schedule", confirming=True))
    expected = [
        (
            f.type,
            f.confidence,
            f.detail,
            build_evidence(cfg)(frames[f.frame_index], f, analyses[f.frame_index], outcome.people.get(f.frame_index))[
                0
            ],
        )
        for f in outcome.findings
    ]
    got = [(e["type"], e["confidence"], e["detail"], jpeg) for e, jpeg in delivery.events]
    assert [(t, c, d, ev.jpeg if ev else None) for t, c, d, ev in expected] == got
    assert [t for t, *_ in got] == found
    assert all(jpeg for *_, jpeg in got)


def test_a_camera_failing_mid_burst_costs_the_scan_though_frames_were_analysed(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    """The frames before the failure were analysed while the burst went on (and the
    detector failed on one): the camera's failure is what the scan reports, as when the
    analysis came after the burst, and nothing else."""

    class Unplugged(FakeCamera):
        def capture(self) -> np.ndarray:
            if self.captures == 2:
                raise CameraError("unplugged")
            return super().capture()

    def crashes(frame: Frame) -> tuple[list[Detection], list[Face]]:
        raise RuntimeError("simulated detector crash")

    cam = Unplugged(frames=bright_frames())
    daemon, _, delivery = make_daemon(write_config, clock, camera=cam, vision=ScriptedVision(crashes))
    daemon.run(max_scans=1, install_signals=False)
    assert delivery.events == [] and not cam.is_open
    assert delivery.scans[0]["outcome"] == "error" and delivery.scans[0]["error"] == "camera failed: unplugged"
    assert daemon.scanner.camera_health.failures == 1


def test_an_unexpected_camera_exception_is_still_a_scan_with_its_record(
    write_config: Callable[..., Path], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend raising what no camera error is (a bug, a library's own exception) costs the
    scan, which keeps its audit record, and starts the camera's backoff; it used to escape the
    scan, which then had no record at all."""
    cam = FakeCamera(frames=bright_frames())
    cam.fail_capture = ValueError("a library's own complaint")
    daemon, _, delivery = make_daemon(write_config, clock, camera=cam)
    record = daemon.scanner.scan("cli")
    assert record is not None and not cam.is_open
    assert delivery.scans[0]["outcome"] == "error"
    assert delivery.scans[0]["error"] == "camera failed: ValueError: a library's own complaint"
    assert daemon.scanner.camera_health.failures == 1
    assert any(r.exc_info and r.exc_info[0] is ValueError for r in caplog.records)  # the traceback is logged


def test_worker_back_for_the_confirming_burst_is_not_reported(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    calls = {"n": 0}

    def back_later(frame: Frame) -> tuple[list[Detection], list[Face]]:
        calls["n"] += 1
        return ([], []) if calls["n"] <= 3 else ScriptedVision().script(frame)

    daemon, cam, delivery = make_daemon(write_config, clock, vision=ScriptedVision(back_later))
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 2 and delivery.events == []


class StoppedMidBurst(FakeCamera):
    """The daemon is told to stop (SIGTERM: a restart, an update, a reboot) right after the
    first frame of the ``burst``-th burst: the burst ends there, as it does in real time."""

    def __init__(self, images: list[np.ndarray], burst: int = 1) -> None:
        super().__init__(frames=images)
        self.burst = burst
        self.daemon: Daemon | None = None

    def capture(self) -> np.ndarray:
        image = super().capture()
        if self.opens == self.burst and self.daemon is not None:
            self.daemon.request_stop()
        return image


@pytest.mark.parametrize(
    ("case", "burst"),
    [
        ("phone in the first frame only", 1),
        ("covered for the first frame only", 1),
        ("nobody at the desk, the confirming burst cut after one frame", 2),
    ],
)
def test_a_burst_cut_short_by_a_shutdown_is_no_verdict(
    write_config: Callable[..., Path], clock: FakeClock, case: str, burst: int
) -> None:
    """A finding needs its persistence across the burst (3 of 5 frames here). A stop during
    the burst used to have the frames taken so far judged as if they were the whole burst:
    a phone glimpsed in 1 frame was phone_use "in 1/1 frames", a hand over the lens for one
    frame camera_obstructed, one empty frame of the confirming burst away_from_desk - each
    queued and flushed on the way out. The scan now says it was interrupted and reports nothing."""
    person = Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0))
    phone = Detection("cell phone", 0.8, Box(0.45, 0.5, 0.55, 0.6), "in_hand")
    images = bright_frames()
    if case.startswith("phone"):
        vision = ScriptedVision(lambda f: ([person, phone], []) if f.index == 0 else ([person], []))
    elif case.startswith("covered"):
        images = [np.zeros_like(images[0]), *images * 4]
        vision = ScriptedVision()
    else:
        vision = ScriptedVision(lambda f: ([], []))
    cam = StoppedMidBurst(images, burst)
    daemon, _, delivery = make_daemon(write_config, clock, extra="camera: {burst_frames: 5}", camera=cam, vision=vision)
    cam.daemon = daemon
    record = daemon.scanner.scan("schedule")
    assert record is not None and cam.opens == burst and not cam.is_open
    assert delivery.events == [] and record.findings == []
    scan = delivery.scans[0]
    assert scan["outcome"] == "error" and "interrupted by shutdown" in scan["error"], scan
    assert "1 of 5 frames" in scan["error"] and "nothing reported" in scan["error"]


class FlakyCamera(FakeCamera):
    """Fails to open the first ``failures`` times (unplugged), then works."""

    def __init__(self, failures: int):
        super().__init__(frames=bright_frames())
        self.failures = failures
        self.attempts = 0

    def open(self) -> None:
        self.attempts += 1
        if self.attempts <= self.failures:
            raise CameraError("no camera at /dev/video0")
        super().open()


def test_camera_failure_is_reported_retried_with_backoff_and_recovers(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    cam = FlakyCamera(failures=3)
    daemon, _, delivery = make_daemon(write_config, clock, camera=cam)
    degraded_seen: list[str | None] = []
    original = delivery.set_degraded

    def spy(reason: list[str] | None) -> None:
        degraded_seen.append("; ".join(reason) if reason else None)
        original(reason)

    delivery.set_degraded = spy  # type: ignore[method-assign]
    daemon.run(max_scans=8, install_signals=False)
    outcomes = [s["outcome"] for s in delivery.scans]
    assert outcomes[-1] == "clear" and "error" in outcomes
    # three real attempts failed; scans due during the backoff did not touch the camera
    assert cam.attempts == 3 + cam.opens
    assert outcomes.count("error") > 3
    assert any(r and "no camera" in r for r in degraded_seen)
    assert "camera" not in (delivery.degraded or "")  # recovered by itself (clock/enrolment reasons may remain)


def test_pause_stops_scans_and_resume_brings_them_back(write_config: Callable[..., Path], clock: FakeClock) -> None:
    daemon, cam, delivery = make_daemon(write_config, clock)
    delivery.command("pause", {"reason": "fetch water", "minutes": 2, "request_id": "r1"})
    t0 = clock.monotonic()
    daemon.run(max_scans=1, install_signals=False)
    # no camera use during the 2-minute pause; the first scan comes after it expired
    first_scan_after = clock.monotonic() - t0
    assert first_scan_after >= 120 - 5
    assert cam.opens == 1


@pytest.mark.parametrize("jump_hours", [3, -3])
def test_a_clock_correction_during_a_pause_neither_ends_nor_stretches_it(
    write_config: Callable[..., Path], clock: FakeClock, jump_hours: int
) -> None:
    """A Pi has no RTC: timesyncd may correct the wall clock by hours while the worker is
    paused. The pause still lasts its 30 minutes of real time - not ended at once by a
    forward jump (the camera opening during it, a pause_overrun against the worker), not
    stretched by a backward one - and 'deskwatch status' shows the time it really has left."""
    from deskwatch.system.control import pause_status

    daemon, cam, delivery = make_daemon(write_config, clock)
    delivery.command("pause", {"reason": "doctor call", "minutes": 30, "request_id": "r1"})
    t0 = clock.monotonic()
    plain_wait = clock.wait
    seen: dict[str, Any] = {}

    def wait(event: threading.Event, seconds: float) -> bool:
        if "status" not in seen and clock.monotonic() - t0 >= 10:
            clock.jump_wall(jump_hours * 3600)
            seen["status"] = pause_status(daemon.policy, clock.now())
        if clock.monotonic() - t0 > 2 * 3600:
            daemon.request_stop()  # the pause outlived its declared time by far
        return plain_wait(event, seconds)

    clock.wait = wait  # type: ignore[method-assign]
    daemon.run(max_scans=1, install_signals=False)
    assert seen["status"]["paused"] and 30 * 60 - 20 <= seen["status"]["remaining_seconds"] <= 30 * 60 - 10
    assert 30 * 60 <= clock.monotonic() - t0 <= 30 * 60 + 10  # the first scan came when the pause ended
    assert cam.opens == 1
    assert delivery.events == []  # the worker is at the desk when it ends: no pause_overrun


def test_no_scan_opens_the_camera_until_the_clock_is_synchronised(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    """A Pi booted without network shows the time it was switched off, which may fall in a
    shift that ended hours ago: until NTP has set the clock, scheduled scans are skipped, an
    on-demand scan is refused, and the status says why. Once it is synchronised, scans go on."""
    from deskwatch_contract.intake import CommandRejected

    clock.synced = False
    daemon, cam, delivery = make_daemon(write_config, clock)
    with pytest.raises(CommandRejected, match="clock is not synchronised"):
        delivery.command("scan", {"request_id": "r9"})
    assert daemon.reasons()[0] == "clock: not synchronised, no scans until it is (schedule.require_synced_clock)"
    t0 = clock.monotonic()
    plain_wait = clock.wait

    def wait(event: threading.Event, seconds: float) -> bool:
        if clock.monotonic() - t0 >= 60:
            clock.synced = True  # timesyncd reached its server
        return plain_wait(event, seconds)

    clock.wait = wait  # type: ignore[method-assign]
    daemon.run(max_scans=1, install_signals=False)
    assert clock.monotonic() - t0 >= 60 and cam.opens == 1  # the interval scans due before were skipped
    assert daemon.scanner.stats.skipped >= 10
    assert not any(r.startswith("clock") for r in daemon.reasons())


def test_a_clock_nobody_synchronises_is_trusted_when_the_config_says_so(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    clock.synced = False
    daemon, cam, _delivery = make_daemon(write_config, clock, extra="schedule: {require_synced_clock: false}")
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 1
    assert daemon.reasons()[0] == "clock: not synchronised (event times may be wrong)"


def test_on_demand_scan_command(write_config: Callable[..., Path], clock: FakeClock) -> None:
    daemon, cam, delivery = make_daemon(write_config, clock, extra="schedule: {interval_seconds: 3600}")
    delivery.command("scan", {"request_id": "r2"})
    t0 = clock.monotonic()
    daemon.run(max_scans=1, install_signals=False)
    assert clock.monotonic() - t0 < 60 and cam.opens == 1


def test_uk_profile_refuses_on_demand_scans(write_config: Callable[..., Path], clock: FakeClock) -> None:
    from deskwatch_contract.intake import CommandRejected

    _daemon, _, delivery = make_daemon(write_config, clock, extra="policy: {profile: uk}")
    with pytest.raises(CommandRejected, match="scheduled checks only"):
        delivery.command("scan", {"request_id": "r3"})


def test_failed_thumbnail_never_costs_the_event(
    write_config: Callable[..., Path], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    nobody = ScriptedVision(lambda f: ([], []))
    daemon, _, delivery = make_daemon(write_config, clock, vision=nobody)

    def broken(*a: object) -> None:
        raise MemoryError("simulated")

    monkeypatch.setattr(daemon.scanner, "make_evidence", broken)
    daemon.run(max_scans=1, install_signals=False)
    ((event, jpeg),) = delivery.events
    assert event["type"] == "away_from_desk" and jpeg is None and event["evidence"] is None


def test_a_failed_evidence_picture_never_costs_the_scan(
    write_config: Callable[..., Path], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The picture kept of a frame that may be evidence fails: the frame is kept instead and
    the thumbnail made from it, as before there were pictures."""
    nobody = ScriptedVision(lambda f: ([], []))
    daemon, _, delivery = make_daemon(write_config, clock, vision=nobody)

    def broken(*a: object) -> None:
        raise MemoryError("simulated")

    monkeypatch.setattr(daemon.scanner, "prepare_evidence", broken)
    daemon.run(max_scans=1, install_signals=False)
    ((event, jpeg),) = delivery.events
    assert event["type"] == "away_from_desk" and jpeg and event["evidence"]["bytes"] == len(jpeg)


def test_health_is_published(write_config: Callable[..., Path], clock: FakeClock) -> None:
    daemon, _, delivery = make_daemon(write_config, clock, extra="service: {health_interval_seconds: 10}")
    daemon.run(max_scans=5, install_signals=False)
    assert delivery.health, "no health published"
    last = delivery.health[-1]
    assert last["scans"] >= 1 and last["camera"] == "ok" and last["inference_ms"]["p50"] is not None


def test_pause_during_the_confirmation_wait_keeps_the_camera_closed(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    daemon, cam, delivery = make_daemon(write_config, clock, vision=ScriptedVision(lambda f: ([], [])))
    plain_wait = clock.wait

    def wait(event: threading.Event, seconds: float) -> bool:
        if seconds >= 10 and cam.opens == 1 and daemon.policy.paused is None:  # the 20 s confirmation wait
            delivery.command("pause", {"reason": "fetch water", "minutes": 5, "request_id": "r"})
        return plain_wait(event, seconds)

    clock.wait = wait  # type: ignore[method-assign]
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 1  # no confirming burst once the worker paused
    assert delivery.events == []
    assert delivery.scans[0]["outcome"] == "error" and "paused" in delivery.scans[0]["error"]


@pytest.mark.parametrize("trigger", ["schedule", "command"])
def test_the_confirming_burst_never_opens_the_camera_after_the_shift_ended(
    write_config: Callable[..., Path], trigger: str
) -> None:
    """A scan 5 s before the shift ends finds nobody: the confirmation 20 s later would be
    outside the shift, so the camera stays closed and nothing is reported against the worker;
    the scan's record says why (its audit trail, as for a pause during the wait)."""
    clock = FakeClock(datetime(2026, 11, 30, 16, 59, 50, tzinfo=UTC))  # Monday, shift 09:00-17:00
    shift = """
schedule:
  timezone: UTC
  shifts: [{days: [mon], start: "09:00", end: "17:00"}]
  mode: interval
  interval_seconds: 5
"""
    extra = shift if trigger == "schedule" else shift.replace("interval_seconds: 5", "interval_seconds: 3600")
    daemon, cam, delivery = make_daemon(write_config, clock, extra=extra, vision=ScriptedVision(lambda f: ([], [])))
    if trigger == "command":
        clock.advance(5)
        delivery.command("scan", {"request_id": "r1"})
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 1  # the first burst, at 16:59:55; none at 17:00:15
    assert delivery.events == []
    (scan,) = delivery.scans
    assert scan["trigger"] == trigger and scan["outcome"] == "error"
    assert "shift ended before the empty desk could be confirmed" in scan["error"]
    trail = AuditLog.for_state_dir(daemon.cfg.state_dir)
    (entry,) = [e for e in trail.recent(10) if e.kind == "scan"]
    trail.close()
    assert "shift ended before the empty desk could be confirmed" in entry.data["error"]


def test_a_failing_detector_costs_one_scan_not_the_daemon(write_config: Callable[..., Path], clock: FakeClock) -> None:
    calls = {"n": 0}

    def crashes_once(frame: Frame) -> tuple[list[Detection], list[Face]]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("simulated detector crash")
        return ScriptedVision().script(frame)

    daemon, _, delivery = make_daemon(write_config, clock, vision=ScriptedVision(crashes_once))
    assert daemon.run(max_scans=3, install_signals=False) == 0
    outcomes = [s["outcome"] for s in delivery.scans]
    assert outcomes == ["error", "clear", "clear"]  # the failed scan still has its audit record
    assert "simulated detector crash" in delivery.scans[0]["error"]


def test_a_failing_audit_write_does_not_stop_scanning(
    write_config: Callable[..., Path], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    daemon, _, delivery = make_daemon(write_config, clock)

    def disk_full(record: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(daemon.scanner, "on_record", disk_full)
    daemon.run(max_scans=2, install_signals=False)
    assert len(delivery.scans) == 2


def test_a_daemon_that_dies_while_the_camera_is_on_leaves_the_scan_in_the_audit_trail(
    write_config: Callable[..., Path], clock: FakeClock, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The daemon dies after the camera opened for a scan and before the scan's record was
    written: the watchdog kills it after a hung camera read, the OOM killer, a power cut. The
    trail must already hold the scan then: here the state directory is copied as the camera
    delivers its first frame (what a power cut leaves on the card, every commit being synced),
    and a daemon started again on that copy records the scan as cut off, which the worker sees
    in `deskwatch history`. The record used to be written only once the scan was over."""
    import shutil

    from deskwatch.cli import main

    copy = tmp_path / "after-the-power-cut"

    class PowerCut(FakeCamera):
        def capture(self) -> np.ndarray:
            if not copy.exists():
                shutil.copytree(tmp_path / "state", copy, ignore=shutil.ignore_patterns("*.sock"))
            return super().capture()

    daemon, cam, delivery = make_daemon(write_config, clock, camera=PowerCut(frames=bright_frames()))
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 1 and copy.exists() and delivery.scans[0]["outcome"] == "clear"

    config = write_config(f"state_dir: {copy}", name="restarted.yaml")
    capsys.readouterr()
    assert main(["history", "--config", str(config)]) == 0  # before the restart: the row as the daemon left it
    assert "scan (schedule)  STARTED   not finished" in capsys.readouterr().out
    restarted, cam2, delivery2 = make_daemon(write_config, clock, extra=f"state_dir: {copy}")
    restarted.audit.close()
    assert cam2.opens == 0
    trail = AuditLog.for_state_dir(str(copy))
    (scan,) = [e for e in trail.recent(10) if e.kind == "scan"]
    trail.close()
    assert scan.data["trigger"] == "schedule" and scan.data["outcome"] == "error"
    (sent,) = delivery2.scans  # and the collector hears of it
    assert sent["scan_id"] == scan.data["scan_id"] and sent["outcome"] == "error"
    assert sent["error"] == scan.data["error"] and sent["finished_at"] == sent["started_at"] == scan.at
    assert "the daemon stopped during this scan" in scan.data["error"]
    assert "camera was switched on" in scan.data["error"]
    assert main(["history", "--config", str(config)]) == 0
    shown = capsys.readouterr().out
    assert "scan (schedule)  ERROR" in shown and "the daemon stopped during this scan" in shown, shown


def test_a_scan_that_cannot_be_recorded_does_not_open_the_camera(
    write_config: Callable[..., Path], clock: FakeClock, caplog: pytest.LogCaptureFixture, fault_fs: FaultFs
) -> None:
    """The card under the audit trail turns read-only while the daemon runs (a failing SD card;
    a full disk likewise): every scan used to open the camera and then fail to write its record
    ('could not write scan ... to the audit trail'), for as long as the daemon ran. A scan the
    worker cannot see in the trail must not happen: the camera stays closed, the status says
    why, cmd/scan is refused, and once the trail can be written again scans go on."""
    from deskwatch_contract.intake import CommandRejected

    state = fault_fs.ext4_on_tmpfs() / "state"
    daemon, cam, delivery = make_daemon(write_config, clock, extra=f"state_dir: {state}")
    assert daemon.scanner.scan("schedule") is not None and cam.opens == 1
    fault_fs.force_read_only()
    for _ in range(3):
        assert daemon.scanner.scan("schedule") is None
    assert cam.opens == 1 and len(delivery.scans) == 1  # no camera, and nothing scanned to report
    assert any("cannot be recorded in the audit trail" in r.getMessage() for r in caplog.records)
    (reason,) = [r for r in daemon.reasons() if r.startswith("audit trail")]
    assert "no scans until it can" in reason and "disk I/O error" in reason, reason
    with pytest.raises(CommandRejected, match="audit trail cannot be written"):  # not answered ok, then dropped
        delivery.command("scan", {"request_id": "r1", "reason": "supervisor check"})
    daemon.audit.close()

    fault_fs.repair()  # what the technician does
    restarted, _, _ = make_daemon(write_config, clock, extra=f"state_dir: {state}", camera=cam)
    restarted.run(max_scans=1, install_signals=False)
    assert cam.opens == 2 and not [r for r in restarted.reasons() if r.startswith("audit trail")]
    trail = AuditLog.for_state_dir(restarted.cfg.state_dir)
    assert [e.data["outcome"] for e in trail.recent(10) if e.kind == "scan"] == ["clear", "clear"]
    trail.close()


def test_a_trail_damaged_while_the_daemon_runs_is_set_aside_and_scans_go_on_recorded(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    """The audit trail's file is damaged while the daemon runs (a failing SD card): the scan's
    row cannot be written, and the scan would not be taken until the service started again.
    As at the start, the damaged file is set aside (kept for inspection), what can be read of
    it is read back into a fresh trail, and the scan is taken and recorded there."""
    daemon, cam, delivery = make_daemon(write_config, clock)
    assert daemon.scanner.scan("schedule") is not None and cam.opens == 1
    path = Path(daemon.cfg.state_dir) / "audit.sqlite3"
    other = sqlite3.connect(str(path))  # what is committed goes into the file itself
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    with open(path, "r+b") as f:  # every page but the header's, as a failing card returns them
        size = f.seek(0, 2)
        f.seek(4096)
        f.write(np.random.default_rng(7).integers(0, 256, size - 4096, dtype=np.uint8).tobytes())
    clock.advance(60)
    assert daemon.scanner.scan("schedule") is not None and cam.opens == 2
    assert not [r for r in daemon.reasons() if r.startswith("audit trail")]
    daemon.audit.close()
    assert list(path.parent.glob("audit.sqlite3.corrupt-*"))  # kept for inspection until retention
    trail = AuditLog.for_state_dir(daemon.cfg.state_dir)
    (scan,) = [e for e in trail.recent(10) if e.kind == "scan"]  # the first one was on the damaged pages
    trail.close()
    assert scan.data["outcome"] == "clear" and scan.data["scan_id"] == delivery.scans[1]["scan_id"]


def test_an_on_demand_scan_is_refused_for_the_audit_trail_only_while_it_cannot_be_written(
    write_config: Callable[..., Path], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last scheduled scan found the trail unwritable (a full disk, since freed): cmd/scan
    was refused on that stale word until the next scheduled scan, up to hours with fixed times.
    Whether the request itself can be recorded now decides; then the scan is taken."""
    from deskwatch_contract.intake import CommandRejected

    daemon, cam, delivery = make_daemon(write_config, clock, extra="schedule: {interval_seconds: 3600}")
    daemon.scanner.unrecordable = "OperationalError: database or disk is full"  # the last scan's word
    delivery.command("scan", {"request_id": "r1", "reason": "supervisor check"})
    daemon.run(max_scans=1, install_signals=False)
    assert cam.opens == 1 and delivery.scans[0]["trigger"] == "command"

    daemon, cam, delivery = make_daemon(write_config, clock, extra="schedule: {interval_seconds: 3600}")

    def full(*args: Any) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(daemon.audit, "record_event", full)
    with pytest.raises(CommandRejected, match="audit trail cannot be written"):
        delivery.command("scan", {"request_id": "r2", "reason": "supervisor check"})
    assert daemon.requests.empty() and not daemon._remote_scans  # not queued, not counted
    daemon.audit.close()


def test_a_camera_that_fails_mid_burst_is_recorded_with_the_frames_it_took(
    write_config: Callable[..., Path], clock: FakeClock
) -> None:
    """The camera delivers two frames, then fails (a USB webcam unplugged): both were taken
    and analysed, and the scan's record - the worker's trail and `scan` to the collector, whose
    contract says `frames` counts the frames the camera took - said 0."""

    class Unplugged(FakeCamera):
        def capture(self) -> np.ndarray:
            if self.captures == 2:
                raise CameraError("the USB webcam was unplugged")
            return super().capture()

    vision = ScriptedVision()
    daemon, cam, delivery = make_daemon(
        write_config, clock, extra="camera: {burst_frames: 5}", camera=Unplugged(frames=bright_frames()), vision=vision
    )
    daemon.run(max_scans=1, install_signals=False)
    assert cam.captures == 2 and vision.analyzed == 2
    (scan,) = delivery.scans
    assert scan["outcome"] == "error" and "unplugged" in scan["error"] and scan["frames"] == 2
    trail = AuditLog.for_state_dir(daemon.cfg.state_dir)
    assert [e.data["frames"] for e in trail.recent(10) if e.kind == "scan"] == [2]
    trail.close()


def test_a_scan_the_outbox_cannot_queue_still_leaves_its_audit_record(
    write_config: Callable[..., Path], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The camera opened and a phone in use was found, but the outbox could not take the scan
    (a disk I/O error): the worker's audit trail still shows that scan, what it found, that
    nothing of it was sent and why; the daemon counts the failure and carries on."""
    import sqlite3

    phone = Detection("cell phone", 0.8, Box(0.45, 0.5, 0.55, 0.6), "in_hand")
    vision = ScriptedVision(lambda f: ([Detection("person", 0.9, Box(0.3, 0.2, 0.7, 1.0)), phone], []))
    daemon, cam, delivery = make_daemon(write_config, clock, vision=vision)
    queue = delivery.send_scan
    calls = {"n": 0}

    def fails_once(payload: Any, events: Any = ()) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return queue(payload, events)

    monkeypatch.setattr(delivery, "send_scan", fails_once)
    assert daemon.run(max_scans=2, install_signals=False) == 0
    assert cam.opens == 2 and len(delivery.scans) == 1
    assert daemon.scanner.stats.errors == 1
    trail = AuditLog.for_state_dir(daemon.cfg.state_dir)
    scans = sorted((e for e in trail.recent(10) if e.kind == "scan"), key=lambda e: e.at)
    trail.close()
    assert len(scans) == 2
    failed = scans[0].data
    assert failed["outcome"] == "error" and "disk I/O error" in failed["error"]
    assert [f["type"] for f in failed["findings"]] == ["phone_use"]
    assert "event_id" not in failed["findings"][0]  # never queued: nothing of it left the device
    assert scans[1].data["outcome"] == "violation"


class LookCounter:
    """The real vision stage, recording for each frame whether the phone stage was asked for."""

    def __init__(self, vision: Vision) -> None:
        self.vision, self.asked = vision, []

    def analyze(self, frame: Frame, *, look_closer: bool = True) -> Any:
        self.asked.append(look_closer)
        return self.vision.analyze(frame, look_closer=look_closer)

    @property
    def identity_enabled(self) -> bool:
        return bool(self.vision.identity_enabled)

    def model_hashes(self) -> dict[str, str]:
        return self.vision.model_hashes()


@pytest.mark.slow
def test_the_phone_stage_runs_only_while_a_phone_or_food_can_persist(
    write_config: Callable[..., Path], clock: FakeClock, int8_vision: Any, labelled_photos: list[Photo]
) -> None:
    """Real models on real photos, bursts of 5 camera-like frames (the photo with sensor noise):
    three frames without a phone in use or food at the mouth settle both rules, so the last two
    skip the phone stage; a phone in the hand keeps it on for the whole burst and is reported
    exactly as if every frame had been looked at."""
    photos = {p.file: p.image for p in labelled_photos}
    # every burst whole: a worker alone with nothing that persists would settle it after the
    # third frame (test_a_settled_burst_ends_early_...), leaving no fourth frame to skip the stage on
    extra = "camera: {burst_frames: 5}\npolicy: {end_settled_bursts: false}"
    for name, asked, found in (
        ("nophone_hand_01.jpg", [True, True, True, False, False], []),
        ("phone_hand_02.jpg", [True] * 5, ["phone_use"]),
    ):
        vision = LookCounter(int8_vision)
        camera = FakeCamera(frames=camera_burst(photos[name], 5))
        daemon, _, delivery = make_daemon(write_config, clock, extra=extra, camera=camera, vision=vision)
        daemon.run(max_scans=1, install_signals=False)
        assert vision.asked == asked, name
        events = [e for e, _ in delivery.events if e["type"] in ("phone_use", "eating")]
        assert [e["type"] for e in events] == found, name
        every = [int8_vision.analyze(f) for f in camera_burst(photos[name], 5)]
        hits = sum(any(d.behaviour == "in_hand" for d in a.detections) for a in every)
        if found:  # the same count as with the phone stage on every frame
            assert events[0]["detail"] == f"a phone in hand in {hits} of 5 frames"
        else:
            assert hits == 0


def test_a_pause_overrun_the_disk_cannot_queue_costs_that_report_not_the_daemon(
    write_config: Callable[..., Path], clock: FakeClock, caplog: pytest.LogCaptureFixture, fault_fs: FaultFs
) -> None:
    """The worker's pause overran while the card under the state directory was read-only (a
    failing SD card; a full one likewise): the overrun could not be numbered in the outbox, and
    the error raised out of the daemon's main loop ('internal error in run', exit 70). A scan
    that fails costs that scan; the overrun now costs that report (the outbox has counted the
    lost event, health reports it), with a line saying what is wrong with the disk."""
    state = fault_fs.ext4_on_tmpfs() / "state"
    cfg = load_config(write_config(f"state_dir: {state}"))
    daemon = Daemon(cfg, clock=clock, parts=Parts(camera=FakeCamera(frames=bright_frames()), vision=ScriptedVision()))
    daemon.policy.pause("fetch water", 1, clock.now())
    fault_fs.force_read_only()
    clock.advance(5 * 60)
    daemon._check_pause()  # the main loop's turn
    (said,) = [r for r in caplog.records if "pause_overrun" in r.getMessage() and "not queued" in r.getMessage()]
    assert "read-only" in said.getMessage() and said.exc_info is None, said.getMessage()
    assert daemon.delivery.outbox.stats()["lost"]["events"] == 1  # counted, and reported in health
    daemon.delivery.outbox.close()
    daemon.audit.close()


def test_a_retention_purge_the_full_disk_refused_is_tried_again_within_the_hour(
    write_config: Callable[..., Path], clock: FakeClock, caplog: pytest.LogCaptureFixture, fault_fs: FaultFs
) -> None:
    """The daily purge met a full card: deleting the audit rows past retention failed (a delete
    writes to SQLite's log first), with a traceback as the only word, and was not tried again
    for 24 hours, however soon the card had room again: the worker's scans and pauses stayed on
    the device a day past retention. It now says what is wrong and is tried again hourly.

    The trail keeps room for the purge on a full card (audit.reserve, 549e495), so the purge fails
    only when that room is gone too: here someone freeing space deleted the reserve files, and the
    card filled again after the last purge had emptied the trail's write-ahead log (a delete that
    fits into the log's room needs no new room: d927040 keeps it within a few dozen pages)."""
    state = fault_fs.tmpfs(8) / "state"
    cfg = load_config(write_config(f"state_dir: {state}"))
    daemon = Daemon(cfg, clock=clock, parts=Parts(camera=FakeCamera(frames=bright_frames()), vision=ScriptedVision()))
    old = clock.now() - timedelta(days=25)
    for i in range(50):
        daemon.audit.record_event("pause", old + timedelta(minutes=i), {"reason": "x" * 200, "minutes": 5})
    for reserve in state.glob("*.reserve"):
        reserve.unlink()
    daemon.audit._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # as the last purge leaves it
    fault_fs.fill()
    daemon._purge_evidence()  # the daily purge, on a full card
    (said,) = [r for r in caplog.records if "retention purge" in r.getMessage()]
    assert "is full" in said.getMessage() and said.exc_info is None, said.getMessage()
    fault_fs.free()
    clock.advance(3600)
    assert clock.monotonic() >= daemon._next_purge  # the main loop's test: purge again now
    daemon._purge_evidence()
    assert not [e for e in daemon.audit.recent(100) if e.kind == "pause"]
    daemon.delivery.outbox.close()
    daemon.audit.close()
