"""``deskwatch jobs``: the root side of remote jobs, and what the device has done lately."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path
from typing import Any

from deskwatch.commands.common import seconds
from deskwatch.config import ConfigError, load_config
from deskwatch_contract import exitcodes

NAME = "jobs"
HELP = "remote jobs: run the queued config/software jobs (root), or list recent ones"
DESCRIPTION = (
    "run-queued (deskwatch-jobs.service, as root) verifies and runs the jobs the daemon queued: "
    "config changes (validated like check-config, rolled back if the daemon does not come back) and "
    "software updates (A/B); status lists queued jobs, outcomes not yet published and the last results."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    p = sub.add_parser("run-queued", help="run every queued job (root)")
    p.add_argument("--ready-timeout", type=seconds, default=300.0, metavar="S")
    p.add_argument("--settle", type=seconds, default=20.0, metavar="S")
    sub.add_parser("status", help="queued jobs, unpublished outcomes, recent results")


def run(args: argparse.Namespace) -> int:
    from deskwatch.jobs.executor import jobs_dirs, run_queued
    from deskwatch.system.files import UnsafePath
    from deskwatch.system.logs import setup_logging

    if not logging.getLogger().handlers:
        setup_logging("info")
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return exitcodes.CONFIG
    state_dir = Path(cfg.state_dir)
    if args.action == "run-queued":
        try:
            outcomes = run_queued(state_dir, Path(args.config), ready_timeout=args.ready_timeout, settle=args.settle)
        except UnsafePath as exc:
            print(
                f"deskwatch jobs: {exc.strerror}: no job run; remove the link and let the daemon re-create it",
                file=sys.stderr,
            )
            return exitcodes.FAIL
        for o in outcomes:
            print(f"{o.job_id} ({o.kind}): {o.status} at {o.step}: {o.detail}")
        return exitcodes.FAIL if any(o.status in ("failed", "rejected") for o in outcomes) else exitcodes.OK
    queue_dir, done_dir = jobs_dirs(state_dir)
    seen, problem = read_seen(state_dir / "jobs")
    print(
        json.dumps(
            {
                "queued": sorted(p.stem for p in queue_dir.glob("*.json")) if queue_dir.is_dir() else [],
                "unpublished": sorted(p.stem for p in done_dir.glob("*.json")) if done_dir.is_dir() else [],
                "results": seen,
            },
            indent=1,
        )
    )
    if problem:
        print(f"deskwatch jobs: the last results cannot be shown: {problem}", file=sys.stderr)
        return exitcodes.FAIL
    return exitcodes.OK


SEEN_LIMIT = 1 << 20  # the daemon keeps the last 500 results: some 50 KB


def read_seen(jobs_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The daemon's ``seen.json`` (job id -> last status), and why it cannot be shown.

    Root reads it here from a directory the daemon's user owns and writes: so without
    following a link, nor waiting on a FIFO, nor reading more than :data:`SEEN_LIMIT`,
    and a document nested beyond the parser's depth is a reason, not a traceback."""
    from deskwatch.system.files import SafeDir, UnsafePath

    path = jobs_dir / "seen.json"
    remedy = f"the daemon writes it again at its next job; remove it meanwhile (rm {path})"
    try:
        with SafeDir(jobs_dir) as directory:
            raw = directory.read_bytes("seen.json", SEEN_LIMIT)
    except FileNotFoundError:
        return {}, None
    except OSError as exc:
        why = exc.strerror or str(exc)
        if exc.errno == errno.ELOOP and not isinstance(exc, UnsafePath):
            why = f"{path} is a symbolic link, not a file"
        return {}, f"{why}; {remedy}"
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        return {}, f"{path} is not the JSON the daemon writes ({type(exc).__name__}); {remedy}"
    if not isinstance(data, dict):
        return {}, f"{path} is not a JSON object; {remedy}"
    return data, None
