"""``deskwatch <command>``: one entry point, one module per command in ``commands/``.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Exit codes (also in the README):

====  ==========================================================
0     success
1     a check failed (selftest FAIL, scan found a problem, ...)
2     usage error (bad arguments)
69    a service is unavailable (broker, camera, daemon socket)
70    internal error (a bug: the traceback is logged)
78    configuration error (every problem listed with its line)
====  ==========================================================
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
from types import ModuleType

from deskwatch import __version__, commands
from deskwatch_contract import exitcodes

DEFAULT_CONFIG = "/etc/deskwatch/config.yaml"

log = logging.getLogger("deskwatch")


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in pkgutil.iter_modules(commands.__path__):
        if info.name.startswith("_") or info.name == "common":
            continue
        mod = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(mod, "NAME") and hasattr(mod, "run"):
            mods.append(mod)
    return sorted(mods, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deskwatch",
        description="Desk-compliance appliance daemon and tools. Every command takes --config.",
        epilog=exitcodes.SUMMARY,
    )
    parser.add_argument("--version", action="version", version=f"deskwatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=getattr(mod, "DESCRIPTION", mod.HELP))
        p.add_argument(
            "--config", "-c", default=DEFAULT_CONFIG, metavar="FILE", help=f"config file (default {DEFAULT_CONFIG})"
        )
        if hasattr(mod, "add_arguments"):
            mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return exitcodes.USAGE
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except SystemExit:
        raise
    except BrokenPipeError:
        return exitcodes.OK
    except Exception:  # a bug: say so plainly, keep the traceback in the log
        logging.getLogger("deskwatch").exception("internal error in '%s'", args.command)
        from deskwatch.system.logs import print_error

        print_error(f"deskwatch {args.command}: internal error (see the log above); please report it", sys.stderr)
        return exitcodes.SOFTWARE


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
