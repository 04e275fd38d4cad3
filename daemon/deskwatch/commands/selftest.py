"""``deskwatch selftest``: is this desk covered properly? A PASS/WARN/FAIL table, a remedy per problem."""

from __future__ import annotations

import argparse
import json
import sys

from deskwatch.commands.common import load_config_or_exit
from deskwatch.technician.selftest import CHECKS, FAIL, header, render_header, render_table, run_selftest
from deskwatch_contract import exitcodes

NAME = "selftest"
HELP = "check camera, light, models, broker, clock, disk and permissions; exit 1 on any FAIL"
DESCRIPTION = (
    "Runs every appliance check and prints a PASS/WARN/FAIL table with what to do about each "
    "problem. Checks: " + ", ".join(CHECKS) + ". Exit status 1 when any check FAILs."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--snapshot", metavar="OUT.jpg", help="write an annotated framing picture (desk zone, people, faces, light)"
    )
    parser.add_argument(
        "--skip", action="append", default=[], metavar="CHECK", help=f"skip a check (repeatable): {', '.join(CHECKS)}"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of the table")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    unknown = [s for s in args.skip if s not in CHECKS]
    if unknown:
        print(f"deskwatch selftest: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return exitcodes.USAGE
    cfg = load_config_or_exit(args)

    def progress(i: int, n: int, name: str) -> None:
        if not args.quiet:
            print(f"[{i}/{n}] checking {name} ...", file=sys.stderr, flush=True)

    result = run_selftest(cfg, config_path=args.config, skip=args.skip, progress=progress)
    if args.snapshot:
        frame = result.snapshot_frame
        if frame is None:
            print(f"no snapshot written to {args.snapshot}: the camera delivered no frame", file=sys.stderr)
        else:
            from deskwatch.technician.snapshot import write_snapshot

            path = write_snapshot(
                args.snapshot,
                frame,
                result.analysis,
                cfg.policy.desk_zone,
                cfg.policy.rules.away_from_desk.min_overlap,
            )
            print(f"framing picture written to {path}", file=sys.stderr)
    head = header(cfg)
    if args.json:
        print(json.dumps({"ok": not result.failed, **head, "checks": [r.to_json() for r in result.results]}, indent=2))
    else:
        print(render_header(head))
        print(render_table(result.results))
    return exitcodes.FAIL if any(r.status == FAIL for r in result.results) else 0
