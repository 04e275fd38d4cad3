"""Intake for what the device receives: ``cmd/pause``, ``cmd/resume``, ``cmd/scan``, ``activity``.

Anyone with access to the broker can put bytes on these topics, so nothing here
trusts the payload: it must be at most 4 KiB, UTF-8, a JSON object (no duplicate
keys, no NaN), carry the ``schema`` of its topic, and have the fields, types and
ranges of ``deskwatch_contract/schemas/<kind>.json``. Every message gets exactly one
:class:`CommandResult` (published on ``cmd/result`` by the delivery), and every
rejection a log line. No exception leaves :meth:`CommandIntake.handle`.

The handler registered by the daemon receives ``(kind, body)`` with a validated,
normalised body:

- ``pause``: ``{"request_id": str, "reason": str (whitespace collapsed), "minutes": int}``
- ``resume``: ``{"request_id": str}``
- ``scan``: ``{"request_id": str, "reason": str}``
- ``activity``: ``{"request_id": str | None, "idle_seconds": float, "since": datetime (aware UTC),
  "source": str}``

and raises :class:`CommandRejected` to answer ``ok: false`` with its message.
"""

from __future__ import annotations

import logging
import math
import re
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from deskwatch_contract import schema_id, topics
from deskwatch_contract.jsonutil import JsonRejected, loads_object

logger = logging.getLogger(__name__)

MAX_COMMAND_BYTES = 4096
MAX_COMMAND_DEPTH = 8
MAX_REASON = 120
MAX_PAUSE_MINUTES = 120
MAX_IDLE_SECONDS = 7 * 86400
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")
FIRST_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
END_INSTANT = datetime(2100, 1, 1, tzinfo=UTC)
KINDS = ("pause", "resume", "scan", "activity")
# Rejections of one kind said in full within a minute; those beyond go to debug, and the next one
# said after the minute says how many there were. A loop publishing bad messages on the device's
# topics must not fill the journal (journald drops a service's lines past 10,000 in 30 s).
REJECTIONS_SAID_A_MINUTE = 5
SCHEMAS = {
    "pause": schema_id("cmd.pause"),
    "resume": schema_id("cmd.resume"),
    "scan": schema_id("cmd.scan"),
    "activity": schema_id("activity"),
}

CommandHandler = Callable[[str, dict[str, Any]], None]

# A command the broker kept (published with the retain flag) is handed to the device
# again at every (re)connect, long after it was meant: yesterday's resume would end
# today's pause, a scan would run at every reconnect.
RETAINED_REFUSED = "retained command ignored (stale): send commands without the retain flag"


class CommandRejected(Exception):
    """Raised by a command handler (or the validation) to answer ``ok: false`` with this reason."""


@dataclass(frozen=True)
class CommandResult:
    request_id: str | None
    kind: str  # one of KINDS, or "unknown"
    ok: bool
    error: str | None = None


def kind_for_topic(suffix: str) -> str:
    """``cmd/pause`` -> ``pause``; ``activity`` -> ``activity``; anything else -> ``unknown``."""
    return topics.COMMAND_TOPICS.get(suffix, "unknown")


