"""Readings about the device itself for the ``health`` topic and the selftest."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from pathlib import Path

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5  # adjtimex(2): clock not synchronised


def cpu_temperature_c(path: Path = THERMAL) -> float | None:
    try:
        return round(int(path.read_text().strip()) / 1000.0, 1)
    except (OSError, ValueError):
        return None


def disk_free_bytes(path: str) -> int | None:
    probe = path
    while probe and not os.path.exists(probe):
        probe = os.path.dirname(probe.rstrip("/")) or "/"
    try:
        return shutil.disk_usage(probe or "/").free
    except OSError:
        return None


def clock_synchronised() -> bool | None:
    """True/False from the kernel's NTP state (adjtimex); None if it cannot be read.

    systemd-timesyncd also drops a flag file once it has synchronised; either is enough.
    """
    if TIMESYNCD_FLAG.exists():
        return True
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        buf = ctypes.create_string_buffer(512)  # struct timex, modes = 0: read only
        state = libc.adjtimex(buf)
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR
