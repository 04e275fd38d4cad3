"""Idle sources: X11 under Xvfb with synthetic input; the others through injected command output."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from deskwatch_desk import idle
from deskwatch_desk.idle import DbusIdle, FixedIdle, IdleUnavailable, MacIdle, WindowsIdle, X11Idle, open_idle_source

if TYPE_CHECKING:
    from tests.support.desk import Xvfb


@pytest.fixture(autouse=True)
def _fresh_said(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idle, "_said", set())


def test_x11_idle_grows_without_input_and_resets_on_synthetic_input(xvfb: Xvfb) -> None:
    source = X11Idle(xvfb.display)
    try:
        xvfb.run("xdotool", "mousemove", "100", "100")
        assert source.idle_seconds() < 0.5
        time.sleep(1.2)  # the X server's own clock: nothing to inject
        assert source.idle_seconds() >= 1.0
        xvfb.run("xdotool", "mousemove", "200", "150")
        assert source.idle_seconds() < 0.5
        time.sleep(1.2)
        assert source.idle_seconds() >= 1.0
        xvfb.run("xdotool", "key", "shift")
        assert source.idle_seconds() < 0.5
    finally:
        source.close()


def test_idle_command_names_the_x11_source(xvfb: Xvfb) -> None:
    done = xvfb.run(sys.executable, "-m", "deskwatch_desk.cli", "idle")
    assert "(source: x11)" in done.stdout
    assert float(done.stdout.split()[0]) >= 0


def test_x11_unavailable_without_display_is_said_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("DBUS_SESSION_BUS_ADDRESS", raising=False)
    with caplog.at_level(logging.INFO, logger="deskwatch_desk.idle"):
        assert open_idle_source("x11") is None
        assert open_idle_source("x11") is None
        assert open_idle_source("auto") is None
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("idle source x11 is unavailable on this machine: no X display (DISPLAY is not set)") == 1
    assert sum("idle source wayland is unavailable" in line for line in lines) == 1


def test_wayland_without_an_idle_service_never_falls_back_to_xwayland(
    xvfb: Xvfb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """sway, Hyprland and other wlroots desktops offer no idle service over D-Bus; XWayland's
    counter (Xvfb here) sees only input to X11 windows, so a worker typing in native Wayland
    apps would be reported idle. 'auto' must not use it; only an explicit choice does."""
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    monkeypatch.setenv("DISPLAY", xvfb.display)
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", f"unix:path={tmp_path}/no-bus")
    with caplog.at_level(logging.INFO, logger="deskwatch_desk.idle"):
        assert open_idle_source("auto") is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "Wayland" in warned[0] and "--idle-source x11" in warned[0], warned
    assert "GNOME" in warned[0] and "KDE" in warned[0], warned
    explicit = open_idle_source("x11")
    assert explicit is not None and explicit.name == "x11"
    explicit.close()
    assert any("only input to X11" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


def test_idle_command_in_such_a_wayland_session_reports_nothing_and_says_why(xvfb: Xvfb, tmp_path: Path) -> None:
    env = dict(xvfb.env, WAYLAND_DISPLAY="wayland-0", DBUS_SESSION_BUS_ADDRESS=f"unix:path={tmp_path}/no-bus")
    done = subprocess.run(
        [sys.executable, "-m", "deskwatch_desk.cli", "idle"], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 69, done.stdout + done.stderr
    assert "source: x11" not in done.stdout
    assert "--idle-source x11" in done.stderr and "no idle-time source works" in done.stderr


def test_x11_display_that_is_not_running() -> None:
    with pytest.raises(IdleUnavailable, match="cannot open X display"):
        X11Idle(":4711")


def test_wayland_mutter_answer_through_gdbus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    calls: list[list[str]] = []

    def gdbus(argv: list[str]) -> str:
        calls.append(argv)
        return "(uint64 12345,)\n"

    source = DbusIdle(runner=gdbus, which=lambda tool: "/usr/bin/" + tool)
    assert source.idle_seconds() == pytest.approx(12.345)
    assert calls[0][:3] == ["gdbus", "call", "--session"]
    assert "org.gnome.Mutter.IdleMonitor.GetIdletime" in calls[0]


def test_wayland_falls_back_to_freedesktop_screensaver_through_busctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")

    def busctl(argv: list[str]) -> str:
        if "org.gnome.Mutter.IdleMonitor" in argv:
            raise IdleUnavailable("The name org.gnome.Mutter.IdleMonitor was not provided by any .service files")
        return "u 4000\n"

    source = DbusIdle(runner=busctl, which=lambda tool: "/usr/bin/busctl" if tool == "busctl" else None)
    assert source.idle_seconds() == pytest.approx(4.0)


def test_wayland_without_an_idle_service_says_which_were_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")

    def nothing(argv: list[str]) -> str:
        raise IdleUnavailable("ServiceUnknown")

    with pytest.raises(IdleUnavailable, match=r"no idle-time service.*Mutter.*ScreenSaver"):
        DbusIdle(runner=nothing, which=lambda tool: "/usr/bin/gdbus")


def test_wayland_without_gdbus_or_busctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    with pytest.raises(IdleUnavailable, match="neither gdbus nor busctl"):
        DbusIdle(which=lambda tool: None)


def test_real_dbus_call_failure_is_unavailable_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
    with pytest.raises(IdleUnavailable):
        DbusIdle()


@pytest.mark.skipif(sys.platform == "win32", reason="checks the message off Windows")
def test_windows_source_says_it_is_windows_only() -> None:
    with pytest.raises(IdleUnavailable, match="only on Windows"):
        WindowsIdle()


def test_macos_hid_idle_time_from_ioreg_output() -> None:
    out = '  |   "HIDIdleTime" = 2500000000\n  |   "HIDKeyboardModifierMappingPairs" = ()\n'
    assert MacIdle(runner=lambda argv: out).idle_seconds() == pytest.approx(2.5)
    with pytest.raises(IdleUnavailable, match="no HIDIdleTime"):
        MacIdle(runner=lambda argv: "nothing here")


@pytest.mark.skipif(sys.platform == "darwin", reason="checks the message off macOS")
def test_macos_source_says_it_is_macos_only() -> None:
    with pytest.raises(IdleUnavailable, match="only on macOS"):
        MacIdle()


def test_fixed_and_unknown_choices() -> None:
    source = open_idle_source("fixed:120")
    assert isinstance(source, FixedIdle) and source.idle_seconds() == 120.0
    with pytest.raises(ValueError, match="unknown idle source"):
        open_idle_source("keylogger")
    with pytest.raises(ValueError, match="fixed:120"):
        open_idle_source("fixed:soon")


def test_no_source_reads_key_values() -> None:
    """The X11 source asks only for XScreenSaverQueryInfo: no key, pointer or window-title calls."""
    text = subprocess.run(
        ["grep", "-Eo", r"X[A-Z][A-Za-z]+\(|X[A-Z][A-Za-z]+\.(argtypes|restype)", idle.__file__],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    called = {name.split("(")[0].split(".")[0] for name in text.split()}
    assert called <= {
        "XOpenDisplay",
        "XDefaultRootWindow",
        "XCloseDisplay",
        "XFree",
        "XScreenSaverQueryExtension",
        "XScreenSaverAllocInfo",
        "XScreenSaverQueryInfo",
        "XScreenSaverInfo",
    }, called
