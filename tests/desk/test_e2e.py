"""End to end: the companion against the real daemon (``python -m deskwatch run``) over a real Mosquitto.

The daemon watches a replay camera (one worker at the desk), scans every 5 s, and
runs under libfaketime with its wall clock read from a file, so the test can correct
the daemon's clock by hours, as timesyncd does on a Pi booted with a stale clock.
Monotonic time is not faked: waits and MQTT keep-alives stay real, and so does the
pause, timed on it: the test waits the pause's real minute (the contract's shortest).
libfaketime 0.9.10 fails ``time.sleep`` in such a process (EINVAL): the daemon gets a sleep
that works from tests/support/faketime_site, and the fixture checks that it sleeps and that
its log has no traceback (a thread that died in the library's sleep would not fail the test).

What is checked, in one daemon run:
1. idleness above ``idle_input.idle_seconds`` reported by ``deskwatch-desk run`` -> ``idle_input``;
2. ``deskwatch-desk pause`` -> accepted (exit 0), and no scans while paused;
3. the daemon's wall clock corrected by +3 h: the pause holds (no scans, no overrun);
4. its real minute over, the pause expires -> ``pause_overrun`` (no sign of the worker since
   it began), and scans come back;
5. the broker stops and starts again: the daemon scans on, reconnects by itself (its backoff
   waits on the real monotonic clock) and sends the scan it queued meanwhile.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from deskwatch_desk.cli import main as desk_main
from tests.support.common import PHOTOS
from tests.support.mosquitto import Broker, Collector, Received

pytestmark = [pytest.mark.broker, pytest.mark.slow]

FAKETIME_LIB = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
FAKETIME_SITE = Path(__file__).resolve().parents[1] / "support/faketime_site"
PREFIX = "deskwatch/v1/acme/desk-a/"

CONFIG = """\
device: {{id: desk-a, site: acme, worker_id: w-1}}
mqtt:
  host: 127.0.0.1
  port: {port}
  tls: {{enabled: false}}
  reconnect_min_seconds: 0.1
  reconnect_max_seconds: 1.0
camera: {{backend: replay, source: {photo}, burst_frames: 2, burst_seconds: 0.2}}
schedule:
  shifts: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}}]
  mode: interval
  interval_seconds: 5
  # nobody synchronises this machine's clock (a container, CI): scan by it as it is
  require_synced_clock: false
policy:
  profile: full
  rules:
    away_from_desk: {{enabled: false}}
    unrecognized_person: {{enabled: false}}
    idle_input: {{idle_seconds: 60, stale_after_seconds: 300}}
    pause_overrun: {{grace_seconds: 0}}
