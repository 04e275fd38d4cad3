"""The local control socket and the pause/resume/history/policy commands."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from deskwatch.audit import AuditLog
from deskwatch.cli import main
from deskwatch.commands.pause import describe as pause_describe
from deskwatch.config import load_config
from deskwatch.domain import CheckOutcome, Finding, ScanRecord
from deskwatch.policy.engine import Policy
from deskwatch.system.control import (
    ControlRejected,
    ControlServer,
    ControlUnavailable,
    control_socket_path,
    pause_status,
    send_control,
)


class Daemonish:
    """The daemon's side of the socket, as app.Daemon wires it."""

    def __init__(self, cfg, audit=None):
        self.policy = Policy(cfg.policy, audit=audit)
        self.now = datetime.now(UTC)

    def handle(self, kind, body):
        if kind == "pause":
            self.policy.pause(body["reason"], body["minutes"], self.now)
        elif kind == "resume":
            self.policy.resume(self.now)

    def status(self):
        return pause_status(self.policy, self.now)


@pytest.fixture
def daemon(write_config):
    cfg = load_config(str(write_config()))
    d = Daemonish(cfg)
    server = ControlServer(control_socket_path(cfg.state_dir), d.handle, status=d.status)
    server.start()
    yield d, server, cfg
    server.stop()


def test_pause_and_resume_over_the_socket(daemon):
    d, server, _cfg = daemon
    mode = stat.S_IMODE(os.stat(server.path).st_mode)
    assert mode & 0o007 == 0  # nobody else on the machine
    reply = send_control(server.path, "pause", reason="fetch water", minutes=5)
    assert reply["status"]["paused"] is True and reply["status"]["reason"] == "fetch water"
    assert d.policy.pre_scan(d.now) == "paused"
    reply = send_control(server.path, "resume")
    assert reply["was_paused"] is True and reply["status"] == {"paused": False}
    assert send_control(server.path, "resume")["was_paused"] is False


def test_bad_requests_are_answered_not_fatal(daemon):
    _, server, _ = daemon
    with pytest.raises(ControlRejected, match="from 1 to 120"):
        send_control(server.path, "pause", reason="x", minutes=500)
    with pytest.raises(ControlRejected, match="unknown command"):
        send_control(server.path, "reboot")
    assert server.respond(b"not json") == {"ok": False, "error": "bad request: payload is not valid JSON"}
    assert server.respond(b'{"command": "pause"}')["ok"] is False
    assert send_control(server.path, "status")["status"] == {"paused": False}  # still serving


def test_cli_pause_and_resume_talk_to_the_daemon(daemon, capsys):
    d, _server, cfg = daemon
    path = os.path.join(os.path.dirname(cfg.state_dir), "config.yaml")
    assert main(["pause", "--config", path, "--reason", "fetch water", "--minutes", "5"]) == 0
    out = capsys.readouterr().out
    assert 'Paused: "fetch water" for 5 min' in out
    assert d.policy.paused is not None
    assert main(["resume", "--config", path]) == 0
    assert "Resumed" in capsys.readouterr().out
    assert d.policy.paused is None


def test_cli_refuses_bad_pause_before_contacting_the_daemon(write_config, capsys):
    path = str(write_config())
    assert main(["pause", "--config", path, "--reason", "x" * 200, "--minutes", "5"]) == 2
    assert "at most 120" in capsys.readouterr().err


def test_cli_says_plainly_when_the_daemon_is_not_running(write_config, capsys):
    path = str(write_config())
    assert main(["pause", "--config", path, "--reason", "fetch water", "--minutes", "5"]) == 69
    err = capsys.readouterr().err
    assert "daemon is not running" in err and "Traceback" not in err
    assert main(["resume", "--config", path]) == 69


def test_stale_socket_file_is_replaced(write_config):
    cfg = load_config(str(write_config()))
    path = control_socket_path(cfg.state_dir)
    os.makedirs(path.parent, exist_ok=True)
    import socket

    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # a socket file nobody listens on, as after a crash
    with pytest.raises(ControlUnavailable):
        send_control(path, "status")
    d = Daemonish(cfg)
    with ControlServer(path, d.handle, status=d.status):
        assert send_control(path, "status")["ok"] is True
    assert not path.exists()


def test_history_shows_scans_findings_and_pauses(write_config, capsys):
    cfg_path = str(write_config())
    cfg = load_config(cfg_path)
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    audit = AuditLog.for_state_dir(cfg.state_dir)
    policy = Policy(cfg.policy, audit=audit)
    policy.pause("fetch water", 5, now)
    policy.resume(now.replace(minute=3))
    audit.record_scan(
        ScanRecord(
            "s-1",
            "schedule",
            now.replace(minute=10),
            now.replace(minute=10),
            frames=5,
            checks=[CheckOutcome("phone_use", "violation", "phone held in 5/5 frames")],
            findings=[Finding("phone_use", 0.81, 2, detail="a phone held in 5 of 5 frames")],
            persons=1,
            bystanders=2,
        )
    )
    audit.record_scan(ScanRecord("s-2", "schedule", now.replace(minute=20), frames=5, persons=1))
    audit.close()
    assert main(["history", "--config", cfg_path, "--checks"]) == 0
    out = capsys.readouterr().out
    assert "VIOLATION" in out and "phone_use (confidence 0.81)" in out and "CLEAR" in out
    assert 'pause: "fetch water" for 5 min' in out and "resume" in out
    assert "phone held in 5/5 frames" in out  # --checks
    lines = [ln for ln in out.splitlines() if ln[:4].isdigit()]
    assert "CLEAR" in lines[0]  # newest first
    assert main(["history", "--config", cfg_path, "--json", "-n", "2"]) == 0
    rows = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [r["kind"] for r in rows] == ["scan", "scan"]
    assert "jpeg" not in json.dumps(rows).lower()


