"""Readings about the device itself for the ``health`` topic and the selftest."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from deskwatch.system.clock import clock_sync

THERMAL = Path("/sys/class/thermal/thermal_zone0/temp")


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
    """True/False from :func:`deskwatch.system.clock.clock_sync`; None if it cannot tell."""
    return clock_sync().synced
