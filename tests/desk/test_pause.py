"""deskwatch-desk pause/resume against a real Mosquitto and a stand-in appliance."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from deskwatch_desk.cli import main
from deskwatch_desk.config import load_desk_config
from deskwatch_desk.messages import pause_request, resume_request
from deskwatch_desk.requests import Queued, RequestQueue, flush_queue
from deskwatch_desk.session import DeskSession, Note
from tests.support.common import FakeClock
from tests.support.mosquitto import Broker, free_port

if TYPE_CHECKING:
    from tests.support.desk import FakeAppliance
    from tests.support.faultfs import FaultFs

pytestmark = pytest.mark.broker


def desk(config: Path, state: Path, *args: str) -> int:
    return main([args[0], "--config", str(config), "--state-dir", str(state), *args[1:]])


def test_pause_accepted_prints_the_result_and_exits_0(
    mosquitto: Broker,
    fake_appliance: FakeAppliance,
    desk_config: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    cfg = desk_config(mosquitto)
    code = desk(cfg, tmp_path, "pause", "--reason", "  fetch   water ", "--minutes", "5", "--json", "--wait", "5")
    out = capsys.readouterr().out
    assert code == 0, out
    assert 'the appliance accepted the pause "  fetch   water " for 5 min' in out
    kind, body = fake_appliance.received[0]
    assert kind == "pause" and body["minutes"] == 5 and body["schema"] == "deskwatch.cmd.pause/1"
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"request_id": body["request_id"], "command": "pause", "ok": True, "error": None}
    assert desk(cfg, tmp_path, "resume", "--wait", "5") == 0
    assert fake_appliance.received[1][0] == "resume"
    assert not (tmp_path / "queue.json").exists()


def test_refused_pause_exits_1_with_the_appliance_reason(
    mosquitto: Broker,
    fake_appliance: FakeAppliance,
    desk_config: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake_appliance.answer = "refuse"
    assert desk(desk_config(mosquitto), tmp_path, "pause", "--reason", "stretch", "--minutes", "3", "--wait", "5") == 1
    assert (
        'refused the pause "stretch" for 3 min: pauses are not allowed during the team meeting'
        in capsys.readouterr().out
    )


def test_malformed_results_are_ignored_with_a_log_line(
    mosquitto: Broker,
    fake_appliance: FakeAppliance,
    desk_config: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_appliance.answer = "malformed"
    with caplog.at_level(logging.WARNING, logger="deskwatch_desk.messages"):
        code = desk(desk_config(mosquitto), tmp_path, "pause", "--reason", "bathroom", "--minutes", "2", "--wait", "2")
    assert code == 69
    assert "did not answer within 2 s" in capsys.readouterr().err
    logged = [r.getMessage() for r in caplog.records]
    assert any("ignored a malformed cmd/result" in m and "ok must be true or false" in m for m in logged), logged
    assert any("ignored a malformed cmd/result" in m and "not UTF-8" in m for m in logged), logged


def test_invalid_requests_are_usage_errors_before_any_network(
    tmp_path: Path, desk_config: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = desk_config(None, port=free_port())
    assert desk(cfg, tmp_path, "pause", "--reason", "water", "--minutes", "500") == 2
    assert "minutes must be from 1 to 120, got 500" in capsys.readouterr().err
    assert desk(cfg, tmp_path, "pause", "--reason", "   ", "--minutes", "5") == 2
    assert 'reason must be non-empty text, e.g. "fetch water"' in capsys.readouterr().err
    assert not (tmp_path / "queue.json").exists()


def test_config_errors_exit_78(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("device: {id: 'has spaces', site: acme}\nmqtt: {port: 0}\ncamera: {backend: picamera2}\n")
    with pytest.raises(SystemExit) as exc:
        desk(bad, tmp_path, "resume")
    assert exc.value.code == 78
    err = capsys.readouterr().err
    assert "device.id" in err and "mqtt.port" in err
    # its own small file: an appliance section is named as unknown, with what it knows
    assert "camera: unknown key" in err and "known: collector, device, mqtt" in err


def test_broker_away_queues_the_request_and_run_sends_it_later(
    make_broker: Any,
    make_fake_appliance: Any,
    desk_config: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    broker = make_broker(start=False)
    cfg = desk_config(broker)
    assert desk(cfg, tmp_path, "pause", "--reason", "fetch water", "--minutes", "5", "--wait", "1") == 69
    err = capsys.readouterr().err
    assert "unreachable" in err and "queued" in err and str(tmp_path / "queue.json") in err
    (queued,) = RequestQueue(tmp_path).take()
    assert queued.kind == "pause" and queued.payload["reason"] == "fetch water"
    RequestQueue(tmp_path).put(queued.kind, queued.payload, queued.queued_at - timedelta(minutes=2))
    assert os.stat(tmp_path / "queue.json").st_mode & 0o077 == 0

    broker.start()
    appliance = make_fake_appliance(broker)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deskwatch_desk.cli",
            "run",
            "--config",
            str(cfg),
            "--state-dir",
            str(tmp_path),
            "--idle-source",
            "fixed:3",
            "--sample",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        received = appliance.wait_received(2, timeout=15)
        kinds = [k for k, _ in received]
        assert "pause" in kinds and "activity" in kinds, received
        pause = next(b for k, b in received if k == "pause")
        assert pause["request_id"] == queued.payload["request_id"]
        assert pause["minutes"] == 3  # 5 declared, 2 of them passed while the broker was away
    finally:
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=10)
    assert proc.returncode == 0, log
    assert "sent the queued pause request" in log and "accepted" in log
    assert not (tmp_path / "queue.json").exists()


def next_outcome(session: DeskSession, timeout: float = 15.0) -> Note:
    """The next outcome the window would show (other notes are skipped)."""
    import queue

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            note = session.inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        if note.kind == "outcome":
            return note
    raise AssertionError("no outcome reached the window")


def test_window_counts_down_the_minutes_the_appliance_accepted_for_a_queued_pause(
    mosquitto: Broker, fake_appliance: FakeAppliance, desk_config: Any, tmp_path: Path
) -> None:
    """A pause for "fetch water", 10 min, queued 7 minutes ago goes out with the 3 minutes left; the
    window must count down those 3, not 10, or the worker comes back after the appliance's pause ended."""
    RequestQueue(tmp_path).put(
        "pause", pause_request("fetch water", 10), datetime.now(UTC) - timedelta(minutes=7, seconds=10)
    )
    clock = FakeClock()
    session = DeskSession(
        load_desk_config(desk_config(mosquitto)), tmp_path, monotonic=clock.monotonic, request_timeout=5
    )
    session.start()
    try:
        kind, outcome, at = next_outcome(session).value
    finally:
        session.close()
    (sent,) = [body for k, body in fake_appliance.received if k == "pause"]
    assert sent["minutes"] == 3
    line = session.apply_outcome(kind, outcome, at)
    assert line.startswith('The appliance accepted your pause "fetch water" for 3 min'), line
    assert "10 min" in line  # what the worker asked for, and when, so the 3 is no surprise
    assert session.pause_text(clock.monotonic()) == 'Paused: "fetch water", 3:00 left.'
    clock.advance(3 * 60)
    assert session.pause_text(clock.monotonic()) == 'Pause ended: "fetch water" (3 min) is over; checks are back on.'


