"""cmd/scan opens a camera in someone's home: only inside a shift, a few per hour, every
refusal answered on cmd/result and written to the worker's audit trail (fake clock)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from deskwatch.app import Daemon, Parts
from deskwatch.audit import AuditLog
from deskwatch.camera.fake import FakeCamera
from deskwatch.commands.history import format_entry
from deskwatch.config import load_config
from deskwatch_contract.intake import CommandIntake
from deskwatch_contract.jsonutil import dumps_bytes
from tests.support.common import FakeClock
from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier

SHIFTS = """
schedule:
  timezone: Europe/Berlin
  shifts: [{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}]
  mode: random
  scans_per_hour: 2
"""


def daemon_at(
    write_config: Callable[..., Path], when: datetime, extra: str = ""
) -> tuple[Daemon, FakeCamera, FakeClock]:
    cfg = load_config(write_config(SHIFTS + extra))
    clock = FakeClock(when)
    camera = FakeCamera(frames=[np.full((240, 320, 3), 128, np.uint8)])
    daemon = Daemon(
        cfg,
        clock=clock,
        parts=Parts(camera=camera, vision=ScriptedVision(), delivery=RecordingDelivery(), notifier=SilentNotifier()),
    )
    return daemon, camera, clock


def scan_request(n: int) -> bytes:
    return dumps_bytes({"schema": "deskwatch.cmd.scan/1", "request_id": f"r{n}", "reason": "supervisor check"})


def audit_kinds(daemon: Daemon) -> list[str]:
    return [e.kind for e in daemon.audit.recent(100)]  # type: ignore[attr-defined]


def test_five_scan_commands_on_a_sunday_open_no_camera(write_config: Callable[..., Path]) -> None:
    sunday = datetime(2026, 11, 29, 11, 0, tzinfo=UTC)  # 12:00 in Berlin, no shift
    daemon, camera, _ = daemon_at(write_config, sunday)
    intake = CommandIntake(daemon.handle_command)
    results = [intake.handle("scan", scan_request(n)) for n in range(5)]
    assert [r.ok for r in results] == [False] * 5
    assert all("outside the worker's shift" in str(r.error) for r in results)
    assert [r.request_id for r in results] == [f"r{n}" for n in range(5)]  # each answered on cmd/result
    assert daemon.requests.empty() and camera.opens == 0
    assert audit_kinds(daemon).count("remote_scan_refused") == 5
    entry = daemon.audit.recent(1)[0]  # type: ignore[attr-defined]
    assert (
        "REFUSED, camera stayed closed: outside the worker's shift" in format_entry(entry.kind, entry.at, entry.data)[0]
    )


def test_inside_a_shift_a_few_per_hour_then_refused_until_the_hour_has_passed(
    write_config: Callable[..., Path],
) -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
    daemon, camera, clock = daemon_at(write_config, monday)
    intake = CommandIntake(daemon.handle_command)
    first = [intake.handle("scan", scan_request(n)) for n in range(3)]
    assert all(r.ok for r in first)
    clock.advance(20 * 60)
    fourth = intake.handle("scan", scan_request(3))
    assert not fourth.ok and "rate limit: 3 on-demand scans per hour" in str(fourth.error)
    assert "next is allowed in 40 min" in str(fourth.error)
    clock.advance(41 * 60)
    assert intake.handle("scan", scan_request(4)).ok
    kinds = audit_kinds(daemon)
    assert kinds.count("remote_scan_accepted") == 4 and kinds.count("remote_scan_refused") == 1
    assert daemon.requests.qsize() == 4
    assert camera.opens == 0  # accepting queues a scan; the loop takes it


def test_an_accepted_request_whose_shift_ended_does_not_open_the_camera(write_config: Callable[..., Path]) -> None:
    before_end = datetime(2026, 11, 30, 15, 59, 50, tzinfo=UTC)  # 16:59:50 in Berlin
    daemon, camera, clock = daemon_at(write_config, before_end)
    assert CommandIntake(daemon.handle_command).handle("scan", scan_request(1)).ok
    clock.advance(60)  # the loop gets to it after 17:00
    original = daemon._audit_event

    def stop_after_refusal(kind: str, at: datetime, detail: dict[str, object]) -> None:
        original(kind, at, detail)
        if kind == "remote_scan_refused":
            daemon.request_stop()

    daemon._audit_event = stop_after_refusal  # type: ignore[method-assign]
    daemon.run(install_signals=False)
    assert camera.opens == 0
    trail = AuditLog.for_state_dir(daemon.cfg.state_dir)
    assert [e.kind for e in trail.recent(10) if e.kind.startswith("remote")] == [
        "remote_scan_refused",
        "remote_scan_accepted",
    ]


def test_a_scan_request_while_the_worker_is_paused_is_refused_and_costs_no_allowance(
    write_config: Callable[..., Path],
) -> None:
    """The sender is told the worker is paused and until when, instead of an ok for a scan
    that never happens; the refusal is in the worker's audit trail, and the hour's
    on-demand scans are all still there once the worker is back."""
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
    daemon, camera, clock = daemon_at(write_config, monday)
    intake = CommandIntake(daemon.handle_command)
    daemon.handle_command("pause", {"reason": "lunch", "minutes": 30}, source="local")
    refused = [intake.handle("scan", scan_request(n)) for n in range(4)]
    assert [r.ok for r in refused] == [False] * 4
    assert all(r.error == "the worker is paused (until 2026-11-30T09:30:00.000Z)" for r in refused)
    assert daemon.requests.empty() and camera.opens == 0
    entry = daemon.audit.recent(1)[0]  # type: ignore[attr-defined]
    assert entry.kind == "remote_scan_refused" and entry.data["why"] == refused[0].error
    assert "REFUSED, camera stayed closed: the worker is paused" in format_entry(entry.kind, entry.at, entry.data)[0]
    daemon.handle_command("resume", {}, source="local")
    clock.advance(60)
    assert all(intake.handle("scan", scan_request(n)).ok for n in range(10, 13))  # the full allowance


def test_an_accepted_request_is_refused_in_the_audit_trail_when_the_worker_paused_before_it_ran(
    write_config: Callable[..., Path],
) -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    daemon, camera, clock = daemon_at(write_config, monday)
    assert CommandIntake(daemon.handle_command).handle("scan", scan_request(1)).ok
    daemon.policy.pause("lunch", 30, clock.now(), source="local")  # before the loop takes the scan
    plain_wait = clock.wait

    def wait(event: threading.Event, seconds: float) -> bool:
        daemon.request_stop()  # the queued request was handled before the loop's first wait
        return plain_wait(event, seconds)

    clock.wait = wait  # type: ignore[method-assign]
    daemon.run(install_signals=False)
    assert camera.opens == 0
    trail = AuditLog.for_state_dir(daemon.cfg.state_dir)
    refused = [e for e in trail.recent(10) if e.kind == "remote_scan_refused"]
    assert len(refused) == 1 and refused[0].data["why"] == "paused before it ran"


def test_zero_disables_remote_scans(write_config: Callable[..., Path]) -> None:
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    daemon, _, _ = daemon_at(write_config, monday, extra="  remote_scans_per_hour: 0\n")
    result = CommandIntake(daemon.handle_command).handle("scan", scan_request(1))
    assert not result.ok and "disabled on this device" in str(result.error)


def pause_request(n: int) -> bytes:
    return dumps_bytes({"schema": "deskwatch.cmd.pause/1", "request_id": f"p{n}", "reason": "water", "minutes": 5})


def test_pauses_and_resumes_are_bounded_per_minute_before_the_audit_trail(write_config: Callable[..., Path]) -> None:
    """cmd/pause and cmd/resume are the companion's to publish, from the worker's PC: a loop there
    wrote 10,000 audit rows in 30 s until the SD card was full. A person needs a few a minute."""
    monday = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
    daemon, _, clock = daemon_at(write_config, monday)
    intake = CommandIntake(daemon.handle_command)
    resume = dumps_bytes({"schema": "deskwatch.cmd.resume/1", "request_id": "r"})
    results = [intake.handle(*(("pause", pause_request(n)) if n % 2 == 0 else ("resume", resume))) for n in range(500)]
    assert sum(r.ok for r in results) == 10  # deskwatch.app.PAUSE_CHANGES_PER_MINUTE
    refused = results[10]
    assert not refused.ok and "at most 10 a minute; try again in 60 s" in str(refused.error)
    kinds = audit_kinds(daemon)
    assert kinds.count("pause") + kinds.count("resume") == 10
    clock.advance(61)
    assert intake.handle("pause", pause_request(1000)).ok  # a minute later the worker can pause again
    assert daemon.policy.paused is not None
