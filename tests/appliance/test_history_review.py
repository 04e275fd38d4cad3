"""'deskwatch history' tells the worker what became of each finding: the picture that left
the device (or why none did), whether it still waits for the broker, and the collector's
word on it, received over MQTT as a retained ``reviews`` list."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from deskwatch.app import Daemon, Parts, build_delivery
from deskwatch.audit import AuditLog
from deskwatch.camera.fake import FakeCamera
from deskwatch.cli import main
from deskwatch.config import load_config
from deskwatch.delivery.outbox import Outbox
from deskwatch.domain import Finding, PauseInfo, ScanRecord, SentFinding
from deskwatch_contract.reviews import ReviewedFinding, build
from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier
from tests.support.mosquitto import Broker, Collector, device_config

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
SENT, QUEUED, SILENT = (f"01a224ee-45fe-72be-b748-f6bbc5d6179{c}" for c in "abc")


def reviews_message(site: str, device: str, findings: list[ReviewedFinding]) -> bytes:
    return json.dumps(build(site, device, NOW, 20, findings)).encode()


def test_scanner_records_what_left_the_device_for_each_finding(write_config: Any, clock: Any) -> None:
    cfg = load_config(str(write_config()))
    delivery = RecordingDelivery()
    daemon = Daemon(cfg, clock=clock, parts=Parts(camera=FakeCamera(), vision=ScriptedVision(), delivery=delivery,
                                                  notifier=SilentNotifier()))  # fmt: skip
    record = ScanRecord("s-1", "pause", NOW, NOW, findings=[Finding("pause_overrun", 1.0, 0, detail="ran over")])
    daemon.scanner.publish(record, [], [])
    assert [s.event_id for s in record.sent] == [payload["event_id"] for payload, _ in delivery.events]
    assert record.sent[0].picture_bytes is None and record.sent[0].no_picture == "no_frame"
    daemon.audit.close()


def test_history_says_picture_delivery_review_and_contest(write_config: Any, clock: Any, capsys: Any,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    cfg_path = str(write_config())
    cfg = load_config(cfg_path)
    audit = AuditLog.for_state_dir(cfg.state_dir)
    findings = [Finding("phone_use", 0.81, 2, detail="phone at the ear"), Finding("eating", 0.7, 1),
                Finding("idle_input", 1.0, 0)]  # fmt: skip
    record = ScanRecord("s-1", "schedule", NOW, NOW, frames=5, findings=findings, persons=1)
    record.sent = [SentFinding(SENT, 18_240, None), SentFinding(QUEUED, 9_100, None), SentFinding(SILENT, None, "rule")]
    audit.record_scan(record)
    audit.close()
    outbox = Outbox(cfg.state_dir, max_bytes=10**6, max_messages=100, max_age_days=20)
    outbox.put_event({"event_id": QUEUED, "type": "eating"}, b"\xff\xd8" + b"x" * 9_098)  # still waiting for the broker
    outbox.close()
    # The collector's retained list arrives through the daemon (what MqttDelivery hands over).
    daemon = Daemon(cfg, clock=clock, parts=Parts(camera=FakeCamera(), vision=ScriptedVision(),
                                                  delivery=RecordingDelivery(), notifier=SilentNotifier()))  # fmt: skip
    with caplog.at_level(logging.WARNING):
        daemon.take_reviews(b'{"schema": "deskwatch.reviews/1"')
        daemon.take_reviews(reviews_message(cfg.device.site, "another-desk", []))
    assert "ignored a reviews message from the broker (32 bytes): payload is not valid JSON" in caplog.text
    assert "names another device" in caplog.text
    daemon.take_reviews(
        reviews_message(
            cfg.device.site,
            cfg.device.id,
            [
                ReviewedFinding(
                    SENT,
                    "dismissed",
                    True,
                    "kept",
                    "Object misread (e.g. a calculator as a phone)",
                    True,
                    "2026-11-30T11:00:00.000Z",
                    "2026-12-20T10:00:00.000Z",
                ),
            ],
        )
    )
    daemon.audit.close()
    assert main(["history", "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    sent = lines[lines.index(next(ln for ln in lines if "phone_use" in ln)) + 1]
    assert "picture sent (18 KB)" in sent
    assert "dismissed by your supervisor: Object misread" in sent and "(the detector was wrong)" in sent
    assert "you contested it" in sent and "keeps the picture until 2026-12-2" in sent
    queued = lines[lines.index(next(ln for ln in lines if "finding: eating" in ln)) + 1]
    assert "picture waiting to be sent (9 KB)" in queued and "waiting for the broker" in queued
    silent = lines[lines.index(next(ln for ln in lines if "finding: idle_input" in ln)) + 1]
    assert "no picture (this rule sends none)" in silent and "no word from the collector yet" in silent
    assert "Reviews as the collector reported them at" in out
    assert main(["history", "--config", cfg_path, "--json"]) == 0
    row = json.loads(capsys.readouterr().out.splitlines()[0])
    by_id = {f["event_id"]: f for f in row["findings"]}
    assert by_id[SENT]["collector"]["state"] == "dismissed" and by_id[QUEUED]["queued"] == ["event", "evidence"]


def test_a_pause_overrun_is_not_shown_as_a_scan(write_config: Any, clock: Any, capsys: Any) -> None:
    """A pause overrun is reported from the pause's times, through the scanner's record of a
    scan (trigger "pause"), with the camera shut: history showed it as "scan (pause)
    VIOLATION people 0", as if the camera had been switched on when the pause ended."""
    cfg_path = str(write_config())
    cfg = load_config(cfg_path)
    camera = FakeCamera()
    daemon = Daemon(cfg, clock=clock, parts=Parts(camera=camera, vision=ScriptedVision(),
                                                  delivery=RecordingDelivery(), notifier=SilentNotifier()))  # fmt: skip
    daemon.handle_command("pause", {"reason": "fetch water", "minutes": 1}, source="local")
    clock.advance(200)  # the minute, the grace, and nobody back
    daemon._check_pause()
    daemon.audit.close()
    assert camera.opens == 0
    assert main(["history", "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    assert "scan (pause)" not in out and "people 0" not in out, out
    assert "reported without a scan (the camera was not used): the pause ran over" in out
    assert "finding: pause_overrun" in out and 'pause_overrun: "fetch water" ran' in out


def test_history_shows_what_the_trail_holds_without_obeying_it(write_config: Any, capsys: Any) -> None:
    """The daemon's user writes the trail and history prints it on a technician's terminal (as
    root) or the worker's: a reason holding escape sequences (intake refuses them, the file's
    owner need not ask) reached the terminal as it was, and an entry that is not the object
    history expects (a JSON list) was an 'internal error' that hid every other entry."""
    import sqlite3

    from deskwatch.audit import audit_path

    cfg_path = str(write_config())
    cfg = load_config(cfg_path)
    log = AuditLog(audit_path(cfg.state_dir), keep_days=30)
    now = datetime.now(UTC)
    log.record_event("pause", now - timedelta(minutes=3), {"reason": "fetch water", "minutes": 5, "source": "local"})
    log.record_event("pause", now - timedelta(minutes=2), {"reason": "x\x1b]0;TITLE\x07\x1b[2J\x9b31m", "minutes": 5})
    log.close()
    db = sqlite3.connect(audit_path(cfg.state_dir))
    with db:
        db.execute(
            "INSERT INTO events(at, kind, detail) VALUES (?, 'pause', '[1]')", (now.strftime("%Y-%m-%dT%H:%M:%SZ"),)
        )
    db.close()
    assert main(["history", "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out, "a control character reached the terminal"
    assert 'pause: "x\\x1b]0;TITLE\\x07\\x1b[2J\\x9b31m" for 5 min' in out
    assert "pause: an entry not as the daemon writes it (damaged?): [1]" in out
    assert 'pause: "fetch water" for 5 min (local)' in out


def test_history_never_calls_sent_what_the_outbox_dropped(write_config: Any, capsys: Any) -> None:
    """The broker is away and the outbox's caps drop the oldest pictures, then the oldest
    events (as its retention purge and a full disk do): history said "picture sent (30 KB)" and
    "sent; no word from the collector yet" for them, taking "no longer queued" for "sent"."""
    cfg_path = str(write_config())
    cfg = load_config(cfg_path)
    ids = [f"01a224ee-45fe-72be-b748-f6bbc5d617a{n}" for n in range(4)]
    audit = AuditLog.for_state_dir(cfg.state_dir)
    for n, event_id in enumerate(ids):
        at = NOW + timedelta(minutes=n)
        record = ScanRecord(f"s-{n}", "schedule", at, at, frames=3, findings=[Finding("phone_use", 0.8, 0)])
        record.sent = [SentFinding(event_id, 30_000 if n < 2 else None, None if n < 2 else "rule")]
        audit.record_scan(record)
    audit.close()
    outbox = Outbox(cfg.state_dir, max_bytes=10**6, max_messages=3, max_age_days=20)
    for n, event_id in enumerate(ids):  # 4 events, 2 with pictures, in a queue of 3 messages
        outbox.put_event({"event_id": event_id, "type": "phone_use"}, b"\xff\xd8" + b"x" * 29_998 if n < 2 else None)
    outbox.close()
    assert main(["history", "--config", cfg_path]) == 0
    out = capsys.readouterr().out
    fate = dict(zip(ids, reversed([ln for ln in out.splitlines() if "->" in ln]), strict=True))  # newest first
    assert "picture sent" not in out, out
    assert "picture not sent: dropped while the network was down" in fate[ids[0]], out
    assert "never sent: the device's queue dropped it while the network was down" in fate[ids[0]], out
    assert "picture not sent" in fate[ids[1]] and "waiting for the broker" in fate[ids[1]], out
    assert "waiting for the broker" in fate[ids[3]], out
    assert "no word from the collector" not in out, out


def test_history_shows_times_in_the_workers_zone_named(
    write_config: Any, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The appliance's own zone is UTC (the image's TIMEZONE_DEFAULT); the worker in Berlin
    reads the working hours in Europe/Berlin time in the notice. History showed a scan at 08:30
    Berlin time as 07:30 - before a shift starting at 08:00 - and, in Berlin's zone, the two
    scans at 02:30 on the night the clocks go back as the same time."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    cfg_path = str(write_config("schedule: {timezone: Europe/Berlin}"))
    cfg = load_config(cfg_path)
    audit = AuditLog.for_state_dir(cfg.state_dir)
    for scan_id, at in (
        ("in-the-shift", datetime(2026, 11, 30, 7, 30, tzinfo=UTC)),
        ("summer-time", datetime(2026, 10, 25, 0, 30, tzinfo=UTC)),
        ("winter-time", datetime(2026, 10, 25, 1, 30, tzinfo=UTC)),
    ):
        audit.record_scan(ScanRecord(scan_id, "schedule", at, at, frames=3))
    audit.record_event(
        "pause", datetime(2026, 11, 30, 12, 0, tzinfo=UTC), {"reason": "lunch", "minutes": 30, "source": "local"}
    )
    audit.close()
    try:
        assert main(["history", "--config", cfg_path]) == 0
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    out = capsys.readouterr().out
    assert "times in Europe/Berlin" in out.splitlines()[0], out
    assert "2026-11-30 13:00:00 CET  pause" in out, out
    assert "2026-11-30 08:30:00 CET  scan (schedule)" in out
    assert "2026-10-25 02:30:00 CEST  scan" in out and "2026-10-25 02:30:00 CET  scan" in out


@pytest.mark.broker
def test_the_retained_reviews_list_reaches_the_device_and_is_not_answered(tmp_path: Path, mosquitto: Broker) -> None:
    cfg = device_config(tmp_path, mosquitto)
    prefix = f"deskwatch/v1/{cfg.device.site}/{cfg.device.id}/"
    central = Collector(mosquitto, prefix + "cmd/result")
    message = reviews_message(cfg.device.site, cfg.device.id, [ReviewedFinding(SENT, "acknowledged", False, "kept")])
    central.client.publish(prefix + "reviews", message, qos=1, retain=True).wait_for_publish(5)
    delivery = build_delivery(cfg, version="1.0", models={})
    got: list[bytes] = []
    delivery.on_reviews(got.append)
    delivery.start()
    try:
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got == [message]  # retained: it was there before the device connected
        time.sleep(0.5)
        assert central.on("cmd/result") == []  # a list, not a command: nothing is answered
    finally:
        delivery.stop(3)
        central.close()


def test_history_prints_a_pause_recorded_before_the_reason_rule(tmp_path: Path) -> None:
    """A pause an older daemon recorded (and saved) with a reason today's rule refuses: a lone
    surrogate made 'deskwatch history' fail with a traceback, at every run for as long as the
    trail keeps the entry (evidence.retention_days); a C1 control went to the terminal raw.
    Its own stdout, as the worker meets it: captured by pytest it is no terminal encoding."""
    state = tmp_path / "state"
    state.mkdir()
    reason = "lunch \ud800 \u009b31mRED"
    log = AuditLog(state / "audit.sqlite3")
    now = datetime.now(UTC)
    log.record_event("pause", now, {"reason": reason, "minutes": 30, "source": "mqtt"})
    log.record_event("pause_overrun", now, {"reason": reason, "minutes": 30, "over_seconds": 120})
    log.save_pause(PauseInfo(reason=reason, minutes=30, started_at=now, source="mqtt"))
    log.close()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"device: {{id: desk-a, site: acme, worker_id: w-1}}\nstate_dir: {state}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "deskwatch", "history", "--config", str(cfg)],
        capture_output=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONIOENCODING": "utf-8"},
    )
    out = proc.stdout.decode("utf-8")  # strict: what the terminal gets is UTF-8
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert 'pause: "lunch \\ud800 \\x9b31mRED" for 30 min (mqtt)' in out
    assert 'pause_overrun: "lunch \\ud800 \\x9b31mRED" ran 2 min over' in out
    assert 'Paused now: "lunch 31mRED"' in out
    assert "\x9b" not in out


def test_the_collectors_view_a_full_card_refused_is_saved_once_it_has_room(
    write_config: Any, clock: Any, caplog: pytest.LogCaptureFixture, fault_fs: Any
) -> None:
    """The collector's retained list arrived while the card was full: the commands thread logged
    a traceback and the view was gone (the broker sends the retained list again only at the next
    connection), so 'deskwatch history' showed the older view, a supervisor's dismissal missing,
    for as long as the connection held. It is now said in one line, held, and saved as soon as
    the card takes it (the daemon's loop asks at each turn)."""
    state = fault_fs.tmpfs(4) / "state"
    cfg = load_config(str(write_config(f"state_dir: {state}")))
    daemon = Daemon(cfg, clock=clock, parts=Parts(camera=FakeCamera(), vision=ScriptedVision(),
                                                  delivery=RecordingDelivery(), notifier=SilentNotifier()))  # fmt: skip
    daemon.take_reviews(reviews_message(cfg.device.site, cfg.device.id, []))
    dismissed = ReviewedFinding(SENT, "dismissed", True, "kept", "Object misread", False,
                                "2026-11-30T11:00:00.000Z", "2026-12-20T10:00:00.000Z")  # fmt: skip
    fault_fs.fill()
    try:
        with caplog.at_level(logging.INFO):
            daemon.take_reviews(reviews_message(cfg.device.site, cfg.device.id, [dismissed] * 400))
        assert not [r for r in caplog.records if r.exc_info]
        assert any("collector's view" in r.getMessage() and "full" in r.getMessage() for r in caplog.records)
    finally:
        fault_fs.free()
    daemon._write_held_records()  # a turn of the daemon's loop
    view, _ = daemon.audit.collector_view()
    assert view[SENT].state == "dismissed"
    daemon.audit.close()
