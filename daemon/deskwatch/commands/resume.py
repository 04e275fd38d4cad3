"""``deskwatch resume``: end a pause now."""

from __future__ import annotations

import argparse
import sys

from .common import load_config_or_exit

NAME = "resume"
HELP = "end a pause: checks continue (talks to the running daemon)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options besides --config


def run(args: argparse.Namespace) -> int:
    from ..control import ControlRejected, ControlUnavailable, control_socket_path, send_control
    from .pause import not_running

    cfg = load_config_or_exit(args)
    path = control_socket_path(cfg)
    try:
        reply = send_control(path, "resume")
    except ControlUnavailable as exc:
        return not_running(path, str(exc))
    except ControlRejected as exc:
        print(f"deskwatch resume: the daemon refused: {exc}", file=sys.stderr)
        return 1
    if reply.get("was_paused"):
        print("Resumed: checks continue.")
    else:
        print("Not paused: checks were already running.")
    return 0
