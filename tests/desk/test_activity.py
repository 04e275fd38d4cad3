"""Activity reports: the rate bounds (fake clock), the payload (the contract's schema and the
appliance's own intake), and ``deskwatch-desk run`` against a real Mosquitto."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskwatch_contract.intake import validate
from deskwatch_desk.activity import ActivityReporter, ReportThrottle
from deskwatch_desk.idle import IdleUnavailable
from deskwatch_desk.messages import activity_report
from tests.support.common import REPO, FakeClock
from tests.support.mosquitto import Broker, Collector

SCHEMAS = REPO / "contract/deskwatch_contract/schemas"


class ScriptedIdle:
    """Idle time from a function of the fake clock; raises while ``down`` is set."""

    name = "scripted"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.last_input = clock.monotonic()
        self.down = False

    def idle_seconds(self) -> float:
        if self.down:
            raise IdleUnavailable("X server went away")
        return self.clock.monotonic() - self.last_input

    def close(self) -> None:
        pass


def reporter(
    clock: FakeClock, source: Any, sent: list[tuple[float, dict[str, Any]]], ok: bool = True
) -> ActivityReporter:
    def publish(suffix: str, payload: dict[str, Any]) -> bool:
        assert suffix == "activity"
        if ok:
            sent.append((clock.monotonic(), payload))
        return ok

    return ActivityReporter(source, publish, monotonic=clock.monotonic, now=clock.now, sample_seconds=1.0)


def test_reports_first_then_every_30_s_while_typing(clock: FakeClock) -> None:
    source = ScriptedIdle(clock)
    sent: list[tuple[float, dict[str, Any]]] = []
    r = reporter(clock, source, sent)
    t0 = clock.monotonic()
    for _ in range(95):
        source.last_input = clock.monotonic() - 0.5  # busy typing
        r.step()
        clock.advance(1.0)
    assert [round(t - t0) for t, _ in sent] == [0, 30, 60, 90]


@pytest.mark.parametrize(("back_at", "reported_at"), [(100, 100), (92, 95)])
def test_coming_back_after_a_long_idle_is_reported_at_once_but_not_within_5_s(
    clock: FakeClock, back_at: int, reported_at: int
) -> None:
    source = ScriptedIdle(clock)
    sent: list[tuple[float, dict[str, Any]]] = []
    r = reporter(clock, source, sent)
    t0 = clock.monotonic()
    for _ in range(back_at):  # idle from the start: reports at 0, 30, 60, 90 s
        r.step()
        clock.advance(1.0)
    assert [round(t - t0) for t, _ in sent] == [0, 30, 60, 90]
    for _ in range(8):  # the worker is back and busy
        source.last_input = clock.monotonic()
        r.step()
        clock.advance(1.0)
    assert [round(t - t0) for t, _ in sent] == [0, 30, 60, 90, reported_at]
    assert sent[-1][1]["idle_seconds"] == 0.0


def test_an_idle_source_that_stops_answering_is_logged_once_and_reported_when_back(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    source = ScriptedIdle(clock)
    sent: list[tuple[float, dict[str, Any]]] = []
    r = reporter(clock, source, sent)
    r.step()
    source.down = True
    for _ in range(10):
        clock.advance(1.0)
        assert r.step() is False
    assert sum("stopped answering" in rec.getMessage() for rec in caplog.records) == 1
    source.down = False
    clock.advance(1.0)
    assert r.step() is True  # back after 11 s: report at once, not at 30 s


def test_broker_away_keeps_trying_without_counting(clock: FakeClock) -> None:
    sent: list[tuple[float, dict[str, Any]]] = []
    r = reporter(clock, ScriptedIdle(clock), sent, ok=False)
    assert r.step() is False and r.step() is False and r.sent == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0.05, 20.0), st.booleans()), min_size=1, max_size=200))
def test_never_more_than_one_report_per_5_s(steps: list[tuple[float, bool]]) -> None:
    clock = FakeClock()
    source = ScriptedIdle(clock)
    sent: list[tuple[float, dict[str, Any]]] = []
    r = reporter(clock, source, sent)
    for gap, typed in steps:
        if typed:
            source.last_input = clock.monotonic()
        r.step()
        clock.advance(gap)
    times = [t for t, _ in sent]
    assert all(b - a >= 5.0 for a, b in itertools.pairwise(times))


def test_min_gap_cannot_be_set_below_5_s() -> None:
    assert ReportThrottle(every_seconds=1, min_gap_seconds=0.5).min_gap_seconds == 5.0


class FixedAt:
    """An idle source that answers whatever the test sets (a long holiday, a broken counter)."""

    name = "x11"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def idle_seconds(self) -> float:
        return self.seconds

    def close(self) -> None:
        pass


def test_idle_for_more_than_7_days_is_reported_as_the_contracts_7_days(clock: FakeClock) -> None:
    """A workstation left logged in over a long holiday: 'run' keeps reporting, at the cap."""
    sent: list[tuple[float, dict[str, Any]]] = []
    r = reporter(clock, FixedAt(7 * 86400 + 1), sent)
    assert r.step() is True
    body = validate("activity", sent[0][1])
    assert body["idle_seconds"] == 7 * 86400
    assert body["since"] == clock.now() - timedelta(days=7)


def test_an_idle_time_that_is_not_a_number_is_not_reported_and_said_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken counter must not become 'the worker was active just now' (NaN read as 0 s)."""
    source = FixedAt(float("nan"))
    sent: list[tuple[float, dict[str, Any]]] = []
    r = reporter(clock, source, sent)
    for _ in range(3):
        assert r.step() is False
        clock.advance(1.0)
    assert sent == []
    said = [rec.getMessage() for rec in caplog.records if "not reported" in rec.getMessage()]
    assert len(said) == 1 and "idle_seconds" in said[0] and "x11" in said[0], said
    source.seconds = 12.0
    assert r.step() is True and sent[0][1]["idle_seconds"] == 12.0


