"""``deskwatch pause --reason "fetch water" --minutes 5``: pause the checks."""

from __future__ import annotations

import argparse
import sys
from datetime import tzinfo
from zoneinfo import ZoneInfo

from deskwatch.commands.common import load_config_or_exit
from deskwatch_contract import exitcodes

NAME = "pause"
HELP = "pause the desk checks for a number of minutes, with a reason (talks to the running daemon)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", "-r", required=True, help='why, e.g. "fetch water" (at most 120 characters)')
    parser.add_argument("--minutes", "-m", required=True, type=int, help="how long, 1 to 120 minutes")


def not_running(path: object, why: str) -> int:
    print(
        f"deskwatch: the deskwatch daemon is not running or cannot be reached ({why}).\n"
        "Start it with 'systemctl start deskwatch', then try again.",
        file=sys.stderr,
    )
    del path
    return exitcodes.UNAVAILABLE


def describe(status: dict[str, object], tz: tzinfo | None = None) -> str:
    """The daemon's pause status in words, its end in ``tz`` (the desk's zone, schedule.timezone;
    None: the system's, which on the appliance is UTC)."""
    from datetime import datetime

    if not status.get("paused"):
        return "Checks are running (not paused)."
    ends = str(status.get("ends_at", ""))
    try:
        local = datetime.fromisoformat(ends.replace("Z", "+00:00")).astimezone(tz).strftime("%H:%M %Z")
    except ValueError:
        local = ends
    return f'Paused: "{status.get("reason")}" for {status.get("minutes")} min, until {local}.'


def run(args: argparse.Namespace) -> int:
    from deskwatch.policy.pause import PauseError, check_pause_request
    from deskwatch.system.control import ControlRejected, ControlUnavailable, control_socket_path, send_control

    cfg = load_config_or_exit(args)
    try:
        reason, minutes = check_pause_request(args.reason, args.minutes, cfg.policy.max_pause_minutes)
    except PauseError as exc:
        print(f"deskwatch pause: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    path = control_socket_path(cfg.state_dir)
    try:
        reply = send_control(path, "pause", reason=reason, minutes=minutes)
    except ControlUnavailable as exc:
        return not_running(path, str(exc))
    except ControlRejected as exc:
        print(f"deskwatch pause: the daemon refused: {exc}", file=sys.stderr)
        return exitcodes.FAIL
    from deskwatch.commands.history import shown

    print(shown(describe(dict(reply.get("status") or {}), ZoneInfo(cfg.schedule.timezone))))  # the daemon's words
    print("Checks restart by themselves when the time is up; run 'deskwatch resume' when you are back.")
    return 0