class CommandIntake:
    def __init__(self, handler: CommandHandler | None = None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.handler = handler
        self.received = 0
        self.rejected = 0
        self._monotonic = monotonic
        # kind -> [start of its minute, rejections said in it, rejections not said since the last said]
        self._said: dict[str, list[float]] = {}

    def handle(self, kind: str, raw: bytes) -> CommandResult:
        """Validate and dispatch one message; always returns a result, never raises."""
        self.received += 1
        request_id: str | None = None
        try:
            obj = parse_object(raw)
            request_id = _peek_request_id(obj)
            body = validate(kind, obj)
            if self.handler is None:
                raise CommandRejected("the device is not accepting commands yet")
            self.handler(kind, body)
        except CommandRejected as exc:
            return self._reject(kind, request_id, str(exc))
        except Exception as exc:  # a handler bug must not take the daemon down
            logger.exception("command %s (request %s) failed inside the handler", kind, request_id)
            return self._reject(kind, request_id, f"internal error: {type(exc).__name__}")
        # an activity report is routine (the companion's, every 30 s): a debug line; the handler
        # logs what a pause, resume or scan does
        (logger.debug if kind == "activity" else logger.info)(
            "command %s accepted (request %s)",
            kind,
            request_id,
            extra={"journal": {"COMMAND": kind, "REQUEST_ID": request_id or ""}},
        )
        return CommandResult(request_id, kind, True)

    def refuse(self, kind: str, raw: bytes, reason: str) -> CommandResult:
        """Answer a message ``ok: false`` with ``reason`` without applying it (e.g. a
        retained command: :data:`RETAINED_REFUSED`), echoing its request_id when one can
        be read; logged and counted like any rejection. Never raises."""
        self.received += 1
        try:
            request_id = _peek_request_id(parse_object(raw))
        except CommandRejected:
            request_id = None
        return self._reject(kind, request_id, reason)

    def _reject(self, kind: str, request_id: str | None, reason: str) -> CommandResult:
        self.rejected += 1
        reason = reason[:300]
        now = self._monotonic()
        said = self._said.setdefault(kind, [now, 0, 0])
        if now - said[0] >= 60.0:
            said[0], said[1] = now, 0
        if said[1] >= REJECTIONS_SAID_A_MINUTE:
            said[2] += 1
            logger.debug("command %s rejected (request %s): %s", kind, request_id, reason)
        else:
            said[1] += 1
            more = f" ({said[2]} more {kind} commands were rejected since the last said)" if said[2] else ""
            last = (
                f"; more rejected {kind} commands this minute are not said one by one (health counts them all)"
                if said[1] == REJECTIONS_SAID_A_MINUTE
                else ""
            )
            said[2] = 0
            logger.warning(
                "command %s rejected (request %s): %s%s%s",
                kind,
                request_id,
                reason,
                more,
                last,
                extra={"journal": {"COMMAND": kind, "REQUEST_ID": request_id or ""}},
            )
        return CommandResult(request_id, kind if kind in KINDS else "unknown", False, reason)


def parse_object(raw: bytes) -> dict[str, Any]:
    """The command's JSON object (at most 4 KiB, 8 levels deep), or CommandRejected."""
    try:
        return loads_object(raw, max_bytes=MAX_COMMAND_BYTES, max_depth=MAX_COMMAND_DEPTH)
    except JsonRejected as exc:
        raise CommandRejected(str(exc)) from None


def _peek_request_id(obj: dict[str, Any]) -> str | None:
    rid = obj.get("request_id")
    return rid if isinstance(rid, str) and REQUEST_ID.fullmatch(rid) else None


def validate(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The normalised body for the handler, or :class:`CommandRejected` naming the problem."""
    if kind not in SCHEMAS:
        raise CommandRejected("unknown command topic (known: cmd/pause, cmd/resume, cmd/scan, activity)")
    if obj.get("schema") != SCHEMAS[kind]:
        raise CommandRejected(f"schema must be {SCHEMAS[kind]!r}")
    rid = obj.get("request_id")
    if rid is None and kind != "activity":
        raise CommandRejected("request_id is required")
    if rid is not None and not (isinstance(rid, str) and REQUEST_ID.fullmatch(rid)):
        raise CommandRejected("request_id must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    body: dict[str, Any] = {"request_id": rid}
    if kind == "pause":
        body["reason"] = normalise_reason(obj.get("reason"), required=True)
        body["minutes"] = whole_number(obj.get("minutes"), "minutes", 1, MAX_PAUSE_MINUTES)
    elif kind == "scan":
        body["reason"] = normalise_reason(obj["reason"], required=False) if "reason" in obj else ""
    elif kind == "activity":
        body["idle_seconds"] = _number(obj.get("idle_seconds"), "idle_seconds", 0, MAX_IDLE_SECONDS)
        body["since"] = _time(obj.get("since"), "since")
        source = obj.get("source")
        if not isinstance(source, str) or not 1 <= len(source) <= 64:
            raise CommandRejected("source must be text of 1-64 characters")
        body["source"] = source
    return body


def normalise_reason(value: Any, *, required: bool) -> str:
    """A pause or scan reason: text of at most 120 characters, no control characters or lone
    surrogates, whitespace collapsed (the same rule for MQTT, the local socket and the CLI)."""
    if not isinstance(value, str) or (required and not value.strip()):
        raise CommandRejected('reason must be non-empty text, e.g. "fetch water"')
    if len(value) > MAX_REASON:
        raise CommandRejected(f"reason is {len(value)} characters; at most {MAX_REASON}")
    # every control character (Unicode Cc): below U+0020, DEL and C1 too - U+009B is a terminal's CSI,
    # and 'deskwatch history' prints the reason as it is
    if any(unicodedata.category(c) == "Cc" and c not in "\t\n\r" for c in value):
        raise CommandRejected("reason contains control characters")
    # A lone UTF-16 surrogate ("\ud800" in JSON, or argv bytes that are not UTF-8) is no text:
    # it cannot be encoded to UTF-8, and the health that carries the pause's reason would fail.
    if any("\ud800" <= c <= "\udfff" for c in value):
        raise CommandRejected("reason is not text: it holds a lone UTF-16 surrogate (send it as UTF-8)")
    return " ".join(value.split())


def whole_number(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CommandRejected(f"{name} must be a whole number from {lo} to {hi}")
    if not lo <= value <= hi:
        raise CommandRejected(f"{name} must be from {lo} to {hi}, got {value}")
    return value


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CommandRejected(f"{name} must be a number from {lo:g} to {hi:g}")
    if not lo <= value <= hi:
        raise CommandRejected(f"{name} must be from {lo:g} to {hi:g}, got {value:g}")
    return float(value)


def _time(value: Any, name: str) -> datetime:
    if not isinstance(value, str) or not RFC3339.fullmatch(value):
        raise CommandRejected(f"{name} must be an RFC 3339 time such as 2026-11-29T10:15:02Z")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise CommandRejected(f"{name} is not a valid date and time") from None
    # The contract's instants (docs/mqtt-contract.md): 9999-12-31 is a real time, but no companion's
    # clock, and the policy's arithmetic on it overflowed after the report had been applied.
    if not FIRST_INSTANT <= when < END_INSTANT:
        raise CommandRejected(f"{name} must be from 1970-01-01 to 2099-12-31 in UTC, got {value}")
    return when