def test_a_queued_pause_is_never_sent_longer_than_asked_after_the_clock_was_set_back() -> None:
    """NTP steps back a clock that ran ahead: the queue's wall-clock time is then in the future."""
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    payload = pause_request("fetch water", 10)
    slightly = Queued("pause", payload, now + timedelta(seconds=30))  # a small step: sent, as asked
    assert slightly.why_not_sent(now) is None
    assert slightly.payload_at(now)["minutes"] == 10
    for ahead in (50, 180):  # how much of the pause is left cannot be told: not sent, and said why
        stepped = Queued("pause", payload, now + timedelta(minutes=ahead))
        assert stepped.payload_at(now) is None
        why = stepped.why_not_sent(now)
        assert why is not None and "clock was set back" in why and "ask again" in why.lower(), why


@pytest.mark.parametrize("ahead", [50, 180])
def test_run_drops_a_pause_queued_before_the_clock_was_set_back_and_keeps_reporting(
    mosquitto: Broker, fake_appliance: FakeAppliance, desk_config: Any, tmp_path: Path, ahead: int
) -> None:
    RequestQueue(tmp_path).put("pause", pause_request("fetch water", 10), datetime.now(UTC) + timedelta(minutes=ahead))
    argv = ["run", "--config", str(desk_config(mosquitto)), "--state-dir", str(tmp_path), "--idle-source", "fixed:3"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "deskwatch_desk.cli", *argv, "--sample", "0.2"], stderr=subprocess.PIPE, text=True
    )
    try:
        fake_appliance.wait_received(1, timeout=15)
        deadline = time.monotonic() + 10
        while (tmp_path / "queue.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # a pause sent now would have arrived
    finally:
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=10)
    assert proc.returncode == 0, log
    assert [k for k, _ in fake_appliance.received if k != "activity"] == [], fake_appliance.received
    assert "activity" in [k for k, _ in fake_appliance.received]
    assert "dropped a queued pause request" in log and "clock" in log, log
    assert not (tmp_path / "queue.json").exists()


