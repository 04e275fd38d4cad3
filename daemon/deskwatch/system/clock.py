"""Is the wall clock synchronised? One answer for the health topic, the status
reasons and the technician's selftest.

A Raspberry Pi has no real-time clock: until NTP has synchronised after boot, event
times can be days off. Sources, first answer wins:

1. ``timedatectl`` (only when asked: the selftest; it needs systemd and D-Bus);
2. systemd-timesyncd's flag file ``/run/systemd/timesync/synchronized``;
3. the kernel's NTP state via ``adjtimex(2)`` (read only): synchronised when the
   state is not ``TIME_ERROR`` and the ``STA_UNSYNC`` status bit is clear. The daemon's
   unit refuses ``adjtimex`` (``ProtectClock``, the ``@clock`` filter): there, with
   timesyncd installed (the image's time service), a missing flag means not synchronised.
"""

from __future__ import annotations

import ctypes
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")
TIMESYNCD = (Path("/lib/systemd/systemd-timesyncd"), Path("/usr/lib/systemd/systemd-timesyncd"))
STA_UNSYNC = 0x0040
TIME_ERROR = 5


@dataclass(frozen=True)
class ClockSync:
    synced: bool | None  # None: cannot tell
    source: str  # "timedatectl", "timesyncd", "adjtimex" or "none"
    detail: str


class _Timex(ctypes.Structure):
    # The head of struct timex (LP64 and ILP32 alike: C longs), padded to the kernel's size.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("_rest", ctypes.c_byte * 256),
    ]


def kernel_clock_synchronised() -> tuple[bool | None, str]:
    """The kernel's NTP state via adjtimex(2) (modes 0: read only): (synced?, detail)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError) as exc:
        return None, f"adjtimex unavailable: {exc}"
    if state < 0:
        return None, f"adjtimex failed (errno {ctypes.get_errno()})"
    synced = state != TIME_ERROR and not tx.status & STA_UNSYNC
    return synced, f"kernel NTP state {state}, max error {tx.maxerror / 1000:.0f} ms"


def timedatectl_synchronised(run: Callable[..., Any] | None = None) -> bool | None:
    """``timedatectl show -p NTPSynchronized`` or None when systemd is not running."""
    runner = run or subprocess.run
    try:
        proc = runner(
            ["timedatectl", "show", "-p", "NTPSynchronized", "--value"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = (proc.stdout or "").strip()
    if proc.returncode != 0 or value not in ("yes", "no"):
        return None
    return value == "yes"


def clock_sync(*, ask_systemd: bool = False) -> ClockSync:
    """The clock's state from the first source that can tell (see the module doc)."""
    if ask_systemd:
        via_systemd = timedatectl_synchronised()
        if via_systemd is not None:
            return ClockSync(via_systemd, "timedatectl", "systemd-timedated")
    if TIMESYNCD_FLAG.exists():
        return ClockSync(True, "timesyncd", str(TIMESYNCD_FLAG))
    # adjtimex last: a unit's system-call filter may refuse it (EPERM), see deskwatch-provision.service
    kernel, detail = kernel_clock_synchronised()
    if kernel is None and any(p.exists() for p in TIMESYNCD):
        # the image's time service is timesyncd: no flag yet means it has not synchronised
        return ClockSync(False, "timesyncd", f"{TIMESYNCD_FLAG} not there yet ({detail})")
    return ClockSync(kernel, "adjtimex" if kernel is not None else "none", detail)
