"""``deskwatch run``: the daemon (what systemd starts)."""

from __future__ import annotations

import argparse
import logging
import sys

from deskwatch.commands.common import load_config_or_exit
from deskwatch_contract import exitcodes

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
    from deskwatch.vision.memory import lean_process

    # before any thread starts: the burst's frames go back to the kernel after a scan, and
    # resident memory is what is used whatever the kernel's huge-page policy (issue 13)
    lean_process()
    cfg = load_config_or_exit(args)
    from deskwatch.system.logs import print_error, setup_logging

    setup_logging(args.log_level or cfg.service.log_level, device_id=cfg.device.id)
    from deskwatch.app import Daemon
    from deskwatch.camera import CameraError
    from deskwatch.vision.runtime import ModelError
    from deskwatch_contract.sqlite import DatabaseUnavailable

    try:
        daemon = Daemon(cfg)
    except CameraError as exc:
        log.error("cannot set up the camera: %s", exc)
        return exitcodes.UNAVAILABLE
    except ModelError as exc:  # a corrupt, replaced or missing model file, or no TFLite runtime
        from deskwatch.app import models_remedy

        log.error("cannot load the detectors: %s; %s", exc.what, models_remedy(cfg, exc.path))
        return exitcodes.UNAVAILABLE
    except DatabaseUnavailable as exc:  # a full disk, a file someone else owns: kept as it is, not moved aside
        log.error("cannot start: %s", exc)
        return exitcodes.UNAVAILABLE
    except (FileNotFoundError, PermissionError) as exc:
        log.error("cannot start: %s", exc)
        return exitcodes.UNAVAILABLE
    except ImportError as exc:
        log.error("a required package is missing: %s; reinstall deskwatch with its extras", exc)
        print_error(f"deskwatch run: missing package: {exc}", sys.stderr)
        return exitcodes.UNAVAILABLE
    return daemon.run(max_scans=args.max_scans)
