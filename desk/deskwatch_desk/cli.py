"""``deskwatch-desk``: the workstation companion's command line.

    deskwatch-desk run    [--config FILE]            report input idleness to the appliance
    deskwatch-desk pause  --reason TEXT --minutes N  ask the appliance for a pause
    deskwatch-desk resume                            end the pause
    deskwatch-desk window                            the pause window and what the appliance saw
    deskwatch-desk idle                              print the idle time once (which source works here)

Exit codes: 0 ok, 1 the appliance refused, 2 usage, 69 broker or appliance
unavailable (a pause/resume is then queued, or, when even that fails, said to be lost),
70 internal error, 78 config error.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deskwatch_contract import exitcodes
from deskwatch_contract.cliargs import seconds
from deskwatch_desk.link import LinkSetupError, default_config_path, user_state_dir

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"appliance-format config (device.* and mqtt.* are read); default {default_config_path()}",
    )
    common.add_argument(
        "--state-dir", type=Path, default=None, help=f"where queued requests wait; default {user_state_dir()}"
    )
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    parser = argparse.ArgumentParser(
        prog="deskwatch-desk",
        description="Workstation companion of a deskwatch appliance: idle time and the worker's pause button.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", parents=[common], help="report keyboard/mouse idle time to the appliance")
    run.add_argument(
        "--idle-source", default="auto", help="auto, x11, wayland, windows, macos, or fixed:SECONDS (demos/tests)"
    )
    run.add_argument("--every", type=seconds, default=30.0, help="report at least this often, seconds (default 30)")
    run.add_argument(
        "--min-gap", type=seconds, default=5.0, help="never report more often than this, seconds (at least 5)"
    )
    run.add_argument("--sample", type=seconds, default=1.0, help="read the idle time this often, seconds (default 1)")

    for name, helptext in (("pause", "ask the appliance to pause its checks"), ("resume", "end the pause")):
        p = sub.add_parser(name, parents=[common], help=helptext)
        if name == "pause":
            p.add_argument("--reason", required=True, help='why, in a few words, e.g. "fetch water"')
            p.add_argument("--minutes", type=int, required=True, help="how long, 1-120")
        p.add_argument("--wait", type=seconds, default=10.0, help="seconds to wait for the broker and for the answer")
        p.add_argument("--json", action="store_true", help="also print the appliance's result as JSON")

    sub.add_parser("window", parents=[common], help="the pause window, with the appliance's recent scans and findings")
    idle = sub.add_parser(
        "idle", parents=[common], help="print the seconds since the last input once, and which source measured it"
    )
    idle.add_argument("--idle-source", default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        if args.command == "idle":
            return cmd_idle(args)
        cfg = load_or_exit(args.config or default_config_path())
        state_dir = args.state_dir or user_state_dir()
        if args.command == "run":
            return cmd_run(args, cfg, state_dir)
        if args.command in ("pause", "resume"):
            return cmd_request(args, cfg, state_dir)
        try:
            from deskwatch_desk.window import run_window
        except ModuleNotFoundError as exc:
            if exc.name not in ("tkinter", "_tkinter"):
                raise
            print(
                "deskwatch-desk: the window needs Tk, which this Python lacks (on Debian: apt-get install "
                "python3-tk); 'deskwatch-desk pause' and 'resume' work without it",
                file=sys.stderr,
            )
            return exitcodes.UNAVAILABLE
        return run_window(cfg, state_dir)
    except LinkSetupError as exc:
        print(f"deskwatch-desk: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    except KeyboardInterrupt:
        return exitcodes.OK
    except SystemExit:
        raise
    except Exception:
        logger.exception("internal error")
        return exitcodes.SOFTWARE


def load_or_exit(path: Path) -> Any:
    from deskwatch_desk.config import ConfigError, load_desk_config

    try:
        return load_desk_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None


def idle_source_or_exit(name: str) -> Any:
    """The idle-time source asked for (or the first that works here), else exit 2 or 69."""
    from deskwatch_desk.idle import open_idle_source

    try:
        source = open_idle_source(name)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(exitcodes.USAGE) from None
    if source is None:
        print("no idle-time source works on this machine (the log above says why for each)", file=sys.stderr)
        raise SystemExit(exitcodes.UNAVAILABLE)
    return source


def cmd_idle(args: argparse.Namespace) -> int:
    source = idle_source_or_exit(args.idle_source)
    print(f"{source.idle_seconds():.1f} s since the last keyboard/mouse input (source: {source.name})")
    source.close()
    return exitcodes.OK


def cmd_request(args: argparse.Namespace, cfg: Any, state_dir: Path) -> int:
    import json

    from deskwatch_desk.link import DeskLink
    from deskwatch_desk.requests import RequestQueue, ResultWaiter, build_request, describe, send_request

    try:
        payload = build_request(
            args.command, reason=getattr(args, "reason", None), minutes=getattr(args, "minutes", None)
        )
    except ValueError as exc:
        print(f"deskwatch-desk {args.command}: {exc}", file=sys.stderr)
        return exitcodes.USAGE
    waiter = ResultWaiter()

    def on_message(suffix: str, raw: bytes) -> None:
        waiter.feed(raw)

    link = DeskLink(cfg, subscriptions=("cmd/result",), on_message=on_message)
    queue = RequestQueue(state_dir)
    link.start()
    try:
        outcome = send_request(args.command, payload, link, waiter, queue, datetime.now(UTC), timeout=args.wait)
    finally:
        link.close()
    what = describe(args.command, payload)
    if outcome.state in ("queued", "failed"):
        problem = link.problem or f"broker {link.where} unreachable"
        if outcome.state == "queued":
            print(
                f"{problem}: your {what} is queued in {queue.path} and will be sent as soon as the broker is "
                f"back (deskwatch-desk run or window sends it; a newer request replaces it)",
                file=sys.stderr,
            )
        else:
            print(
                f"{problem}: your {what} was {outcome.problem}; ask again when the broker is back "
                "(free space there, or choose a writable --state-dir)",
                file=sys.stderr,
            )
    elif outcome.state == "no_answer":
        print(
            f"the {what} reached the broker but the appliance did not answer within {args.wait:g} s: "
            "it may be offline; check its status light or ask your supervisor",
            file=sys.stderr,
        )
    elif outcome.result is not None:
        if outcome.result.ok:
            print(f"the appliance accepted the {what}")
        else:
            print(f"the appliance refused the {what}: {outcome.result.error}")
        if args.json:
            print(json.dumps(outcome.result.__dict__))
    return outcome.exit_code


def cmd_run(args: argparse.Namespace, cfg: Any, state_dir: Path) -> int:
    from deskwatch_desk.activity import ActivityReporter, ReportThrottle
    from deskwatch_desk.link import DeskLink
    from deskwatch_desk.requests import RequestQueue, ResultWaiter, flush_queue

    source = idle_source_or_exit(args.idle_source)
    waiter = ResultWaiter()

    def on_message(suffix: str, raw: bytes) -> None:
        result = waiter.feed(raw)
        if result is not None and result.command == "activity" and not result.ok:
            logger.warning("the appliance refused an activity report: %s", result.error)

    link = DeskLink(cfg, subscriptions=("cmd/result",), on_message=on_message)
    queue = RequestQueue(state_dir)

    def flush_if_connected() -> None:
        if link.connected.is_set() and queue.path.exists():
            for item, outcome in flush_queue(queue, link, waiter, datetime.now(UTC)):
                if outcome.result is not None and not outcome.result.ok:
                    logger.warning("the appliance refused the queued %s: %s", item.kind, outcome.result.error)

    reporter = ActivityReporter(
        source,
        lambda suffix, payload: link.publish(suffix, payload),
        throttle=ReportThrottle(every_seconds=args.every, min_gap_seconds=args.min_gap),
        sample_seconds=max(0.2, args.sample),
        monotonic=time.monotonic,
        on_tick=flush_if_connected,
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: reporter.stop.set())
    link.start()
    logger.info(
        "reporting idle time (%s) for desk %s/%s to %s every %g s",
        source.name,
        cfg.device.site,
        cfg.device.id,
        link.where,
        reporter.throttle.every_seconds,
    )
    try:
        reporter.run()
    finally:
        link.close()
        source.close()
    logger.info("stopped after %d activity reports", reporter.sent)
    return exitcodes.OK


if __name__ == "__main__":
    raise SystemExit(main())
