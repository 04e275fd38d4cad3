"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import sys

from deskwatch.config import Config, ConfigError, load_config
from deskwatch_contract import exitcodes
from deskwatch_contract.cliargs import seconds as seconds  # the commands' duration arguments


def load_config_or_exit(args: argparse.Namespace) -> Config:
    """The validated config, or every problem on stderr and exit status 78."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        from deskwatch.system.logs import print_error

        print_error(exc.render(), sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None
