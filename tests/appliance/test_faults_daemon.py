"""Faults 1 and 2 with the whole daemon. Fault 2: the whole daemon (``deskwatch run``) killed with SIGKILL mid-publish, three times.

The outbox is pre-loaded with a backlog (as after a long outage) so that every kill
lands while the daemon is draining it; the daemon also scans on its own (replay
camera) and adds events. After each restart nothing may be lost: every backlog event
arrives, every ``seq`` from 1 to the last arrives (so no event the daemon produced
itself went missing), and copies of an event are the same event.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deskwatch.delivery.outbox import Outbox
from tests.support.common import REPO
from tests.support.faultfs import FaultFs
from tests.support.mosquitto import Broker, Collector, MakeBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow]
PREFIX = "deskwatch/v1/acme/desk-k/"
BACKLOG = 3000


def write_config(tmp_path: Path, broker: Broker) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"""\
device: {{id: desk-k, site: acme, worker_id: w-1}}
mqtt:
  host: 127.0.0.1
  port: {broker.port}
  tls: {{enabled: false}}
  reconnect_min_seconds: 0.1
  reconnect_max_seconds: 1
  max_inflight: 16
camera:
  backend: replay
  source: {REPO / "demo" / "frames"}
  burst_frames: 2
  burst_seconds: 0.2
schedule:
  timezone: UTC
  shifts: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}}]
  mode: interval
  interval_seconds: 5
  # nobody synchronises this machine's clock (a container, CI, the test VM): scan by it as it is
  require_synced_clock: false
service:
  health_interval_seconds: 10
