"""The worker's pause: a reason, declared minutes, automatic expiry, overrun."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

MAX_REASON = 120


class PauseError(ValueError):
    """A pause request that cannot be accepted (message says why, for the worker)."""


@dataclass(frozen=True)
class PauseInfo:
    reason: str
    minutes: int
    started_at: datetime
    source: str = "local"  # "local" (control socket) or "mqtt"

    @property
    def ends_at(self) -> datetime:
        return self.started_at + timedelta(minutes=self.minutes)

    def remaining_seconds(self, now: datetime) -> float:
        return (self.ends_at - now).total_seconds()

    def to_json(self) -> dict[str, object]:
        from ..domain import rfc3339

        return {
            "reason": self.reason,
            "minutes": self.minutes,
            "started_at": rfc3339(self.started_at),
            "ends_at": rfc3339(self.ends_at),
            "source": self.source,
        }


def check_pause_request(reason: object, minutes: object, max_minutes: int = 120) -> tuple[str, int]:
    """Validate a pause request; returns (reason, minutes) or raises PauseError."""
    if not isinstance(reason, str) or not reason.strip():
        raise PauseError('a pause needs a reason, e.g. "fetch water"')
    if any(ord(c) < 32 and c not in "\t\n\r" for c in reason):
        raise PauseError("the reason contains control characters")
    text = " ".join(reason.split())
    if len(text) > MAX_REASON:
        raise PauseError(f"the reason is {len(text)} characters; keep it to {MAX_REASON}")
    if isinstance(minutes, bool) or not isinstance(minutes, (int, float)) or minutes != int(minutes):
        raise PauseError("minutes must be a whole number")
    m = int(minutes)
    if not 1 <= m <= max_minutes:
        raise PauseError(f"minutes must be between 1 and {max_minutes}")
    return text, m