def test_history_shows_a_running_pause(write_config, capsys):
    cfg_path = str(write_config())
    cfg = load_config(cfg_path)
    audit = AuditLog.for_state_dir(cfg.state_dir)
    Policy(cfg.policy, audit=audit).pause("doctor's call", 30, datetime.now(UTC))
    audit.close()
    assert main(["history", "--config", cfg_path]) == 0
    assert 'Paused now: "doctor\'s call"' in capsys.readouterr().out


def test_history_before_any_scan(write_config, capsys):
    assert main(["history", "--config", str(write_config())]) == 0
    assert "No scans recorded yet" in capsys.readouterr().out


def test_control_socket_wired_to_the_real_daemon(write_config, clock, capsys):
    """As app.Daemon wires it: handle_command for pause/resume, pause_status for status."""
    from deskwatch.app import Daemon, Parts
    from deskwatch.camera.fake import FakeCamera
    from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier

    cfg_path = write_config()
    cfg = load_config(str(cfg_path))
    daemon = Daemon(
        cfg,
        clock=clock,
        parts=Parts(
            camera=FakeCamera(), vision=ScriptedVision(), delivery=RecordingDelivery(), notifier=SilentNotifier()
        ),
    )
    server = ControlServer(
        control_socket_path(cfg.state_dir),
        daemon.handle_command,
        status=lambda: pause_status(daemon.policy, clock.now()),
    )
    with server:
        assert main(["pause", "--config", str(cfg_path), "--reason", "fetch water", "--minutes", "5"]) == 0
        assert daemon.policy.pre_scan(clock.now()) == "paused"
        with pytest.raises(ControlRejected, match="from 1 to"):
            send_control(server.path, "pause", reason="x", minutes=0)
        with pytest.raises(ControlRejected):
            send_control(server.path, "pause", minutes=5)  # no reason
        clock.advance(120)
        assert send_control(server.path, "status")["status"]["remaining_seconds"] == 180
        assert main(["resume", "--config", str(cfg_path)]) == 0
        assert daemon.policy.pre_scan(clock.now()) is None
    kinds = [e.kind for e in daemon.audit.recent(10)]
    assert kinds[:2] == ["resume", "pause"]
    daemon.audit.close()


@pytest.mark.parametrize(
    ("request_line", "missing"),
    [
        (b'{"command": "pause", "minutes": 5}', "reason"),
        (b'{"command": "pause", "reason": "fetch water"}', "minutes"),
    ],
)
def test_a_request_without_a_field_is_told_which_one(write_config, clock, request_line, missing):
    """The answer names the missing field, not a bare "'reason'" (str of the KeyError)."""
    from deskwatch.app import Daemon, Parts
    from deskwatch.camera.fake import FakeCamera
    from tests.support.fakes import RecordingDelivery, ScriptedVision, SilentNotifier

    cfg = load_config(str(write_config()))
    daemon = Daemon(
        cfg,
        clock=clock,
        parts=Parts(
            camera=FakeCamera(), vision=ScriptedVision(), delivery=RecordingDelivery(), notifier=SilentNotifier()
        ),
    )
    server = ControlServer(control_socket_path(cfg.state_dir), daemon.handle_command, status=lambda: {})
    try:
        assert server.respond(request_line) == {"ok": False, "error": f"missing field '{missing}'"}
        assert daemon.policy.pre_scan(clock.now()) is None  # not paused
    finally:
        daemon.audit.close()


def test_history_and_pause_show_the_desks_time_zone_not_the_devices(write_config, capsys, monkeypatch):
    """The appliance's own zone is UTC (the image's default); the worker reads times in the
    desk's zone, schedule.timezone, with its name: a 09:00 scan in New York is not 14:00."""
    import time

    monkeypatch.setenv("TZ", "Etc/UTC")
    time.tzset()
    try:
        cfg_path = str(write_config("schedule: {timezone: America/New_York}"))
        cfg = load_config(cfg_path)
        audit = AuditLog.for_state_dir(cfg.state_dir)
        scanned = datetime(2026, 11, 30, 14, 0, tzinfo=UTC)  # 09:00 EST
        audit.record_scan(ScanRecord("s-1", "schedule", scanned, scanned, frames=5, persons=1))
        now = datetime.now(UTC)
        Policy(cfg.policy, audit=audit).pause("doctor's call", 30, now)
        audit.close()
        assert main(["history", "--config", cfg_path]) == 0
        out = capsys.readouterr().out
        ends = (now + timedelta(minutes=30)).astimezone(ZoneInfo("America/New_York")).strftime("%H:%M %Z")
        assert f'Paused now: "doctor\'s call" until {ends}' in out
        assert "2026-11-30 09:00:00 EST  scan (schedule)" in out
        assert "times in America/New_York" in out
        assert "14:00:00" not in out
        status = {"paused": True, "reason": "x", "minutes": 5, "ends_at": "2026-11-30T14:05:00.000Z"}
        assert pause_describe(status, ZoneInfo("America/New_York")) == 'Paused: "x" for 5 min, until 09:05 EST.'
    finally:
        monkeypatch.undo()
        time.tzset()
