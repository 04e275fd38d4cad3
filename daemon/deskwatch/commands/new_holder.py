"""``deskwatch new-holder``: this desk's worker id now names another person than before."""

from __future__ import annotations

import argparse
import sys

from deskwatch.commands.common import load_config_or_exit
from deskwatch_contract import exitcodes

NAME = "new-holder"
HELP = "the worker id now names another person: forget the previous holder's templates, pause and history"
DESCRIPTION = (
    "For a worker id handed to a new employee (the collector's 'users add ... --new-holder'), the desk "
    "provisioned again with the same device.worker_id: records in the state directory that the next start "
    "of the service takes the desk over as from another worker (the previous holder's pause ends unreported, "
    "their face templates are deleted, the new holder is shown none of their history). Then restart the "
    "service and enrol the new holder."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options besides --config


def run(args: argparse.Namespace) -> int:
    from deskwatch.handover import mark_new_holder

    cfg = load_config_or_exit(args)
    worker = cfg.device.worker_id
    try:
        if not mark_new_holder(cfg.state_dir, worker, cfg.device.site):
            print(f"Nothing to forget: {cfg.state_dir} does not exist, the service has not run on this device yet.")
            return 0
    except OSError as exc:
        print(
            f"deskwatch new-holder: cannot record it in {cfg.state_dir}: {exc.strerror or exc}; run it as root",
            file=sys.stderr,
        )
        return exitcodes.FAIL
    print(
        f"Recorded: worker id {worker} now names another person. At its next start (sudo systemctl restart "
        f"deskwatch) the service ends the previous holder's pause without reporting it, deletes their face "
        "templates and shows the new holder none of their history.\n"
        f"Then enrol the new holder at the desk, with their consent: deskwatch enroll --worker {worker} --consent "
        "--camera config"
    )
    return 0
