"""``deskwatch resume``: end a pause now."""

from __future__ import annotations

import argparse
import sys

from deskwatch.commands.common import load_config_or_exit
from deskwatch_contract import exitcodes

NAME = "resume"
HELP = "end a pause: checks continue (talks to the running daemon)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options besides --config


def run(args: argparse.Namespace) -> int:
    from deskwatch.commands.pause import not_running
    from deskwatch.system.control import ControlRejected, ControlUnavailable, control_socket_path, send_control

    cfg = load_config_or_exit(args)
    path = control_socket_path(cfg.state_dir)
    try:
        reply = send_control(path, "resume")
    except ControlUnavailable as exc:
        return not_running(path, str(exc))
    except ControlRejected as exc:
        print(f"deskwatch resume: the daemon refused: {exc}", file=sys.stderr)
        return exitcodes.FAIL
    if reply.get("was_paused"):
        print("Resumed: checks continue.")
    else:
        print("Not paused: checks were already running.")
    return 0
