"""Seconds since the last keyboard or mouse input, from the platform's own idle API.

One small interface (:class:`IdleSource`), one implementation per platform:

- ``x11``: the XScreenSaver extension (``XScreenSaverQueryInfo``) through ctypes on libXss;
- ``wayland``: GNOME Mutter's ``org.gnome.Mutter.IdleMonitor`` or the
  ``org.freedesktop.ScreenSaver`` service (KDE) over the session D-Bus, asked through
  the ``gdbus`` or ``busctl`` command (no D-Bus binding needed);
- ``windows``: ``GetLastInputInfo`` through ctypes;
- ``macos``: ``HIDIdleTime`` of IOHIDSystem, read with ``ioreg``;
- ``fixed:N``: always N seconds (demos and tests).

Every one of them only ever learns *how long ago* the last input happened: no key
values, no pointer positions, no window titles. A source that does not work on this
machine says so once, in one log line naming the reason, and the next one is tried;
except that in a Wayland session ``auto`` never falls back to ``x11`` (XWayland's
counter sees only input to X11 windows): no idle time beats a wrong one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)

DBUS_TIMEOUT_SECONDS = 2.0


class IdleUnavailable(Exception):
    """This idle source cannot work here (the message says why, for the log)."""


class IdleSource(Protocol):
    name: str

    def idle_seconds(self) -> float:
        """Seconds since the last keyboard or mouse input; raises :class:`IdleUnavailable`."""
        ...

    def close(self) -> None: ...


_said: set[str] = set()


def say_unavailable_once(name: str, reason: str) -> None:
    """Log that idle source ``name`` is unavailable, once per process and source."""
    if name in _said:
        return
    _said.add(name)
    logger.info("idle source %s is unavailable on this machine: %s", name, reason)


# -- X11 --------------------------------------------------------------------------------
class _XScreenSaverInfo(ctypes.Structure):
    _fields_ = [
        ("window", ctypes.c_ulong),
        ("state", ctypes.c_int),
        ("kind", ctypes.c_int),
        ("til_or_since", ctypes.c_ulong),
        ("idle", ctypes.c_ulong),  # milliseconds since the last input
        ("eventMask", ctypes.c_ulong),
    ]


class X11Idle:
    """XScreenSaverQueryInfo on the display named by ``$DISPLAY`` (or ``display``)."""

    name = "x11"

    def __init__(self, display: str | None = None) -> None:
        display = display if display is not None else os.environ.get("DISPLAY")
        if not display:
            raise IdleUnavailable("no X display (DISPLAY is not set)")
        xlib = _load_library("X11", "libX11.so.6")
        xss = _load_library("Xss", "libXss.so.1")
        if xlib is None:
            raise IdleUnavailable("libX11 is not installed")
        if xss is None:
            raise IdleUnavailable(
                "libXss (XScreenSaver extension client library) is not installed; apt install libxss1"
            )
        xlib.XOpenDisplay.argtypes = [ctypes.c_char_p]
        xlib.XOpenDisplay.restype = ctypes.c_void_p
        xlib.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
        xlib.XDefaultRootWindow.restype = ctypes.c_ulong
        xlib.XCloseDisplay.argtypes = [ctypes.c_void_p]
        xlib.XFree.argtypes = [ctypes.c_void_p]
        xss.XScreenSaverQueryExtension.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int),
            ctypes.POINTER(ctypes.c_int),
        ]
        xss.XScreenSaverAllocInfo.restype = ctypes.POINTER(_XScreenSaverInfo)
        xss.XScreenSaverQueryInfo.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(_XScreenSaverInfo)]
        self._xlib, self._xss = xlib, xss
        self._dpy = xlib.XOpenDisplay(display.encode())
        if not self._dpy:
            raise IdleUnavailable(f"cannot open X display {display!r}")
        event_base, error_base = ctypes.c_int(), ctypes.c_int()
        if not xss.XScreenSaverQueryExtension(self._dpy, ctypes.byref(event_base), ctypes.byref(error_base)):
            self.close()
            raise IdleUnavailable(f"X display {display!r} has no MIT-SCREEN-SAVER extension")
        self._root = xlib.XDefaultRootWindow(self._dpy)
        self._info = xss.XScreenSaverAllocInfo()
        if not self._info:
            self.close()
            raise IdleUnavailable("XScreenSaverAllocInfo failed (out of memory)")

    def idle_seconds(self) -> float:
        if not self._dpy:
            raise IdleUnavailable("the X display was closed")
        if not self._xss.XScreenSaverQueryInfo(self._dpy, self._root, self._info):
            raise IdleUnavailable("XScreenSaverQueryInfo failed")
        return float(self._info.contents.idle) / 1000.0

    def close(self) -> None:
        info = getattr(self, "_info", None)
        if info:
            self._xlib.XFree(info)
            self._info = None
        if getattr(self, "_dpy", None):
            self._xlib.XCloseDisplay(self._dpy)
            self._dpy = None


def _load_library(name: str, fallback: str) -> Any:
    path = ctypes.util.find_library(name) or fallback
    try:
        return ctypes.CDLL(path)
    except OSError:
        return None


# -- Wayland (through the desktop's D-Bus idle services) ----------------------------------
# (service, object path, interface.method, unit of the answer)
DBUS_IDLE_APIS = (
    (
        "org.gnome.Mutter.IdleMonitor",
        "/org/gnome/Mutter/IdleMonitor/Core",
        "org.gnome.Mutter.IdleMonitor",
        "GetIdletime",
    ),
    # KDE's implementation answers in milliseconds (the freedesktop draft said seconds).
    (
        "org.freedesktop.ScreenSaver",
        "/org/freedesktop/ScreenSaver",
        "org.freedesktop.ScreenSaver",
        "GetSessionIdleTime",
    ),
)
_NUMBER = re.compile(r"(\d+)")

Runner = Callable[[list[str]], str]


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=DBUS_TIMEOUT_SECONDS, check=False)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise IdleUnavailable(lines[-1] if lines else f"{argv[0]} exited with {done.returncode}")
    return done.stdout


class DbusIdle:
    """Idle time from the compositor over the session bus, via ``gdbus`` or ``busctl``."""

    name = "wayland"

    def __init__(self, runner: Runner | None = None, which: Callable[[str], str | None] = shutil.which) -> None:
        if not (os.environ.get("WAYLAND_DISPLAY") or os.environ.get("DBUS_SESSION_BUS_ADDRESS")):
            raise IdleUnavailable("no Wayland session (WAYLAND_DISPLAY and DBUS_SESSION_BUS_ADDRESS are not set)")
        self._tool = "gdbus" if which("gdbus") else ("busctl" if which("busctl") else None)
        if self._tool is None:
            raise IdleUnavailable("neither gdbus nor busctl is installed to ask the desktop for the idle time")
        self._run = runner or _run
        problems = []
        for api in DBUS_IDLE_APIS:
            try:
                self._query(api)
            except (IdleUnavailable, OSError, subprocess.SubprocessError) as exc:
                problems.append(f"{api[0]}: {exc}")
                continue
            self._api = api
            return
        raise IdleUnavailable("the desktop offers no idle-time service (" + "; ".join(problems) + ")")

    def _query(self, api: tuple[str, str, str, str]) -> float:
        service, path, iface, method = api
        if self._tool == "gdbus":
            argv = [
                "gdbus",
                "call",
                "--session",
                "--dest",
                service,
                "--object-path",
                path,
                "--method",
                f"{iface}.{method}",
            ]
        else:
            argv = ["busctl", "--user", "call", service, path, iface, method]
        out = self._run(argv)
        # gdbus: "(uint64 12345,)"; busctl: "t 12345" -- the last number is the answer.
        numbers = _NUMBER.findall(out.replace("uint64", "").replace("uint32", ""))
        if not numbers:
            raise IdleUnavailable(f"unexpected answer from {service}: {out.strip()[:80]!r}")
        return int(numbers[-1]) / 1000.0  # both services answer in milliseconds

    def idle_seconds(self) -> float:
        try:
            return self._query(self._api)
        except (OSError, subprocess.SubprocessError) as exc:
            raise IdleUnavailable(str(exc)) from None

    def close(self) -> None:
        pass


# -- Windows ------------------------------------------------------------------------------
class _LastInputInfo(ctypes.Structure):
    _fields_ = [("cbSize", ctypes.c_uint), ("dwTime", ctypes.c_uint32)]


class WindowsIdle:
    """GetLastInputInfo (tick count of the last input in this session) minus GetTickCount."""

    name = "windows"

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise IdleUnavailable("GetLastInputInfo exists only on Windows")
        windll = ctypes.windll  # type: ignore[attr-defined]
        self._user32: Any = windll.user32
        self._kernel32: Any = windll.kernel32
        self._kernel32.GetTickCount.restype = ctypes.c_uint32
        self.idle_seconds()

    def idle_seconds(self) -> float:
        info = _LastInputInfo()
        info.cbSize = ctypes.sizeof(info)
        if not self._user32.GetLastInputInfo(ctypes.byref(info)):
            raise IdleUnavailable("GetLastInputInfo failed")
        ticks = int(self._kernel32.GetTickCount())
        return ((ticks - int(info.dwTime)) & 0xFFFFFFFF) / 1000.0  # the tick count wraps after 49.7 days

    def close(self) -> None:
        pass


# -- macOS --------------------------------------------------------------------------------
_HID_IDLE = re.compile(r'"HIDIdleTime"\s*=\s*(\d+)')


class MacIdle:
    """HIDIdleTime (nanoseconds) of the IOHIDSystem service, read with ``ioreg``."""

    name = "macos"

    def __init__(self, runner: Runner | None = None) -> None:
        if sys.platform != "darwin" and runner is None:
            raise IdleUnavailable("IOKit's HIDIdleTime exists only on macOS")
        if runner is None and not shutil.which("ioreg"):
            raise IdleUnavailable("the ioreg command is missing")
        self._run = runner or _run
        self.idle_seconds()

    def idle_seconds(self) -> float:
        try:
            out = self._run(["ioreg", "-c", "IOHIDSystem", "-d", "4", "-r", "-k", "HIDIdleTime"])
        except (OSError, subprocess.SubprocessError) as exc:
            raise IdleUnavailable(str(exc)) from None
        match = _HID_IDLE.search(out)
        if match is None:
            raise IdleUnavailable("ioreg shows no HIDIdleTime")
        return int(match.group(1)) / 1e9

    def close(self) -> None:
        pass


# -- fixed (demos, tests) -----------------------------------------------------------------
class FixedIdle:
    """Always reports the same idle time. For demos and tests, never chosen by ``auto``."""

    name = "fixed"

    def __init__(self, seconds: float) -> None:
        self.seconds = float(seconds)

    def idle_seconds(self) -> float:
        return self.seconds

    def close(self) -> None:
        pass


FACTORIES: dict[str, Callable[[], IdleSource]] = {
    "x11": X11Idle,
    "wayland": DbusIdle,
    "windows": WindowsIdle,
    "macos": MacIdle,
}
NAMES = (*FACTORIES, "fixed:SECONDS")


WAYLAND_WITHOUT_IDLE_SERVICE = (
    "this is a Wayland session and its desktop's idle-time service cannot be asked (the line above says why), "
    "so no idle time is reported (the appliance's idle check then skips this desk rather than judge it on "
    "wrong data). The x11 source is not used: it would read XWayland's counter, which sees only input to X11 "
    "windows, so typing in Wayland apps would look like idleness. Use a desktop that offers the service "
    "(GNOME: Mutter's IdleMonitor; KDE: org.freedesktop.ScreenSaver) with gdbus or busctl installed, or, if "
    "you work only in X11 apps, choose --idle-source x11"
)


def wayland_session() -> bool:
    return bool(os.environ.get("WAYLAND_DISPLAY"))


def auto_order() -> list[str]:
    """Which sources to try on this platform, most specific first.

    In a Wayland session only the desktop's own idle service will do: the x11 source would
    read XWayland's counter, which sees only input to X11 windows (see
    :data:`WAYLAND_WITHOUT_IDLE_SERVICE`), so "auto" never falls back to it.
    """
    if sys.platform == "win32":
        return ["windows"]
    if sys.platform == "darwin":
        return ["macos"]
    if wayland_session():
        return ["wayland"]
    return ["x11", "wayland"]


def open_idle_source(choice: str = "auto") -> IdleSource | None:
    """The first source that works (``choice`` "auto"), or the one named; None if none works.

    Each source that cannot work here is logged once with its reason.
    """
    if choice.startswith("fixed:"):
        try:
            return FixedIdle(float(choice[6:]))
        except ValueError:
            raise ValueError(f"fixed idle source needs a number of seconds, e.g. fixed:120, not {choice!r}") from None
    if choice != "auto" and choice not in FACTORIES:
        raise ValueError(f"unknown idle source {choice!r}; choose auto, {', '.join(NAMES)}")
    order = auto_order() if choice == "auto" else [choice]
    for name in order:
        try:
            source = FACTORIES[name]()
        except IdleUnavailable as exc:
            say_unavailable_once(name, str(exc))
            continue
        logger.info("idle time from %s", name)
        if name == "x11" and wayland_session():
            logger.warning(
                "idle time from x11 in a Wayland session (as chosen): only input to X11 (XWayland) windows counts"
            )
        return source
    if order == ["wayland"] and sys.platform not in ("win32", "darwin") and wayland_session():
        logger.warning("%s", WAYLAND_WITHOUT_IDLE_SERVICE)
    return None
