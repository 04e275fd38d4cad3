"""``deskwatch run``: the daemon (what systemd starts)."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import load_config_or_exit

NAME = "run"
HELP = "run the daemon: scans on schedule, publishes to the broker (systemd runs this)"

log = logging.getLogger("deskwatch")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-scans", type=int, default=None, metavar="N", help="stop after N scans (technicians, tests)"
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default=None, help="override service.log_level"
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args)
    from ..service.logs import setup_logging

    setup_logging(args.log_level or cfg.service.log_level, device_id=cfg.device.id)
    from ..app import Daemon
    from ..camera import CameraError
    from ..vision.runtime import ModelError

    try:
        daemon = Daemon(cfg)
    except CameraError as exc:
        log.error("cannot set up the camera: %s", exc)
        return 69
    except ModelError as exc:  # a corrupt, replaced or missing model file, or no TFLite runtime
        log.error("cannot load the detectors: %s", exc)
        return 69
    except (FileNotFoundError, PermissionError) as exc:
        log.error("cannot start: %s", exc)
        return 69
    except ImportError as exc:
        log.error("a required package is missing: %s; reinstall deskwatch with its extras", exc)
        print(f"deskwatch run: missing package: {exc}", file=sys.stderr)
        return 69
    return daemon.run(max_scans=args.max_scans)