def test_activity_payload_matches_the_schema_and_the_appliance_intake() -> None:
    measured = datetime(2026, 11, 30, 10, 15, 2, tzinfo=UTC)
    payload = activity_report(123.45, measured, "x11")
    schema = json.loads((SCHEMAS / "activity.json").read_text())
    jsonschema.validate(payload, schema)
    assert set(payload) == {"schema", "request_id", "idle_seconds", "since", "source"}  # counts only, no key values
    body = validate("activity", payload)
    assert body["idle_seconds"] == 123.5
    assert body["since"] == measured - timedelta(seconds=123.5)  # the start of the idle period (last input)


def test_run_publishes_activity_to_its_desk_topic(mosquitto: Broker, desk_config: Any, tmp_path: Path) -> None:
    collector = Collector(mosquitto, "deskwatch/v1/#")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deskwatch_desk.cli",
            "run",
            "--config",
            str(desk_config(mosquitto)),
            "--state-dir",
            str(tmp_path),
            "--idle-source",
            "fixed:42.5",
            "--sample",
            "0.2",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert collector.wait_for(lambda m: len(m) >= 1, timeout=10)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=10)
    assert proc.returncode == 0, log
    (msg,) = collector.messages  # one report in the first seconds, no more
    assert msg.topic == "deskwatch/v1/acme/desk-a/activity"
    body = json.loads(msg.payload)
    assert body["idle_seconds"] == 42.5 and body["source"] == "fixed"
    assert "stopped after 1 activity reports" in log
    collector.close()


def test_run_without_any_idle_source_exits_69(
    tmp_path: Path, desk_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "deskwatch_desk.cli",
            "run",
            "--config",
            str(desk_config(None, port=1)),
            "--state-dir",
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 69
    assert "idle source x11 is unavailable on this machine: no X display (DISPLAY is not set)" in done.stderr
    assert "no idle-time source works on this machine" in done.stderr
