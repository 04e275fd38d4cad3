"""``deskwatch aim``: live framing in the terminal (desk zone, people, faces), stops by itself."""

from __future__ import annotations

import argparse
import shutil
import sys

from deskwatch.commands.common import load_config_or_exit, seconds
from deskwatch_contract import exitcodes

NAME = "aim"
HELP = "show the camera's live framing in this terminal (desk zone and boxes) while you aim it"
DESCRIPTION = (
    "Draws what the camera sees, through the daemon's own detectors, with the desk zone, people "
    "(green inside it, grey outside), faces and phones, about once a second, in 24-bit colour half "
    "blocks (any SSH terminal). Stops by itself after --seconds (at most 600). Nothing is saved or "
    "sent; the camera use is recorded in the audit trail. Stop the daemon first if the camera is busy."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seconds", type=seconds, default=120.0, help="stop after this long (default 120, max 600)")
    parser.add_argument("--interval", type=seconds, default=1.0, help="seconds between frames (default 1)")
    parser.add_argument("--columns", type=int, default=0, help="picture width in characters (default: the terminal)")


def run(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from deskwatch.app import build_vision, tool_models_dir
    from deskwatch.camera import CameraError, open_camera
    from deskwatch.domain import Frame
    from deskwatch.technician.aim import AimView, run_aim
    from deskwatch.technician.selftest import record_camera_use

    cfg = load_config_or_exit(args)
    columns = args.columns or max(20, min(160, shutil.get_terminal_size((80, 24)).columns))
    directory, _source, note = tool_models_dir(cfg, "aim")
    if note:
        print(f"deskwatch aim: {note}", file=sys.stderr)
    try:
        vision = build_vision(cfg, models_dir=directory)
    except Exception as exc:
        print(f"deskwatch aim: the vision stage does not start: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    shown = 0
    try:
        camera = open_camera(cfg.camera)
        camera.open()  # once for the whole session: reopening a Pi camera per frame takes a second
        try:
            record_camera_use(cfg, "aim", {"seconds": min(args.seconds, 600.0), "kept": "none (terminal only)"})
            view = AimView(vision.analyze, cfg.policy, columns)
            shown = run_aim(
                view,
                lambda: Frame(camera.capture(), datetime.now(UTC)),
                sys.stdout,
                seconds=args.seconds,
                interval=args.interval,
            )
        finally:
            camera.close()
    except CameraError as exc:
        print(f"deskwatch aim: camera: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except KeyboardInterrupt:
        print("\naim stopped", file=sys.stderr)
        return exitcodes.OK
    finally:
        vision.close()
    print(f"aim stopped after {shown} frames ({min(args.seconds, 600.0):.0f} s)", file=sys.stderr)
    return exitcodes.OK
