"""Contract 1.1 additions validate against the schemas, and 1.0 payloads still do."""

from __future__ import annotations

from datetime import UTC, datetime

import jsonschema
import pytest

from deskwatch.delivery.payloads import Source, health_payload, status_payload
from deskwatch.delivery.seal import Sealer
from deskwatch_contract import CONTRACT_REVISION, load_schema, sealing

SRC = Source("acme", "desk-a", "w-1", "full")
KEY = "aTpCbsrX+0GOYg8G/Pl0J9ONgqExwb3r52f3xThyOIg="


def event(evidence: object) -> dict[str, object]:
    return {
        "schema": "deskwatch.event/1", "site": "acme", "device_id": "desk-a",
        "event_id": "01a224ee-45fe-72be-b748-f6bbc5d6179c", "seq": 3, "type": "phone_use", "scan_id": "s",
        "detected_at": "2026-11-29T10:15:02.123Z", "worker_id": "w-1", "confidence": 0.9, "detections": [],
        "detail": "", "policy": {"profile": "full", "rule": "phone_use"}, "evidence": evidence,
        "evidence_reason": None, "replayed": False,
    }  # fmt: skip


def test_a_sealed_event_validates_and_names_its_key() -> None:
    blob, sealed = Sealer.from_text(KEY).seal(b"\xff\xd8jpeg")
    assert len(blob) == len(b"\xff\xd8jpeg") + sealing.OVERHEAD
    assert sealed["key_id"] == sealing.key_id(sealing.key_from_text(KEY))
    meta = {"sha256": "0" * 64, "bytes": 6, "width": 320, "height": 240, "content_type": "image/jpeg", "sealed": sealed}
    jsonschema.validate(event(meta), load_schema("event"))
    unsealed = {k: v for k, v in meta.items() if k != "sealed"}
    jsonschema.validate(event(unsealed), load_schema("event"))  # 1.0 devices
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            event({**meta, "sealed": {"alg": "rot13", "key_id": "x", "bytes": 1}}), load_schema("event")
        )


def test_health_reports_losses_and_status_names_the_revision() -> None:
    lost = {
        "events": 5,
        "messages": 0,
        "last": {"at": 1_800_000_000.0, "reason": "outbox unreadable", "events": 5, "seq_upto": 6},
    }
    payload = health_payload(SRC, {"outbox": {"depth": 1, "bytes": 10, "oldest_age_s": 0, "evicted": {}, "lost": lost}})
    jsonschema.validate(payload, load_schema("health"))
    assert payload["outbox"]["lost"]["last"]["at"].startswith("2027-01-15T")
    status = status_payload(SRC, state="online", session=1, version="t", models={}, since=datetime.now(UTC))
    jsonschema.validate(status, load_schema("status"))
    assert status["contract"] == CONTRACT_REVISION == "1.1"


@pytest.mark.parametrize("bad", ["", "not base64!", "c2hvcnQ="])
def test_a_bad_key_is_refused_with_a_reason(bad: str) -> None:
    with pytest.raises(ValueError, match=r"base64|32 bytes"):
        sealing.key_from_text(bad)
