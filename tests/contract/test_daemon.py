"""Everything the real daemon (``deskwatch run``) publishes matches the JSON Schemas."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from deskwatch_contract import load_schema
from tests.support.common import REPO
from tests.support.mosquitto import Collector, MakeBroker

pytestmark = [pytest.mark.broker, pytest.mark.slow]
PREFIX = "deskwatch/v1/acme/desk-c/"
KIND_BY_SCHEMA = {
    load_schema(k)["properties"]["schema"]["const"]: k for k in ("status", "event", "scan", "health", "cmd.result")
}


def _with_huge_pages() -> None:
    """The daemon starts as from systemd, allowed transparent huge pages (a bench run in this
    test process opts it, and so its children, out): it must opt out itself."""
    import ctypes

    ctypes.CDLL(None).prctl(41, 0, 0, 0, 0)  # PR_SET_THP_DISABLE, 0


def test_every_message_of_a_running_daemon_validates(tmp_path: Path, make_broker: MakeBroker) -> None:
    broker = make_broker()
    frames = tmp_path / "frames"
    frames.mkdir()
    for n, name in enumerate(["02_empty_desk.jpg"] * 4 + ["01_worker_at_desk.jpg"] * 2):
        os.symlink(REPO / "demo" / "frames" / name, frames / f"{n:02d}.jpg")
    config = tmp_path / "config.yaml"
    config.write_text(f"""\
device: {{id: desk-c, site: acme, worker_id: w-1}}
mqtt: {{host: 127.0.0.1, port: {broker.port}, tls: {{enabled: false}}}}
camera: {{backend: replay, source: {frames}, burst_frames: 2, burst_seconds: 0.2}}
schedule:
  timezone: UTC
  shifts: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}}]
  mode: interval
  interval_seconds: 5
  # nobody synchronises this machine's clock (a container, CI, the test VM): scan by it as it is
  require_synced_clock: false
policy:
  rules:
    away_from_desk: {{confirm_after_seconds: 1}}
service: {{health_interval_seconds: 10}}
state_dir: {tmp_path / "state"}
""")
    seen = Collector(broker, PREFIX + "#")
    proc = subprocess.Popen(
        [sys.executable, "-m", "deskwatch", "run", "--config", str(config), "--log-level", "warning"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=_with_huge_pages,
    )
    try:
        assert seen.wait_for(lambda ms: any(m.topic.endswith("status") for m in ms), 30)
        # the daemon opts out of transparent huge pages first thing (vision.memory.lean_process, issue 13)
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "THP_enabled:\t0" in status or "THP_enabled" not in status
        pub = seen.client.publish
        pub(PREFIX + "cmd/pause", b"not json", qos=1)
        pub(PREFIX + "cmd/resume", json.dumps({"schema": "deskwatch.cmd.resume/1", "request_id": "r1"}), qos=1)
        kinds = {"event", "scan", "health", "result"}
        ok = seen.wait_for(lambda ms: kinds <= {m.topic.rsplit("/", 1)[1] for m in ms}, 45)
        assert ok, ({m.topic for m in seen.messages}, proc.poll())
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        err = proc.stderr.read().decode() if proc.stderr else ""
    assert code == 0, err
    assert seen.wait_for(
        lambda ms: json.loads([m for m in ms if m.topic.endswith("status")][-1].payload)["state"] == "offline"
    )
    events = {}
    incoming = {PREFIX + t for t in ("cmd/pause", "cmd/resume", "cmd/scan", "activity")}
    for m in seen.messages:
        if "/evidence/" in m.topic or m.topic in incoming:  # the collector hears its own commands
            continue
        body = json.loads(m.payload)
        kind = KIND_BY_SCHEMA[body["schema"]]
        schema = load_schema(kind)
        jsonschema.Draft202012Validator(schema).validate(body)
        assert not set(body) - set(schema["properties"]), f"{kind} has undocumented fields"
        assert m.topic == PREFIX + {"cmd.result": "cmd/result"}.get(kind, kind)
        if kind == "event":
            events[body["event_id"]] = body
    for m in seen.messages:
        if "/evidence/" in m.topic:
            promised = events[m.topic.rsplit("/", 1)[1]]["evidence"]
            assert promised["sha256"] == hashlib.sha256(m.payload).hexdigest() and promised["bytes"] == len(m.payload)
            assert m.payload[:2] == b"\xff\xd8"
    seen.close()
