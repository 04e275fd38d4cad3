"""``deskwatch selftest``: is this desk covered properly? A PASS/WARN/FAIL table, a remedy per problem."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from deskwatch.commands.common import load_config_or_exit
from deskwatch.config import Config
from deskwatch.domain import Frame, FrameAnalysis
from deskwatch.technician import service_user
from deskwatch.technician.selftest import CHECKS, FAIL, header, render_header, render_table, run_selftest
from deskwatch_contract import exitcodes

NAME = "selftest"
HELP = "check camera, light, models, broker, clock, disk and permissions; exit 1 on any FAIL"
DESCRIPTION = (
    "Runs every appliance check and prints a PASS/WARN/FAIL table with what to do about each "
    "problem. Checks: " + ", ".join(CHECKS) + ". Exit status 1 when any check FAILs. "
    "Started as root, the checks run as the daemon's user (--service-user) with the groups its "
    "unit gives it, so that they see the files and the camera as the daemon will."
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
    parser.add_argument(
        "--service-user",
        default=service_user.SERVICE_USER,
        metavar="USER",
        help=f"the daemon's user: started as root, the checks run as it (default {service_user.SERVICE_USER})",
    )


def run(args: argparse.Namespace) -> int:
    unknown = [s for s in args.skip if s not in CHECKS]
    if unknown:
        print(f"deskwatch selftest: unknown check(s) {', '.join(unknown)}; known: {', '.join(CHECKS)}", file=sys.stderr)
        return exitcodes.USAGE
    cfg = load_config_or_exit(args)  # what is wrong in it, whoever may read it
    if os.geteuid() == 0:
        account = service_user.service_account(args.service_user)
        if account is None:
            print(
                f"deskwatch selftest: there is no user {args.service_user!r} (the image creates it with "
                "sysusers.d). The checks never run as root, which may open every file the daemon may not: "
                "name the daemon's user with --service-user",
                file=sys.stderr,
            )
            return exitcodes.FAIL
        if account.uid != 0:
            return run_as_service_user(args, account)

    def progress(i: int, n: int, name: str) -> None:
        if not args.quiet:
            print(f"[{i}/{n}] checking {name} ...", file=sys.stderr, flush=True)

    result = run_selftest(
        cfg, config_path=args.config, skip=args.skip, progress=progress, service_user=args.service_user
    )
    if args.snapshot:
        write_framing_picture(cfg, args.snapshot, result.snapshot_frame, result.analysis)
    head = header(cfg, service_user=args.service_user)
    if args.json:
        print(json.dumps({"ok": not result.failed, **head, "checks": [r.to_json() for r in result.results]}, indent=2))
    else:
        print(render_header(head))
        print(render_table(result.results))
    return exitcodes.FAIL if any(r.status == FAIL for r in result.results) else 0


def run_as_service_user(args: argparse.Namespace, account: service_user.Account) -> int:
    """``sudo deskwatch selftest``: the same command again in a child process with the daemon's
    uid, gid and groups (as deskwatch.service starts it); its table and exit status are ours.

    Root may read a 0600 root config or certificate, create root-owned files in the state
    directory and open the camera without the video group: none of which the daemon can."""
    extra = [flag for flag, on in (("--json", args.json), ("--quiet", args.quiet)) if on]
    if args.snapshot:
        out = os.path.abspath(args.snapshot)
        folder = os.path.dirname(out)
        while not os.path.isdir(folder) and folder != os.path.dirname(folder):
            folder = os.path.dirname(folder)  # the folder write_snapshot would create it in
        denied = service_user.access_problem(folder, account, "wx")
        if denied is not None:
            print(
                f"deskwatch selftest: no snapshot can be written to {out}: the checks run as {account.name}, "
                f"and {denied}; pass --snapshot a path in a folder it may write, e.g. /tmp/aim.jpg",
                file=sys.stderr,
            )
            return exitcodes.USAGE
        extra += ["--snapshot", out]
    argv = service_user.selftest_argv(args.config, account.name, args.skip, *extra)
    if not args.quiet:
        print(f"running the checks as {account.describe()}, the daemon's user, not as root", file=sys.stderr)
    try:
        done = service_user.run_as_user(account.name, argv, timeout=service_user.SELFTEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        print(
            f"deskwatch selftest: not finished in {service_user.SELFTEST_TIMEOUT:.0f} s as {account.name}",
            file=sys.stderr,
        )
        return exitcodes.FAIL
    except (LookupError, OSError) as exc:
        print(
            f"deskwatch selftest: cannot be started as {account.name} ({exc}); it never runs as root", file=sys.stderr
        )
        return exitcodes.FAIL
    sys.stdout.write(service_user.printable(done.stdout))  # the daemon's user's process wrote it
    if done.returncode == exitcodes.CONFIG:
        print(
            f"deskwatch selftest: the daemon's user {account.name} cannot load {os.path.abspath(args.config)} "
            "(above): the daemon would stop the same way (exit 78, not restarted)",
            file=sys.stderr,
        )
    return done.returncode


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
