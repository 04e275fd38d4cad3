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
    import time
    from datetime import UTC, datetime

    from deskwatch.app import build_vision, tool_models_dir
    from deskwatch.camera import CameraError, open_camera
    from deskwatch.domain import Frame
    from deskwatch.technician.aim import MAX_SECONDS, AimView, run_aim
    from deskwatch.technician.selftest import finish_camera_use, record_camera_use

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
    asked = min(args.seconds, MAX_SECONDS)
    what = {"asked_seconds": asked, "kept": "none (terminal only)"}
    frames = 0
    open_seconds = 0.0
    row: int | None = None
    stopped = "by itself"

    def capture() -> Frame:
        nonlocal frames
        frame = Frame(camera.capture(), datetime.now(UTC))
        frames += 1
        return frame

    try:
        camera = open_camera(cfg.camera)
        camera.open()  # once for the whole session: reopening a Pi camera per frame takes a second
        opened = time.monotonic()
        try:
            # recorded before the first frame (a session killed outright still shows), and completed
            # below with how long the camera really was open: stopped early, or failing, it is not
            # the time asked for
            row = record_camera_use(cfg, "aim", what)
            view = AimView(vision.analyze, cfg.policy, columns)
            run_aim(view, capture, sys.stdout, seconds=args.seconds, interval=args.interval)
        except CameraError as exc:
            stopped = f"the camera failed: {exc}"
            raise
        except KeyboardInterrupt:
            stopped = "Ctrl-C"
            raise
        except BaseException as exc:
            stopped = f"an error: {type(exc).__name__}"
            raise
        finally:
            camera.close()
            open_seconds = round(time.monotonic() - opened, 1)
            if row is not None:
                finish_camera_use(
                    cfg, row, {**what, "open_seconds": open_seconds, "frames": frames, "stopped": stopped}
                )
    except CameraError as exc:
        print(f"deskwatch aim: camera: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
    except KeyboardInterrupt:
        print(f"\naim stopped after {frames} frames (the camera was open {open_seconds:.0f} s)", file=sys.stderr)
        return exitcodes.OK
    finally:
        vision.close()
    print(f"aim stopped after {frames} frames (the camera was open {open_seconds:.0f} s)", file=sys.stderr)
    return exitcodes.OK