state_dir: {state}
"""
# The companion's own file: the same desk and broker, nothing of the appliance's.
DESK_CONFIG = """\
device: {{id: desk-a, site: acme}}
mqtt: {{host: 127.0.0.1, port: {port}, tls: {{enabled: false}}, reconnect_min_seconds: 0.1, reconnect_max_seconds: 1.0}}
"""


def payloads(messages: list[Received], suffix: str) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in messages if m.topic == PREFIX + suffix]


def events(collector: Collector, kind: str) -> list[dict[str, Any]]:
    return [e for e in payloads(collector.messages, "event") if e["type"] == kind]


@pytest.fixture
def daemon(mosquitto: Broker, tmp_path: Path) -> Iterator[tuple[Path, Path, Callable[[], str]]]:
    if not FAKETIME_LIB.exists():
        pytest.skip("libfaketime is not installed: apt install faketime (tools/bootstrap.sh)")
    config = tmp_path / "config.yaml"
    config.write_text(CONFIG.format(port=mosquitto.port, photo=PHOTOS / "single_04.jpg", state=tmp_path / "state"))
    desk = tmp_path / "desk.yaml"
    desk.write_text(DESK_CONFIG.format(port=mosquitto.port))
    clock_file = tmp_path / "faketime"
    clock_file.write_text("+0\n")
    log_path = tmp_path / "daemon.log"
    env = dict(
        os.environ,
        LD_PRELOAD=str(FAKETIME_LIB),
        FAKETIME_TIMESTAMP_FILE=str(clock_file),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
        DESKWATCH_LOG_TARGET="stderr",
        # libfaketime 0.9.10 fails time.sleep in such a process: the site module gives it one
        PYTHONPATH=os.pathsep.join([str(FAKETIME_SITE), *filter(None, [os.environ.get("PYTHONPATH")])]),
    )
    # what the daemon runs with: a wall clock that follows the file, and sleeps that sleep
    probe = subprocess.run(
        [sys.executable, "-c", "import time; t = time.monotonic(); time.sleep(0.2); print(time.monotonic() - t)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 0 and float(probe.stdout) >= 0.2, probe.stderr[-2000:]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "deskwatch", "run", "--config", str(config)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        yield desk, clock_file, log_path.read_text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(15) == 0, log_path.read_text()[-3000:]
            # a thread that died (a sleep the library broke, a bug) leaves a traceback, not a failure
            assert "Traceback" not in log_path.read_text(), log_path.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_pause_stops_scans_expiry_brings_them_back_overrun_and_idle_findings(
    mosquitto: Broker, daemon: tuple[Path, Path, Callable[[], str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, clock_file, daemon_log = daemon
    started = time.monotonic()
    collector = Collector(mosquitto, PREFIX + "#")
    companion = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deskwatch_desk.cli",
            "run",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "desk"),
            "--idle-source",
            "fixed:120",
            "--every",
            "5",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # 1. Idle for 120 s (threshold 60) with the worker at the desk -> idle_input.
        assert collector.wait_for(lambda m: bool(events(collector, "idle_input")), timeout=25), daemon_log()[-3000:]
        activities = payloads(collector.messages, "activity")
        assert all(a["idle_seconds"] == 120.0 and a["source"] == "fixed" for a in activities)
        accepted = {
            r["request_id"]
            for r in payloads(collector.messages, "cmd/result")
            if r["command"] == "activity" and r["ok"]
        }
        assert accepted and accepted <= {a["request_id"] for a in activities}
        assert events(collector, "idle_input")[0]["evidence"] is None
    finally:
        companion.send_signal(signal.SIGTERM)
        _, companion_log = companion.communicate(timeout=10)
    assert companion.returncode == 0, companion_log

    # 2. Pause: accepted, and the daemon skips its scans.
    code = desk_main(
        [
            "pause",
            "--config",
            str(config),
            "--state-dir",
            str(tmp_path / "desk"),
            "--reason",
            "fetch water",
            "--minutes",
            "1",
            "--wait",
            "10",
        ]
    )
    assert code == 0, capsys.readouterr()
    paused_at = time.monotonic()
    assert 'the appliance accepted the pause "fetch water" for 1 min' in capsys.readouterr().out
    time.sleep(0.5)  # a scan already running when the pause arrived may still finish
    scans_at_pause = len(payloads(collector.messages, "scan"))
    skipped_before = daemon_log().count("scan skipped: paused")
    deadline = time.monotonic() + 15
    while daemon_log().count("scan skipped: paused") < skipped_before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon_log().count("scan skipped: paused") >= skipped_before + 2, daemon_log()[-2000:]
    assert len(payloads(collector.messages, "scan")) == scans_at_pause
    assert not events(collector, "pause_overrun")

    # 3. timesyncd corrects the daemon's wall clock by +3 h: the pause is a minute of real time, it holds.
    clock_file.write_text("+10800\n")
    skipped_before = daemon_log().count("scan skipped: paused")
    deadline = time.monotonic() + 15
    while daemon_log().count("scan skipped: paused") < skipped_before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon_log().count("scan skipped: paused") >= skipped_before + 2, daemon_log()[-2000:]
    assert "wall clock moved +10800 s during the pause" in daemon_log()
    assert len(payloads(collector.messages, "scan")) == scans_at_pause
    assert not events(collector, "pause_overrun")

    # 4. Its real minute over, the pause expires; nobody came back -> overrun; scans resume.
    left = 60 - (time.monotonic() - paused_at)
    assert collector.wait_for(lambda m: bool(events(collector, "pause_overrun")), timeout=left + 12), daemon_log()[
        -3000:
    ]
    assert time.monotonic() - paused_at >= 59  # not before its minute
    overrun = events(collector, "pause_overrun")[0]
    assert "fetch water" in overrun["detail"] and overrun["evidence"] is None
    assert collector.wait_for(lambda m: len(payloads(m, "scan")) > scans_at_pause + 1, timeout=12)
    back = [s for s in payloads(collector.messages, "scan")[scans_at_pause:] if s["trigger"] == "schedule"]
    assert back and all(c["outcome"] != "skipped" or c["reason"] != "paused by the worker" for c in back[-1]["checks"])
    collector.close()

    # 5. The broker goes away (a router's reboot) and comes back: the daemon, its clock still
    #    corrected, keeps scanning, reconnects by itself and sends what it queued meanwhile.
    mosquitto.stop()
    done_before = daemon_log().count(") done in ")
    deadline = time.monotonic() + 15
    while daemon_log().count(") done in ") < done_before + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert daemon_log().count(") done in ") > done_before, daemon_log()[-2000:]
    mosquitto.start()
    again = Collector(mosquitto, PREFIX + "#")
    try:
        assert again.wait_for(lambda m: bool(payloads(m, "scan")), timeout=30), daemon_log()[-3000:]
    finally:
        again.close()
    connects = re.findall(r"connected to broker \S+ \(MQTT 5, session \d+\); (\d+) queued", daemon_log())
    assert len(connects) == 2 and int(connects[-1]) >= 1, daemon_log()[-3000:]  # the scan made while it was away
    assert time.monotonic() - started < 150
