"""``deskwatch selftest``: is this desk covered properly? A PASS/WARN/FAIL table, a remedy per problem."""

from __future__ import annotations

import argparse
import json
import os
import sys

from deskwatch.commands.common import load_config_or_exit
from deskwatch.config import Config
from deskwatch.domain import Frame, FrameAnalysis
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
        write_framing_picture(cfg, args.snapshot, result.snapshot_frame, result.analysis)
    head = header(cfg)
    if args.json:
        print(json.dumps({"ok": not result.failed, **head, "checks": [r.to_json() for r in result.results]}, indent=2))
    else:
        print(render_header(head))
        print(render_table(result.results))
    return exitcodes.FAIL if any(r.status == FAIL for r in result.results) else 0


def write_framing_picture(cfg: Config, path: str, frame: Frame | None, analysis: FrameAnalysis | None) -> bool:
    """``--snapshot``: the anonymised framing picture, recorded in the audit trail; a clear
    line on stderr whether it was written or not (the checks' table still follows)."""
    if frame is None:
        print(f"no snapshot written to {path}: the camera delivered no frame", file=sys.stderr)
        return False
    if analysis is None:
        print(
            f"no snapshot written to {path}: the framing check did not analyse the frame (skipped, or the "
            "models failed), so the people in it could not be found and blurred; run the selftest without "
            "`--skip framing` once the models check passes",
            file=sys.stderr,
        )
        return False
    from deskwatch.technician.selftest import record_camera_use
    from deskwatch.technician.snapshot import write_snapshot

    try:
        blurred = write_snapshot(path, frame, analysis, cfg.policy)
    except OSError as exc:
        print(
            f"no snapshot written to {path}: {exc.strerror or exc} (is the folder there and writable?)", file=sys.stderr
        )
        return False
    where = os.path.abspath(path)
    record_camera_use(cfg, "selftest", {"path": where, **blurred.to_json()}, kind="selftest_snapshot")
    sharp = "the worker at the desk left sharp" if blurred.worker_sharp else "nobody placed at the desk"
    print(
        f"framing picture written to {where} ({blurred.faces} face(s) and {blurred.bodies} person box(es) "
        f"blurred, {sharp}; it shows the desk: delete it when the camera is aimed)",
        file=sys.stderr,
    )
    return True
