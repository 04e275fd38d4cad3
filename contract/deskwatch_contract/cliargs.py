"""argparse types shared by the command lines of the appliance, the collector and the companion.

``type=float`` alone takes "nan" and "inf": no clock ever reaches a NaN deadline (or an
infinite one), NaN passes every ``min``/``max`` cap, and ``Event.wait(nan)`` returns at once,
so a camera or a wait would never end, or a loop meant to sleep between rounds would spin.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def seconds(text: str) -> float:
    """A duration: a finite number of seconds, 0 or more."""
    value = _number(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more (not {text!r})")
    return value


def seconds_at_least(least: float) -> Callable[[str], float]:
    """A duration of at least ``least`` seconds (the time between the rounds of a loop: 0 would spin)."""

    def parse(text: str) -> float:
        value = _number(text)
        if not (math.isfinite(value) and value >= least):
            raise argparse.ArgumentTypeError(f"must be a number of seconds, at least {least:g} (not {text!r})")
        return value

    return parse


def share(text: str) -> float:
    """A share from 0 to 1."""
    value = _number(text)
    if not 0.0 <= value <= 1.0:  # False for NaN too
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1 (not {text!r})")
    return value
