"""``deskwatch check-config``: validate a config file without starting anything."""

from __future__ import annotations

import argparse
import os
import sys

from deskwatch.config import Config, ConfigError, load_config
from deskwatch.technician import service_user
from deskwatch_contract import exitcodes

NAME = "check-config"
HELP = "validate a config file: exit 0 if valid, 78 with every error and its line otherwise"
DESCRIPTION = (
    "Validates every key and that the files it names exist and can be read. Run as root, it also "
    "checks that the daemon's user (--service-user) can read the config and those files, as the "
    "daemon must: root reads anything."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="config file to check (default: --config)")
    parser.add_argument("--quiet", "-q", action="store_true", help="print nothing when valid")
    parser.add_argument(
        "--service-user",
        default=service_user.SERVICE_USER,
        metavar="USER",
        help=f"the daemon's user, whose access is checked when run as root (default {service_user.SERVICE_USER})",
    )


def run(args: argparse.Namespace) -> int:
    path = args.file or args.config
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return exitcodes.CONFIG
    readers = ""
    if os.geteuid() == 0:
        problems, readers = _for_the_daemon(cfg, path, args.service_user)
        if problems:
            print(
                f"{path}: valid, but the daemon's user {args.service_user} could not open it all "
                "(the daemon would stop with exit 78):\n" + "".join(f"  - {p}\n" for p in problems),
                file=sys.stderr,
                end="",
            )
            return exitcodes.CONFIG
    if not args.quiet:
        print(
            f"{path}: OK (device {cfg.device.site}/{cfg.device.id}, profile {cfg.policy.profile}, "
            f"camera {cfg.camera.backend}, schedule {cfg.schedule.mode}){readers}"
        )
    return 0


def _for_the_daemon(cfg: Config, path: str, user: str) -> tuple[list[str], str]:
    """Root passed every read above: judge the config and the files it names for the
    daemon's user instead. (problems, what the OK line adds about who was checked)."""
    account = service_user.service_account(user)
    if account is None:
        return [], f"; checked as root only: there is no user {user} here to check the daemon's access for"
    if account.uid == 0:
        return [], ""
    problems = []
    for item in service_user.daemon_reads(cfg, path):
        denied = service_user.access_problem(item.path, account, item.want)
        if denied is not None:
            problems.append(f"{denied} ({item.key}); {service_user.fix_for(item, denied, account)}")
    return problems, f"; {user}, the daemon's user, can read it and the files it names"
