"""The CLI: every command has --help and --config; no command crashes with a traceback on bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from deskwatch.cli import _command_modules, build_parser, main

COMMANDS = [m.NAME for m in _command_modules()]


def test_the_documented_commands_exist() -> None:
    for name in ["run", "check-config", "schedule", "example-config"]:
        assert name in COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help_and_takes_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--config" in out and len(out.strip().splitlines()) >= 3


def test_no_command_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "run" in capsys.readouterr().err


def test_unknown_option_is_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["run", "--frobnicate"])
    assert info.value.code == 2


def test_python_dash_m_and_console_script_agree() -> None:
    out = subprocess.run([sys.executable, "-m", "deskwatch", "--version"], capture_output=True, text=True, check=True)
    script = Path(sys.executable).with_name("deskwatch")
    out2 = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout == out2.stdout and out.stdout.startswith("deskwatch ")


def test_schedule_simulation_command(write_config: object, capsys: pytest.CaptureFixture[str]) -> None:
    assert callable(write_config)
    path = write_config(
        "schedule: {mode: random, scans_per_hour: 3, min_gap_minutes: 3, interval_seconds: 300, "
        "timezone: Europe/Berlin, shifts: [{days: [mon, tue, wed, thu, fri], start: '09:00', end: '17:00'}]}"
    )
    rc = main(["schedule", "--config", str(path), "--days", "7", "--start", "2026-11-30T00:00:00+00:00"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "outside shifts: 0" in out and "40.0 shift hours" in out