state_dir: {tmp_path / "state"}
""")
    return cfg


def preload(state_dir: Path) -> list[str]:
    box = Outbox(state_dir, max_bytes=1024**3, max_messages=10**6, max_age_days=20)
    box._db.execute("PRAGMA synchronous=OFF")  # test set-up only: the daemon itself runs FULL
    ids = []
    for n in range(BACKLOG):
        event_id = f"0193a0c0-0000-7000-8000-{n:012d}"
        box.put_event(
            {"schema": "deskwatch.event/1", "event_id": event_id, "type": "phone_use", "replayed": False},
            b"\xff\xd8" + b"e" * 1000,
            {"content-type": "image/jpeg"},
            offline=True,
        )
        ids.append(event_id)
    box.close()
    return ids


def events(seen: Collector) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    for m in seen.on("/event"):
        body = json.loads(m.payload)
        out.setdefault(body["event_id"], set()).add(body["seq"])
    return out


def test_2_sigkill_three_times_mid_publish_loses_nothing(tmp_path: Path, make_broker: MakeBroker) -> None:
    broker = make_broker(persistent=True)
    seen = Collector(broker, PREFIX + "#", persistent_session=True)
    config = write_config(tmp_path, broker)
    backlog = preload(tmp_path / "state")
    cmd = [sys.executable, "-m", "deskwatch", "run", "--config", str(config), "--log-level", "warning"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    sessions: list[int] = []
    try:
        for _ in range(3):
            before = len(seen.on("/event"))
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                # Kill once this run has delivered a few hundred messages: mid-drain, in flight.
                assert seen.wait_for(
                    lambda ms, before=before: len([m for m in ms if m.topic.endswith("/event")]) >= before + 200, 30
                ), proc.stderr.read().decode() if proc.poll() is not None and proc.stderr else "daemon too slow"
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
            # The Last Will says offline, with the session number the killed run announced.
            assert seen.wait_for(
                lambda ms: json.loads([m for m in ms if m.topic.endswith("status")][-1].payload)["state"] == "offline",
                10,
            )
            statuses = [json.loads(m.payload) for m in seen.on("status")]
            online = [s for s in statuses if s["state"] == "online"][-1]
            assert statuses[-1]["session"] == online["session"]
            sessions.append(online["session"])
            assert len(events(seen)) < BACKLOG, "the backlog drained before the kill; make it larger"
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            want = set(backlog)
            assert seen.wait_for(lambda ms: want <= set(events(seen)), 60), (
                f"{len(want - set(events(seen)))} backlog events lost"
            )
            got = events(seen)
            assert all(len(seqs) == 1 for seqs in got.values())  # duplicates are the same event
            seqs = sorted(s for v in got.values() for s in v)
            assert seqs == list(range(1, len(seqs) + 1)), "a gap in seq: an event the daemon produced was lost"
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        assert sessions == sorted(set(sessions))  # each run announced a new session
    finally:
        seen.close()


def test_1_the_daemon_keeps_scanning_through_a_broker_outage(tmp_path: Path, make_broker: MakeBroker) -> None:
    """The scan loop never waits for the broker: events made during the outage arrive after it."""
    from PIL import Image

    broker = make_broker(persistent=True)
    seen = Collector(broker, PREFIX + "#", persistent_session=True)
    dark = tmp_path / "dark"
    dark.mkdir()
    Image.new("RGB", (320, 240), (4, 4, 4)).save(dark / "dark.jpg")  # every scan: a low_light event
    config = write_config(tmp_path, broker)
    config.write_text(config.read_text().replace(str(REPO / "demo" / "frames"), str(dark)))
    cmd = [sys.executable, "-m", "deskwatch", "run", "--config", str(config), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    outbox = tmp_path / "state" / "outbox.sqlite3"

    def queued_events() -> set[str]:
        with sqlite3.connect(f"file:{outbox}?mode=ro", uri=True) as db:
            return {r[0] for r in db.execute("SELECT event_id FROM messages WHERE kind = 'event'")}

    try:
        assert seen.wait_for(lambda ms: any(m.topic.endswith("/event") for m in ms), 30)
        broker.stop()
        deadline = time.monotonic() + 20
        while len(queued_events()) < 2 and time.monotonic() < deadline:  # two scans while the broker is away
            assert proc.poll() is None
            time.sleep(0.2)
        expected = set(events(seen)) | queued_events()  # delivered before + made during the outage
        assert len(expected) >= 3
        broker.start()
        assert seen.wait_for(lambda ms: expected <= set(events(seen)), 20)
        assert any(json.loads(m.payload)["replayed"] for m in seen.on("/event"))
        got = events(seen)
        seqs = sorted(s for v in got.values() for s in v)
        assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) >= 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.stderr.read().decode() if proc.stderr else ""
        seen.close()


def test_a_full_disk_costs_health_messages_not_the_daemon(
    tmp_path: Path, make_broker: MakeBroker, fault_fs: FaultFs
) -> None:
    """The card fills while the daemon runs (the journal, a download): the next health message
    could not be queued, and the exception ended the daemon's main loop - "internal error in
    'run'" and a traceback, exit 70, every time systemd started it again. The health message
    is now skipped with a line saying the disk is full and what to free; the daemon goes on
    (scans stay refused while the audit trail cannot record them) and stops cleanly."""
    broker = make_broker()
    seen = Collector(broker, PREFIX + "#")
    config = write_config(tmp_path, broker)
    state = fault_fs.tmpfs(6) / "state"
    config.write_text(config.read_text().replace(str(tmp_path / "state"), str(state)))
    log = tmp_path / "daemon.log"
    cmd = [sys.executable, "-m", "deskwatch", "run", "--config", str(config), "--log-level", "info"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert seen.wait_for(lambda ms: any(m.topic.endswith("status") for m in ms), 30), log.read_text()
        fault_fs.fill()  # before the first health message (10 s after the start)
        assert wait_for_text(log, "health not queued", 30), log.read_text()
        time.sleep(1)
        assert proc.poll() is None, log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        seen.close()
    text = log.read_text()
    assert code == 0, text
    assert "internal error" not in text and "Traceback" not in text, text
    (said,) = [line for line in text.splitlines() if "health not queued" in line]
    assert "is full" in said and "free some space" in said, said


def wait_for_text(path: Path, text: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in path.read_text():
            return True
        time.sleep(0.2)
    return False
