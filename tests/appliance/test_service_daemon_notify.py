"""The real daemon under a systemd-like environment, on a real notify socket: READY=1,
STATUS= in words, WATCHDOG=1 and STOPPING=1 arrive; a hung camera read stops the pings
(systemd would restart the daemon) and they resume when the read returns."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from tests.support.common import PHOTOS
from tests.support.mosquitto import Broker
from tests.support.service import NotifySocket

ALL_WEEK = "shifts: [{days: [mon, tue, wed, thu, fri, sat, sun], start: '00:00', end: '24:00'}]"
# `deskwatch run` whose replay camera hangs in its read, like a camera driver that never returns
# a frame, until a file appears (the replay camera itself refuses what could block it: a FIFO)
STALLED_CAMERA = """
import sys, time
from pathlib import Path
from deskwatch import cli
from deskwatch.camera import replay
release, read = Path(sys.argv[2]), replay.load_image
def stalled(path, **options):
    while not release.exists():
        time.sleep(0.1)
    return read(path, **options)
replay.load_image = stalled
sys.exit(cli.main(["run", "--config", sys.argv[1]]))
"""


def write_config(tmp_path: Path, broker: Broker, camera: str, schedule: str) -> Path:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"""device: {{id: desk-0042, site: acme-support, worker_id: w-1187}}
state_dir: {tmp_path / "state"}
camera: {camera}
schedule: {schedule}
mqtt: {{host: 127.0.0.1, port: {broker.port}, tls: {{enabled: false}}}}
"""
    )
    return cfg


@pytest.fixture
def start_daemon(notify_socket: NotifySocket, tmp_path: Path) -> Iterator[object]:
    procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(cfg: Path, stall_until: Path | None = None) -> subprocess.Popen[bytes]:
        """``stall_until``: the replay camera's reads block until that file exists."""
        env = {**os.environ, "NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "1500000"}
        env["DESKWATCH_LOG_TARGET"] = "stderr"
        env.pop("WATCHDOG_PID", None)
        log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115 - closed at teardown
        argv = [sys.executable, "-m", "deskwatch", "run", "--config", str(cfg)]
        if stall_until is not None:
            argv = [sys.executable, "-c", STALLED_CAMERA, str(cfg), str(stall_until)]
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        procs.append((proc, log))
        return proc

    yield start
    for proc, log in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def collect(ns: NotifySocket, proc: subprocess.Popen[bytes], until: object, timeout: float) -> list[tuple[float, str]]:
    """(monotonic time, message) pairs until ``until(messages)`` is true or the timeout."""
    seen: list[tuple[float, str]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(seen):  # type: ignore[operator]
        try:
            seen.append((time.monotonic(), ns.receive(timeout=0.5)))
        except TimeoutError:
            if proc.poll() is not None:
                break
    return seen


@pytest.mark.slow
@pytest.mark.broker
def test_daemon_speaks_sd_notify(tmp_path: Path, mosquitto: Broker, notify_socket: NotifySocket, start_daemon) -> None:
    camera = f"{{backend: replay, source: {PHOTOS / 'single_04.jpg'}, burst_frames: 2, burst_seconds: 0.2}}"
    proc = start_daemon(
        write_config(
            tmp_path, mosquitto, camera, "{mode: interval, interval_seconds: 3600, require_synced_clock: false}"
        )
    )

    def done(seen: list[tuple[float, str]]) -> bool:
        msgs = [m for _, m in seen]
        return (
            any(m.startswith("READY=1") for m in msgs)
            and msgs.count("WATCHDOG=1") >= 2
            and any("STATUS=" in m for m in msgs)
        )

    seen = [m for _, m in collect(notify_socket, proc, done, 90)]
    log = tmp_path / "daemon.log"
    assert proc.poll() is None, log.read_text()[-3000:]
    assert any(m.startswith("READY=1") for m in seen), seen
    assert seen.count("WATCHDOG=1") >= 2, seen
    status = next(m for m in seen if "STATUS=" in m)
    assert "next scan" in status and "broker" in status, status
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert any(m.startswith("STOPPING=1") for m in notify_socket.pending()), "no STOPPING=1"
    text = log.read_text()
    assert "Traceback" not in text


@pytest.mark.slow
@pytest.mark.broker
def test_hung_camera_read_stops_the_pings(
    tmp_path: Path, mosquitto: Broker, notify_socket: NotifySocket, start_daemon
) -> None:
    # The replay camera's read blocks, like a camera driver that never returns a frame,
    # until the test releases it.
    release = tmp_path / "release"
    camera = f"{{backend: replay, source: {PHOTOS / 'single_04.jpg'}, burst_frames: 1, burst_seconds: 0, open_timeout_seconds: 1}}"
    schedule = f"{{mode: interval, interval_seconds: 5, require_synced_clock: false, {ALL_WEEK}}}"
    cfg = write_config(tmp_path, mosquitto, camera, schedule)
    text = cfg.read_text() + "policy: {rules: {away_from_desk: {confirm_after_seconds: 1}}}\n"
    cfg.write_text(text)
    proc = start_daemon(cfg, stall_until=release)

    def stalled(seen: list[tuple[float, str]]) -> bool:
        pings = [t for t, m in seen if m == "WATCHDOG=1"]
        return bool(pings) and time.monotonic() - pings[-1] > 4.0  # 8 ticks missed

    seen = collect(notify_socket, proc, stalled, 150)
    log = tmp_path / "daemon.log"
    assert proc.poll() is None, log.read_text()[-3000:]
    assert stalled(seen), "watchdog pings never stopped while the camera read hung"
    ready_at = next(t for t, m in seen if m.startswith("READY=1"))
    last_ping = max(t for t, m in seen if m == "WATCHDOG=1")
    # the allowance is about a minute (scan time budget); pings went on until then
    assert last_ping - ready_at > 30, last_ping - ready_at
    assert "made no progress" in log.read_text()

    # the read returns: the scan goes on and the pings resume
    release.touch()
    resumed = collect(notify_socket, proc, lambda s: any(m == "WATCHDOG=1" for _, m in s), 30)
    assert any(m == "WATCHDOG=1" for _, m in resumed), log.read_text()[-3000:]
