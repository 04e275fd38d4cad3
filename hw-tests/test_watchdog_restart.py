"""systemd restarts a hung daemon: freeze deskwatch.service and watch the watchdog fire.

SIGSTOP stands in for a hung camera read: the process is alive but makes no progress,
so no WATCHDOG=1 arrives and systemd kills and restarts it after WatchdogSec.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

UNIT = "deskwatch.service"


def systemd_running() -> bool:
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def service_property(unit: str, prop: str) -> str:
    out = subprocess.run(
        ["systemctl", "show", "-p", prop, "--value", unit], capture_output=True, text=True, check=False, timeout=10
    )
    return out.stdout.strip()


def test_hung_daemon_is_restarted(on_pi: str, results: Any) -> None:
    if os.geteuid() != 0:
        pytest.skip("must run as root (sends SIGSTOP to the service)")
    if not systemd_running():
        pytest.skip("systemd is not the init system here")
    if service_property(UNIT, "ActiveState") != "active":
        pytest.skip(f"{UNIT} is not running: provision the device first")
    watchdog_usec = int(service_property(UNIT, "WatchdogUSec") or 0)
    if not watchdog_usec:
        pytest.skip(f"{UNIT} has no WatchdogSec")
    restart_usec = int(service_property(UNIT, "RestartUSec") or 0)
    pid = int(service_property(UNIT, "MainPID"))
    restarts = int(service_property(UNIT, "NRestarts") or 0)
    os.kill(pid, signal.SIGSTOP)
    t0 = time.monotonic()
    limit = (watchdog_usec + restart_usec) / 1e6 + 120  # + time to load models and send READY
    new_pid = pid
    try:
        while time.monotonic() - t0 < limit:
            new_pid = int(service_property(UNIT, "MainPID") or 0)
            if new_pid not in (0, pid) and service_property(UNIT, "ActiveState") == "active":
                break
            time.sleep(1)
    finally:
        if new_pid == pid:
            os.kill(pid, signal.SIGCONT)
    took = time.monotonic() - t0
    results.record("watchdog_restart", watchdog_s=watchdog_usec / 1e6, restarted_after_s=round(took, 1))
    assert new_pid not in (0, pid), f"{UNIT} was not restarted within {limit:.0f} s"
    assert int(service_property(UNIT, "NRestarts")) == restarts + 1