def test_window_skips_a_queued_request_it_cannot_use_and_sends_the_others(
    mosquitto: Broker, fake_appliance: FakeAppliance, desk_config: Any, tmp_path: Path
) -> None:
    """One unusable entry (an older version's, a hand-edited file) never stops the queue: the
    others are sent, the worker is told, and a request queued later is still sent."""
    now = datetime.now(UTC)
    bad = {"schema": "deskwatch.cmd.pause/1", "request_id": "bad-1", "reason": "   ", "minutes": 5}
    entries = [
        {"kind": "pause", "payload": bad, "queued_at": now.isoformat()},
        {"kind": "resume", "payload": resume_request(), "queued_at": now.isoformat()},
    ]
    (tmp_path / "queue.json").write_text(json.dumps(entries))
    session = DeskSession(load_desk_config(desk_config(mosquitto)), tmp_path, request_timeout=5)
    session.start()
    try:
        kind, outcome, at = next_outcome(session).value
        assert kind == "pause" and outcome.state == "dropped"
        line = session.apply_outcome(kind, outcome, at)
        assert line.startswith("Your queued pause") and "was not sent" in line and "reason" in line, line
        kind, outcome, at = next_outcome(session).value
        assert (kind, outcome.state) == ("resume", "accepted")
        later = resume_request()
        RequestQueue(tmp_path).put("resume", later, datetime.now(UTC))
        kind, outcome, at = next_outcome(session).value
        assert (kind, outcome.state, outcome.payload["request_id"]) == ("resume", "accepted", later["request_id"])
    finally:
        session.close()
    assert [k for k, _ in fake_appliance.received] == ["resume", "resume"]


def test_broker_away_and_a_full_disk_says_the_request_is_lost_without_a_traceback(
    make_broker: Any, desk_config: Any, fault_fs: FaultFs, capsys: pytest.CaptureFixture[str]
) -> None:
    state = fault_fs.tmpfs(1) / "state"
    state.mkdir()
    fault_fs.fill()
    cfg = desk_config(make_broker(start=False))
    assert desk(cfg, state, "pause", "--reason", "fetch water", "--minutes", "5", "--wait", "1") == 69
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert 'your pause "fetch water" for 5 min was not sent, and could not be queued' in err, err
    assert str(state / "queue.json") in err and "No space left on device" in err, err
    assert "ask again" in err, err
    assert not (state / "queue.json").exists() and not list(state.glob(".queue-*"))  # no half-written file


