"""``deskwatch provision``: apply the technician's bundle from the boot partition, then selftest."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deskwatch.technician.provision import SERVICE_USER, BundleError, provision, write_result
from deskwatch.technician.service_user import SELFTEST_TIMEOUT, selftest_as_user
from deskwatch_contract import exitcodes
from deskwatch_contract.cliargs import seconds_at_least

NAME = "provision"
HELP = "validate the bundle on the boot partition, install config and secrets, run the selftest"
DESCRIPTION = (
    "Reads BUNDLE/bundle.yaml, device.crt, device.key and ca.crt (default /boot/firmware/deskwatch), "
    "checks all of it, installs the secrets (0600) and config.yaml in the --config directory, "
    "deletes the secrets from the bundle and runs the selftest. A broken bundle changes nothing "
    "(exit 78). Exit 1 when the selftest fails (or is cut short at --selftest-timeout) after a successful install."
)
DEFAULT_BUNDLE = "/boot/firmware/deskwatch"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bundle", default=DEFAULT_BUNDLE, metavar="DIR", help=f"bundle directory (default {DEFAULT_BUNDLE})"
    )
    parser.add_argument(
        "--root",
        default=os.environ.get("DESKWATCH_ROOT", ""),
        metavar="DIR",
        help="prefix for --bundle and --config, for tests; env DESKWATCH_ROOT",
    )
    parser.add_argument("--skip-selftest", action="store_true", help="install only; do not run the selftest")
    parser.add_argument(
        "--skip", action="append", default=[], metavar="CHECK", help="selftest check to skip (repeatable)"
    )
    parser.add_argument(
        "--selftest-timeout",
        type=seconds_at_least(1),
        default=SELFTEST_TIMEOUT,
        metavar="SECONDS",
        help=(
            f"end the selftest (run as the service user when run as root) after this long and say so "
            f"(default {SELFTEST_TIMEOUT:.0f}); deskwatch-provision.service's TimeoutStartSec must leave room for it"
        ),
    )
    parser.add_argument(
        "--service-user",
        default=SERVICE_USER,
        metavar="USER",
        help=f"the daemon's user: owns the key, and the selftest runs as it when run as root (default {SERVICE_USER})",
    )


def _rooted(root: str, path: str) -> Path:
    return Path(root) / path.lstrip("/") if root else Path(path)


def _stamp() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC"


def run(args: argparse.Namespace) -> int:
    from deskwatch.system.logs import setup_logging

    if not logging.getLogger().handlers:
        setup_logging("info")
    bundle_dir = _rooted(args.root, args.bundle)
    config_path = _rooted(args.root, args.config)
    log.info("provisioning from %s into %s", bundle_dir, config_path.parent)
    try:
        applied = provision(bundle_dir, config_path, service_user=args.service_user)
    except BundleError as exc:
        for problem in exc.problems:
            log.error(
                "provisioning refused: %s",
                problem,
                extra={"journal": {"DESKWATCH_EVENT": "provision_refused"}},
            )
        text = (
            f"deskwatch provisioning REFUSED at {_stamp()}; nothing was changed on the device.\n"
            "Fix these and boot again:\n" + "".join(f"  - {p}\n" for p in exc.problems)
        )
        if bundle_dir.is_dir():
            write_result(bundle_dir, text)
        print(text, file=sys.stderr, end="")
        return exitcodes.CONFIG
    cfg = applied.config
    log.info(
        "provisioned %s/%s (worker %s, broker %s:%d); removed %s from %s",
        cfg.device.site,
        cfg.device.id,
        cfg.device.worker_id,
        cfg.mqtt.host,
        cfg.mqtt.port,
        ", ".join(applied.removed_from_bundle) or "nothing",
        bundle_dir,
        extra={"journal": {"DESKWATCH_EVENT": "provisioned", "DEVICE_ID": cfg.device.id}},
    )
    report = (
        f"deskwatch provisioned at {_stamp()}: device {cfg.device.site}/{cfg.device.id}, "
        f"worker {cfg.device.worker_id}, broker {cfg.mqtt.host}:{cfg.mqtt.port}.\n"
        f"Secrets moved to {applied.etc_dir} and deleted from this card.\n"
    ) + _handover_note(cfg)
    if args.skip_selftest:
        write_result(bundle_dir, report)
        print(report, end="")
        return 0
    # On the card before the selftest starts: if the unit's time limit (or a power cut) ends
    # provisioning during it, the technician reads that the config is in and the selftest is not known.
    write_result(
        bundle_dir,
        report + f"\nSelftest: started at {_stamp()} and NOT finished (provisioning was cut off during it). "
        "Run `sudo deskwatch selftest` at the desk to check the device.\n",
    )
    if os.geteuid() == 0:
        # Root installed the files; the checks run with the daemon's rights, not root's.
        code, table = selftest_as_user(args.service_user, config_path, args.skip, timeout=args.selftest_timeout)
    else:
        code, table = _selftest_here(cfg, config_path, args.skip, args.service_user)
    write_result(bundle_dir, report + "\nSelftest:\n" + table + "\n")
    print(report + "\n" + table)
    if code != 0:
        log.warning(
            "provisioned, but the selftest failed: see %s",
            bundle_dir / "provision-result.txt",
            extra={"journal": {"DESKWATCH_EVENT": "selftest_failed"}},
        )
        return exitcodes.FAIL
    return 0


def _handover_note(cfg: Any) -> str:
    """What the technician must know when this desk was another worker's (or at another site)."""
    from deskwatch.handover import read_holder

    before = read_holder(cfg.state_dir)
    worker, site = cfg.device.worker_id, cfg.device.site
    if before is None:
        return ""
    if before.new_holder:
        was = f"the previous holder of worker id {worker}"
        head = f"Worker id {worker} now names another person (deskwatch new-holder). "
    elif (before.worker_id, before.site) == (worker, site):
        return (
            f"Same worker as before ({worker}). If this id now names another person (the collector's users add "
            "... --new-holder), run deskwatch new-holder before the service starts, or the new person is checked "
            "against the previous holder's face templates and shown their history.\n"
        )
    else:
        was = before.worker_id
        head = f"This desk was worker {was}'s (site {before.site}) and is now worker {worker}'s (site {site}). "
    return head + (
        f"When the service starts it ends {was}'s pause without reporting it, deletes {was}'s face templates "
        f"from the device, and shows {worker} none of {was}'s history; what was queued before goes out under "
        "the id it was recorded with.\n"
        f"Enrol the new worker at the desk, with their consent: deskwatch enroll --worker {worker} --consent "
        "--camera config\n"
    )


def _selftest_here(cfg: Any, config_path: Path, skip: list[str], service_user: str) -> tuple[int, str]:
    from deskwatch.technician.selftest import render_table, run_selftest

    def progress(i: int, n: int, name: str) -> None:
        print(f"[{i}/{n}] checking {name} ...", file=sys.stderr, flush=True)

    result = run_selftest(cfg, config_path=str(config_path), skip=skip, progress=progress, service_user=service_user)
    return (1 if result.failed else 0), render_table(result.results)
