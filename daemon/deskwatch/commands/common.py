"""Helpers shared by the command modules."""

from __future__ import annotations

import argparse
import math
import sys

from deskwatch.config import Config, ConfigError, load_config
from deskwatch_contract import exitcodes


def load_config_or_exit(args: argparse.Namespace) -> Config:
    """The validated config, or every problem on stderr and exit status 78."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None


def seconds(text: str) -> float:
    """argparse type for a duration: a finite number of seconds, 0 or more.

    ``float`` alone takes "nan" and "inf": no clock ever reaches a NaN deadline (or an
    infinite one), and NaN passes every ``min``/``max`` cap, so a camera or a wait
    would never end."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more (not {text!r})")
    return value
