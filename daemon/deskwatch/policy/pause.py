"""The worker's pause: a reason, declared minutes, automatic expiry, overrun.

The reason's rules (length, no control characters, whitespace collapsed) and the
longest pause any device accepts are the contract's (``deskwatch_contract.intake``);
the policy's ``max_pause_minutes`` can only be shorter.
"""

from __future__ import annotations

from deskwatch.domain import PauseInfo
from deskwatch_contract.intake import MAX_PAUSE_MINUTES, CommandRejected, normalise_reason, whole_number

__all__ = ["PauseError", "PauseInfo", "check_pause_request"]


class PauseError(ValueError):
    """A pause request that cannot be accepted (message says why, for the worker)."""


def check_pause_request(reason: object, minutes: object, max_minutes: int = MAX_PAUSE_MINUTES) -> tuple[str, int]:
    """Validate a pause request; returns (reason, minutes) or raises PauseError."""
    try:
        text = normalise_reason(reason, required=True)
        if isinstance(minutes, float) and minutes.is_integer():
            minutes = int(minutes)
        m = whole_number(minutes, "minutes", 1, min(max_minutes, MAX_PAUSE_MINUTES))
    except CommandRejected as exc:
        raise PauseError(str(exc)) from None
    return text, m
