"""What the companion sends (checked with the appliance's own intake rules) and reads.

Outgoing payloads are validated with :func:`deskwatch_contract.intake.validate`, the
very function the appliance runs on them, so the companion never sends what the
appliance would reject for its form. Incoming ``cmd/result``, ``scan`` and
``event`` payloads are parsed defensively: anything malformed is ignored with one
log line (:class:`Malformed`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from deskwatch_contract import schema_id
from deskwatch_contract.formats import new_id, rfc3339
from deskwatch_contract.intake import (
    MAX_COMMAND_BYTES,
    MAX_IDLE_SECONDS,
    SCHEMAS,
    CommandRejected,
    parse_object,
    validate,
)
from deskwatch_contract.jsonutil import dumps_bytes

logger = logging.getLogger(__name__)

TOPIC = {"pause": "cmd/pause", "resume": "cmd/resume", "activity": "activity"}


class Malformed(ValueError):
    """An incoming payload the companion cannot use (the message says what is wrong)."""


def _checked(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        validate(kind, payload)
    except CommandRejected as exc:
        raise ValueError(str(exc)) from None
    if len(dumps_bytes(payload)) > MAX_COMMAND_BYTES:
        raise ValueError(f"{kind} payload is larger than {MAX_COMMAND_BYTES} bytes")
    return payload


def pause_request(reason: str, minutes: int, request_id: str | None = None) -> dict[str, Any]:
    """A ``cmd/pause`` payload; raises ValueError with the appliance's own wording if invalid."""
    return _checked(
        "pause",
        {"schema": SCHEMAS["pause"], "request_id": request_id or new_id(), "reason": reason, "minutes": minutes},
    )


def resume_request(request_id: str | None = None) -> dict[str, Any]:
    return _checked("resume", {"schema": SCHEMAS["resume"], "request_id": request_id or new_id()})


def activity_report(idle_seconds: float, measured_at: datetime, source: str) -> dict[str, Any]:
    """An ``activity`` payload: ``since`` is the start of the idle period (time of the last input).

    The contract caps ``idle_seconds`` at :data:`MAX_IDLE_SECONDS` (7 days): a workstation idle
    longer (a holiday) is reported at the cap, which stays true as "idle at least this long".
    A value that is not a number raises ValueError: no report beats "active just now".
    """
    idle = float(idle_seconds)
    if math.isnan(idle):
        raise ValueError(f"idle_seconds from {source} is not a number")
    idle = round(min(max(0.0, idle), MAX_IDLE_SECONDS), 1)
    since = measured_at.astimezone(UTC) - timedelta(seconds=idle)
    return _checked(
        "activity",
        {
            "schema": SCHEMAS["activity"],
            "request_id": new_id(),
            "idle_seconds": idle,
            "since": rfc3339(since),
            "source": source,
        },
    )


# -- incoming ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Result:
    request_id: str | None
    command: str
    ok: bool
    error: str | None = None


@dataclass(frozen=True)
class Finding:
    event_id: str
    type: str
    detected_at: str
    confidence: float
    detail: str
    evidence: dict[str, Any] | None
    evidence_reason: str | None
    scan_id: str
    worker_id: str | None = None  # whom the appliance found it about (queued before a hand-over: the previous worker)


@dataclass(frozen=True)
class Scan:
    scan_id: str
    trigger: str
    started_at: str
    outcome: str
    findings: list[str] = field(default_factory=list)
    checks: list[tuple[str, str]] = field(default_factory=list)  # (rule, outcome)


def _object(raw: bytes, kind: str) -> dict[str, Any]:
    try:
        obj = parse_object(raw)
    except CommandRejected as exc:
        raise Malformed(str(exc)) from None
    if obj.get("schema") != schema_id(kind):
        raise Malformed(f"schema is {str(obj.get('schema'))[:40]!r}, expected {schema_id(kind)!r}")
    return obj


def _text(obj: dict[str, Any], key: str, *, optional: bool = False, limit: int = 200) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise Malformed(f"{key} must be text")
    return value[:limit]


def parse_result(raw: bytes) -> Result:
    obj = _object(raw, "cmd.result")
    ok = obj.get("ok")
    if not isinstance(ok, bool):
        raise Malformed("ok must be true or false")
    error = _text(obj, "error", optional=True, limit=300)
    if not ok and error is None:
        raise Malformed("an ok:false result must carry an error")
    return Result(_text(obj, "request_id", optional=True, limit=64), _text(obj, "command"), ok, error)


def parse_event(raw: bytes) -> Finding:
    obj = _object(raw, "event")
    confidence = obj.get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
        raise Malformed("confidence must be a number")
    evidence = obj.get("evidence")
    if evidence is not None and not isinstance(evidence, dict):
        raise Malformed("evidence must be an object or null")
    return Finding(
        event_id=_text(obj, "event_id", limit=64),
        type=_text(obj, "type", limit=64),
        detected_at=_text(obj, "detected_at", limit=40),
        confidence=float(confidence),
        detail=_text(obj, "detail", optional=True) or "",
        evidence=evidence,
        evidence_reason=_text(obj, "evidence_reason", optional=True, limit=64),
        scan_id=_text(obj, "scan_id", limit=64),
        worker_id=_text(obj, "worker_id", optional=True, limit=64),
    )


def parse_scan(raw: bytes) -> Scan:
    obj = _object(raw, "scan")
    findings = obj.get("findings")
    checks = obj.get("checks")
    if not isinstance(findings, list) or not all(isinstance(f, str) for f in findings):
        raise Malformed("findings must be a list of rule names")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        raise Malformed("checks must be a list of objects")
    return Scan(
        scan_id=_text(obj, "scan_id", limit=64),
        trigger=_text(obj, "trigger", limit=32),
        started_at=_text(obj, "started_at", limit=40),
        outcome=_text(obj, "outcome", limit=32),
        findings=[f[:64] for f in findings[:20]],
        checks=[(str(c.get("rule", "?"))[:64], str(c.get("outcome", "?"))[:32]) for c in checks[:32]],
    )


def parse_or_log(kind: str, raw: bytes) -> Any:
    """``parse_result`` / ``parse_event`` / ``parse_scan``, or None after one log line."""
    parser = {"cmd/result": parse_result, "event": parse_event, "scan": parse_scan}[kind]
    try:
        return parser(raw)
    except Malformed as exc:
        logger.warning("ignored a malformed %s message (%d bytes): %s", kind, len(raw), exc)
        return None
