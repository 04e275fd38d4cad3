"""The real daemon under a systemd-like environment: READY=1, STATUS=, WATCHDOG=1 and
STOPPING=1 arrive on a real notify socket, and its log lines carry the device id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.mosquitto import Broker
from tests.support.service import NotifySocket

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "testdata" / "photos"


@pytest.mark.slow
@pytest.mark.broker
def test_daemon_speaks_sd_notify(tmp_path: Path, mosquitto: Broker, notify_socket: NotifySocket) -> None:
    state = tmp_path / "state"
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"""device: {{id: desk-0042, site: acme-support, worker_id: w-1187}}
state_dir: {state}
camera: {{backend: replay, source: {PHOTOS / "single_02.jpg"}, burst_frames: 2, burst_seconds: 0.2}}
schedule: {{mode: interval, interval_seconds: 3600}}
mqtt: {{host: 127.0.0.1, port: {mosquitto.port}, tls: {{enabled: false}}}}
"""
    )
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.address,
        "WATCHDOG_USEC": "1500000",  # ticks every 0.5 s
        "DESKWATCH_LOG_TARGET": "stderr",
    }
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "deskwatch", "run", "--config", str(cfg)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                seen.append(notify_socket.receive(timeout=1.0))
            except TimeoutError:
                if proc.poll() is not None:
                    break
                continue
            ready = any("READY=1" in m for m in seen)
            if ready and sum(m == "WATCHDOG=1" for m in seen) >= 2 and any("STATUS=" in m for m in seen):
                break
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert any(m.startswith("READY=1") for m in seen), seen
        assert sum(m == "WATCHDOG=1" for m in seen) >= 2, seen
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    seen += notify_socket.pending()
    assert proc.returncode == 0, err[-3000:]
    assert any(m.startswith("STOPPING=1") for m in seen), seen
    status = next(m for m in seen if "STATUS=" in m)
    assert "next scan" in status and "broker" in status, status
    # stderr fallback: one readable line per record
    assert "deskwatch" in err and "Traceback" not in err
