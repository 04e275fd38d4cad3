"""The worker's pause: a reason, declared minutes, automatic expiry, overrun.

The reason's rules (length, no control characters, whitespace collapsed) and the
longest pause any device accepts are the contract's (``deskwatch_contract.intake``);
the policy's ``max_pause_minutes`` can only be shorter.
"""

from __future__ import annotations

import logging
import unicodedata
from dataclasses import replace

from deskwatch.domain import PauseInfo
from deskwatch_contract.intake import MAX_PAUSE_MINUTES, MAX_REASON, CommandRejected, normalise_reason, whole_number

__all__ = ["PauseError", "PauseInfo", "check_pause_request", "checked_restore"]

log = logging.getLogger(__name__)


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


def checked_restore(pause: PauseInfo) -> PauseInfo:
    """A saved pause with its reason held to today's rule for a new one. A pause saved by an
    older daemon may hold what that rule now refuses (a lone surrogate cannot be encoded, and
    the next health would fail on it at every start until the pause ends): those characters
    are dropped and the warning says why (not the reason: the worker's words); the pause stands - the
    worker asked for it."""
    try:
        return replace(pause, reason=normalise_reason(pause.reason, required=True))
    except CommandRejected as exc:
        why = str(exc)
    kept = "".join(
        c for c in pause.reason if not "\ud800" <= c <= "\udfff" and (c.isspace() or unicodedata.category(c) != "Cc")
    )
    text = " ".join(kept.split())[:MAX_REASON].rstrip() or "(reason dropped)"
    # neither the reason nor what is kept of it: the worker's words stay out of the journal
    log.warning(
        "the saved pause's reason is refused by today's rule for a pause reason (%s): the pause is restored "
        "with its reason cut to what the rule keeps (%d of %d characters)",
        why,
        0 if text == "(reason dropped)" else len(text),
        len(pause.reason),
    )
    return replace(pause, reason=text)
