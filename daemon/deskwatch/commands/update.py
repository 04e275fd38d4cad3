"""``deskwatch update``: A/B software updates (install, confirm, status) and signing bundles."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from deskwatch.commands.common import seconds
from deskwatch_contract import exitcodes

NAME = "update"
HELP = "A/B software update: install a signed bundle, confirm a trial boot, show the state"
DESCRIPTION = (
    "install BUNDLE writes a signed bundle to the inactive slot and reboots into it once (tryboot); "
    "confirm (run at every boot by deskwatch-update-confirm.service) commits a trial slot that passes "
    "its health check or reboots back to the old one; status prints the slots and the last update; "
    "make-bundle signs two partition images into a bundle (release side: needs the private key)."
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    p = sub.add_parser("install", help="write BUNDLE to the inactive slot and start its trial boot")
    p.add_argument("bundle", type=Path)
    p.add_argument("--job-id", default=None, help="the remote job this install belongs to")
    p.add_argument("--no-reboot", action="store_true", help="write and arm the slot, but do not reboot")
    p.add_argument("--allow-downgrade", action="store_true", help="install a bundle older than the running version")
    p = sub.add_parser("confirm", help="commit or roll back a trial boot (runs at every boot)")
    p.add_argument("--ready-timeout", type=seconds, default=300.0, metavar="S")
    p.add_argument("--settle", type=seconds, default=30.0, metavar="S")
    sub.add_parser("status", help="slots, what the firmware booted, the last update (JSON)")
    p = sub.add_parser("make-bundle", help="sign a boot and a root image into a bundle (release side)")
    p.add_argument("--version", dest="bundle_version", required=True)
    p.add_argument("--boot", type=Path, required=True, help="FAT image of the boot partition")
    p.add_argument("--root", type=Path, required=True, help="ext4 image of the root partition")
    p.add_argument("--key", type=Path, required=True, help="Ed25519 private key (PEM)")
    p.add_argument("out", type=Path)


def run(args: argparse.Namespace) -> int:
    from ..system.logs import setup_logging
    from ..update.install import Health, System, confirm, install
    from ..update.slots import UpdateError, read_autoboot, read_state

    if not logging.getLogger().handlers:
        setup_logging("info")
    system = System()
    try:
        if args.action == "install":
            state = install(
                system,
                args.bundle,
                job_id=args.job_id,
                reboot=not args.no_reboot,
                allow_downgrade=args.allow_downgrade,
                progress=lambda step, detail: print(f"{step}: {detail}", file=sys.stderr, flush=True),
            )
            print(json.dumps(state, indent=1, sort_keys=True))
            return exitcodes.OK
        if args.action == "confirm":
            state = confirm(system, Health(args.ready_timeout, args.settle))
            print(json.dumps(state, indent=1, sort_keys=True))
            return exitcodes.OK if state.get("state") in (None, "committed", "rolled_back", "failed") else 1
        if args.action == "status":
            out: dict[str, object] = {"version": system.installed_version(), "last_update": read_state()}
            try:
                booted = system.booted()
                autoboot = read_autoboot()
                out.update(
                    booted_partition=booted.partition,
                    booted_slot=booted.slot.name,
                    tryboot=booted.tryboot,
                    committed_partition=autoboot.boot_partition,
                )
            except UpdateError as exc:
                out["ab"] = f"unavailable: {exc}"
            print(json.dumps(out, indent=1, sort_keys=True))
            return exitcodes.OK
        from ..update.bundle import write_bundle

        manifest = write_bundle(
            args.out,
            version=args.bundle_version,
            boot_image=args.boot,
            root_image=args.root,
            private_pem=args.key.read_bytes(),
        )
        print(f"{args.out}: deskwatch {manifest.version}, signed with key {manifest.key_id}")
        return exitcodes.OK
    except UpdateError as exc:
        log.error("update: %s", exc)
        print(f"deskwatch update {args.action}: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE if args.action != "make-bundle" else exitcodes.FAIL
    except OSError as exc:
        print(f"deskwatch update {args.action}: {exc}", file=sys.stderr)
        return exitcodes.UNAVAILABLE
