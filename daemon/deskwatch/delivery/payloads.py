"""Builders for every payload the device publishes (contract version 1).

Each payload is a UTF-8 JSON object whose ``schema`` field names its kind and major
version (``deskwatch.event/1``); the JSON Schemas of the contract package
(``deskwatch_contract/schemas/*.json``) are the authoritative description, and the tests validate every
builder's output against them. Consumers in other languages: ``docs/mqtt-contract.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from deskwatch.domain import Finding, ScanRecord, new_id, rfc3339, utcnow
from deskwatch_contract import CONTRACT_REVISION, CONTRACT_VERSION, schema_id, topics


@dataclass(frozen=True)
class Source:
    """Who publishes: the fields every payload carries (built once by the composition root)."""

    site: str
    device_id: str
    worker_id: str
    profile: str

    @property
    def prefix(self) -> str:
        """``deskwatch/v1/{site}/{device_id}/``."""
        return topics.prefix(self.site, self.device_id)

    def fields(self) -> dict[str, str]:
        return {"site": self.site, "device_id": self.device_id}


class EvidenceLike(Protocol):
    jpeg: bytes
    width: int
    height: int
    sha256: str


def status_payload(
    src: Source,
    *,
    state: str,
    session: int,
    version: str,
    models: dict[str, str],
    since: datetime,
    reasons: list[str] | None = None,
    serial: str | None = None,
    ip: str | None = None,
) -> dict[str, Any]:
    """The retained ``status`` message (also the Last Will, with state ``offline``).

    ``serial`` (the board's) and ``ip`` (the device's address on its broker connection)
    let a technician find the desk; both are null when unknown (the Last Will has no IP)."""
    return {
        "schema": schema_id("status"),
        **src.fields(),
        "state": state,
        "session": session,
        "version": version,
        "profile": src.profile,
        "models": dict(models),
        "since": rfc3339(since),
        "reasons": [r if len(r) <= 200 else r[:199] + "…" for r in reasons or []],  # the schema's limit
        "serial": serial,
        "ip": ip,
        "contract": CONTRACT_REVISION,
    }


def event_payload(
    src: Source,
    finding: Finding,
    record: ScanRecord,
    evidence: EvidenceLike | None,
    evidence_reason: str | None,
) -> dict[str, Any]:
    """One finding. ``seq`` is added by the outbox when the event is queued."""
    detections = [d.to_json() for d in finding.detections] + [f.to_json() for f in finding.faces]
    if evidence is not None:
        ev: dict[str, Any] | None = {
            "sha256": evidence.sha256,
            "bytes": len(evidence.jpeg),
            "width": int(evidence.width),
            "height": int(evidence.height),
            "content_type": "image/jpeg",
        }
        reason = None
    else:
        ev = None
        reason = evidence_reason or ("not_allowed" if not finding.evidence_allowed else "none")
    return {
        "schema": schema_id("event"),
        "event_id": new_id(),
        **src.fields(),
        "type": finding.type,
        "scan_id": record.scan_id,
        "detected_at": rfc3339(record.started_at),
        "worker_id": src.worker_id,
        "confidence": round(min(1.0, max(0.0, float(finding.confidence))), 3),
        "detections": detections,
        "detail": finding.detail,
        "policy": {"profile": src.profile, "rule": finding.type},
        "evidence": ev,
        "evidence_reason": reason,
        "replayed": False,
    }


def scan_payload(src: Source, record: ScanRecord) -> dict[str, Any]:
    """The audit record of one scan, violation or not. Never images."""
    finished = record.finished_at or record.started_at
    return {
        "schema": schema_id("scan"),
        **src.fields(),
        "scan_id": record.scan_id,
        "trigger": record.trigger,
        "started_at": rfc3339(record.started_at),
        "finished_at": rfc3339(finished),
        "outcome": record.outcome,
        "frames": int(record.frames),
        "checks": [{"rule": c.rule, "outcome": c.outcome, "reason": c.reason} for c in record.checks],
        "findings": [f.type for f in record.findings],
        "persons": int(record.persons),
        "bystanders": int(record.bystanders),
        "durations_ms": {k: round(float(v), 1) for k, v in record.durations_ms.items()},
        "error": record.error,
        "replayed": False,
    }


# Keys of ``health_payload``'s stats argument (all optional; unknown keys are ignored).
IDENTITY_STATES = ("enrolled", "not_enrolled", "off")
HEALTH_KEYS = (
    "uptime_s",
    "scans",
    "scans_failed",
    "last_scan_at",
    "inference_ms",
    "camera",
    "cpu_temp_c",
    "disk_free_bytes",
    "clock_synced",
    "paused",
    "pause",
    "identity",
    "outbox",
    "mqtt",
)


def health_payload(src: Source, stats: dict[str, Any]) -> dict[str, Any]:
    """Health snapshot. ``stats`` merges the daemon's numbers with ``Delivery.stats()``.

    Expected keys: ``uptime_s``, ``scans``, ``scans_failed``, ``last_scan_at`` (RFC 3339 or
    None), ``inference_ms`` ({"p50", "p95"}), ``camera`` (state text), ``cpu_temp_c``,
    ``disk_free_bytes``, ``clock_synced``, ``paused``, ``pause`` (the pause's JSON or None),
    ``identity`` (``enrolled``, ``not_enrolled``, ``off``), plus ``outbox`` and ``mqtt`` as
    returned by ``Delivery.stats()``.
    """
    outbox = stats.get("outbox") or {}
    out: dict[str, Any] = {
        "schema": schema_id("health"),
        **src.fields(),
        "at": rfc3339(utcnow()),
        "uptime_s": round(float(stats.get("uptime_s", 0.0)), 1),
        "scans": int(stats.get("scans", 0)),
        "scans_failed": int(stats.get("scans_failed", 0)),
        "last_scan_at": stats.get("last_scan_at"),
        "inference_ms": _percentiles(stats.get("inference_ms")),
        "camera": str(stats.get("camera", "unknown")),
        "cpu_temp_c": _opt_float(stats.get("cpu_temp_c")),
        "disk_free_bytes": _opt_int(stats.get("disk_free_bytes")),
        "clock_synced": stats.get("clock_synced") if isinstance(stats.get("clock_synced"), bool) else None,
        "paused": bool(stats.get("paused", False)),
        "pause": _pause(stats.get("pause")),
        "outbox": {
            "depth": int(outbox.get("depth", 0)),
            "bytes": int(outbox.get("bytes", 0)),
            "oldest_age_s": float(outbox.get("oldest_age_s", 0.0)),
            "evicted": {k: int(v) for k, v in dict(outbox.get("evicted", {})).items()},
        },
    }
    if stats.get("identity") in IDENTITY_STATES:
        out["identity"] = stats["identity"]
    lost = outbox.get("lost")
    if isinstance(lost, dict):
        last = lost.get("last")
        out["outbox"]["lost"] = {
            "events": int(lost.get("events", 0)),
            "messages": int(lost.get("messages", 0)),
            "last": None
            if not isinstance(last, dict)
            else {
                "at": rfc3339(datetime.fromtimestamp(float(last["at"]), UTC)),
                "reason": str(last["reason"])[:500],
                "events": int(last["events"]),
                "seq_upto": int(last["seq_upto"]),
            },
        }
    mqtt = stats.get("mqtt")
    if isinstance(mqtt, dict):
        out["mqtt"] = {
            "protocol": str(mqtt.get("protocol") or "none"),
            "reconnects": int(mqtt.get("reconnects", 0)),
            "published": int(mqtt.get("published", 0)),
        }
    return out


def result_payload(request_id: str | None, kind: str, ok: bool, error: str | None = None) -> dict[str, Any]:
    """The answer to a command on ``cmd/result``."""
    out: dict[str, Any] = {"schema": schema_id("cmd.result"), "request_id": request_id, "command": kind, "ok": ok}
    if not ok:
        out["error"] = error or "rejected"
    return out


def _pause(value: Any) -> dict[str, Any] | None:
    """The pause for health: why, for how long and until when (so a fleet view can say so)."""
    if not isinstance(value, dict):
        return None
    return {k: value[k] for k in ("reason", "minutes", "started_at", "ends_at", "source") if k in value}


def _percentiles(value: Any) -> dict[str, float | None]:
    value = value if isinstance(value, dict) else {}
    return {"p50": _opt_float(value.get("p50")), "p95": _opt_float(value.get("p95"))}


def _opt_float(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return round(float(value), 2)


def _opt_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


__all__ = [
    "CONTRACT_VERSION",
    "Source",
    "event_payload",
    "health_payload",
    "new_id",
    "result_payload",
    "scan_payload",
    "schema_id",
    "status_payload",
]