class NeverPublished:
    """A link that is connected but whose publish never gets through (the broker just went)."""

    def publish(self, suffix: str, payload: dict[str, Any], *, wait: float | None = None) -> bool:
        return False


class FullQueue(RequestQueue):
    """take() works; putting back fails as on a full disk."""

    def put(self, kind: str, payload: dict[str, Any], now: datetime) -> None:
        raise OSError(28, "No space left on device", str(self.path))


def test_a_queued_request_that_cannot_be_put_back_is_reported_not_raised(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    RequestQueue(tmp_path).put("resume", resume_request(), now)
    ((item, outcome),) = flush_queue(FullQueue(tmp_path), NeverPublished(), None, now, timeout=0.1)
    assert item.kind == "resume" and outcome.state == "failed"
    assert outcome.problem is not None
    assert "could not be queued" in outcome.problem and "No space left on device" in outcome.problem


def test_queue_keeps_only_the_latest_intent_and_drops_expired_pauses(tmp_path: Path) -> None:
    q = RequestQueue(tmp_path)
    now = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    q.put("pause", {"schema": "deskwatch.cmd.pause/1", "request_id": "a", "reason": "water", "minutes": 5}, now)
    q.put("resume", {"schema": "deskwatch.cmd.resume/1", "request_id": "b"}, now)
    assert [item.kind for item in q.take()] == ["resume"]
    pause = Queued("pause", {"request_id": "c", "reason": "water", "minutes": 5}, now)
    assert pause.payload_at(now + timedelta(minutes=4, seconds=1))["minutes"] == 1
    assert pause.payload_at(now + timedelta(minutes=5)) is None
    (tmp_path / "queue.json").write_text("{not json")
    assert q.take() == []


# The per-desk block provisioning would generate for a companion (pattern ACLs cannot
# derive "desk-a" from "desk-a-companion").
COMPANION_ACL = """\
user desk-a
topic read deskwatch/v1/acme/desk-a/cmd/#
topic read deskwatch/v1/acme/desk-a/activity
topic write deskwatch/v1/acme/desk-a/#

user desk-a-companion
topic write deskwatch/v1/acme/desk-a/activity
topic write deskwatch/v1/acme/desk-a/cmd/pause
topic write deskwatch/v1/acme/desk-a/cmd/resume
topic read deskwatch/v1/acme/desk-a/cmd/result
topic read deskwatch/v1/acme/desk-a/scan
topic read deskwatch/v1/acme/desk-a/event
"""


def test_own_credentials_over_tls_with_a_companion_acl(
    make_broker: Any, make_fake_appliance: Any, desk_config: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broker = make_broker(tls=True, passwords={"desk-a": "secret-a", "desk-a-companion": "secret-c"}, acl=COMPANION_ACL)
    appliance = make_fake_appliance(broker, username="desk-a", password="secret-a")
    good = desk_config(broker, username="desk-a-companion", password="secret-c")
    assert desk(good, tmp_path, "pause", "--reason", "fetch water", "--minutes", "5", "--wait", "5") == 0
    assert appliance.received[-1][0] == "pause"

    bad = desk_config(broker, device_id="desk-a", username="desk-a-companion", password="wrong")
    assert desk(bad, tmp_path, "resume", "--wait", "2") == 69
    err = capsys.readouterr().err
    assert "refused this device" in err and "mqtt.password_file" in err and "queued" in err


def test_plain_mqtt_to_a_remote_broker_is_refused_as_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "remote.yaml"
    cfg.write_text("device: {id: desk-a, site: acme}\nmqtt: {host: 192.0.2.10, port: 1883, tls: {enabled: false}}\n")
    with pytest.raises(SystemExit) as exc:
        desk(cfg, tmp_path, "resume")
    assert exc.value.code == 78
    assert "mqtt.tls.enabled: plain MQTT to 192.0.2.10" in capsys.readouterr().err
