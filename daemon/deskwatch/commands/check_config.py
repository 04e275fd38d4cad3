"""``deskwatch check-config``: validate a config file without starting anything."""

from __future__ import annotations

import argparse
import sys

from deskwatch.config import ConfigError, load_config
from deskwatch_contract import exitcodes

NAME = "check-config"
HELP = "validate a config file: exit 0 if valid, 78 with every error and its line otherwise"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="config file to check (default: --config)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing when valid")


def run(args: argparse.Namespace) -> int:
    path = args.file or args.config
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return exitcodes.CONFIG
    if not args.quiet:
        print(
            f"{path}: OK (device {cfg.device.site}/{cfg.device.id}, profile {cfg.policy.profile}, "
            f"camera {cfg.camera.backend}, schedule {cfg.schedule.mode})"
        )
    return 0
