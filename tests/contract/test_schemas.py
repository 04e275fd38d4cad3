"""Every payload the device builds matches the published JSON Schemas, field for field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from deskwatch.app import payload_source
from deskwatch.config import load_config_text
from deskwatch.delivery import payloads as p
from deskwatch.delivery.outbox import Outbox
from deskwatch.domain import Box, CheckOutcome, Detection, Face, Finding, PauseInfo, ScanRecord
from deskwatch_contract import KINDS, load_schema

T0 = datetime(2026, 11, 29, 10, 15, 2, 123000, tzinfo=UTC)


@pytest.fixture
def cfg(tmp_path: Path) -> Any:
    return load_config_text(
        f"device: {{id: desk-0042, site: acme-support, worker_id: w-1187}}\nstate_dir: {tmp_path}\n"
    )


def check(kind: str, payload: dict[str, Any]) -> None:
    """Valid against the schema, and no field the schema does not declare (no silent drift)."""
    schema = load_schema(kind)
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(payload)
    undeclared = set(payload) - set(schema["properties"])
    assert not undeclared, f"{kind}: fields missing from the schema: {undeclared}"
    assert payload["schema"] == f"deskwatch.{kind}/1"


@pytest.mark.parametrize("kind", KINDS)
def test_each_schema_is_valid_draft_2020_12(kind: str) -> None:
    schema = load_schema(kind)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema"]["const"] == f"deskwatch.{kind}/1"


class FakeEvidence:
    jpeg = b"\xff\xd8" + b"x" * 500
    width, height = 320, 240
    sha256 = "ab" * 32


def record() -> ScanRecord:
    finding = Finding(
        "phone_use",
        0.87,
        2,
        [Detection("cell phone", 0.91, Box(0.1, 0.2, 0.3, 0.4))],
        [Face(Box(0.4, 0.1, 0.6, 0.4), 0.95, facing=0.8, identity="worker")],
    )
    return ScanRecord(
        "0193a0c0-0000-7000-8000-000000000001",
        "schedule",
        T0,
        T0 + timedelta(seconds=2.4),
        frames=5,
        checks=[CheckOutcome("phone_use", "violation"), CheckOutcome("eating", "skipped", "profile")],
        findings=[finding],
        persons=1,
        durations_ms={"burst": 2100.0, "vision": 310.5},
    )


def test_event_with_and_without_evidence(cfg: Any) -> None:
    rec = record()
    with_ev = p.event_payload(payload_source(cfg), rec.findings[0], rec, FakeEvidence(), None)
    check("event", {**with_ev, "seq": 1})
    assert with_ev["evidence"]["bytes"] == len(FakeEvidence.jpeg) and with_ev["evidence_reason"] is None
    without = p.event_payload(payload_source(cfg), rec.findings[0], rec, None, "withheld by policy")
    check("event", {**without, "seq": 2})
    assert without["evidence"] is None and without["evidence_reason"] == "withheld by policy"
    with pytest.raises(jsonschema.ValidationError):  # seq is required: the outbox must add it
        check("event", without)


def test_event_as_queued_and_evicted_still_matches(cfg: Any, tmp_path: Path) -> None:
    rec = record()
    box = Outbox(tmp_path / "q", max_bytes=64 * 1024, max_messages=100, max_age_days=20)
    box.put_event(p.event_payload(payload_source(cfg), rec.findings[0], rec, FakeEvidence(), None), b"j" * 60_000)
    box.put_event(p.event_payload(payload_source(cfg), rec.findings[0], rec, FakeEvidence(), None), b"j" * 60_000)
    import json

    events = [json.loads(m.payload) for m in box.pending() if m.kind == "event"]
    assert events[0]["evidence_reason"] == "evicted"
    for e in events:
        check("event", e)


def test_scan_status_health_result(cfg: Any, tmp_path: Path) -> None:
    check("scan", p.scan_payload(payload_source(cfg), record()))
    failed = ScanRecord("s2", "command", T0, error="camera unplugged")
    assert p.scan_payload(payload_source(cfg), failed)["outcome"] == "error"
    check("scan", p.scan_payload(payload_source(cfg), failed))
    for state in ("online", "degraded", "offline"):
        check(
            "status",
            p.status_payload(
                payload_source(cfg),
                state=state,
                session=3,
                version="0.1.0",
                models={"blazeface": "cd" * 32},
                since=T0,
                reasons=["camera: unplugged"] if state == "degraded" else None,
            ),
        )
    box = Outbox(tmp_path / "h", max_bytes=10**6, max_messages=1000, max_age_days=20)
    stats = {
        "uptime_s": 12.5,
        "scans": 3,
        "scans_failed": 1,
        "last_scan_at": "2026-11-29T10:15:02.123Z",
        "inference_ms": {"p50": 41.2, "p95": None},
        "camera": "ok",
        "cpu_temp_c": 51.3,
        "disk_free_bytes": 10**9,
        "clock_synced": True,
        "paused": False,
        "outbox": box.stats(),
        "mqtt": {"protocol": "5", "reconnects": 2, "published": 10},
        "outbox_depth": 0,
        "broker": "online",
    }
    check("health", p.health_payload(payload_source(cfg), stats))
    pause = PauseInfo("fetch water", 10, T0, "mqtt").to_json()
    paused = p.health_payload(
        payload_source(cfg), {**stats, "paused": True, "pause": pause, "identity": "not_enrolled"}
    )
    check("health", paused)
    assert paused["pause"] == {"reason": "fetch water", "minutes": 10, "started_at": "2026-11-29T10:15:02.123Z",
                               "ends_at": "2026-11-29T10:25:02.123Z", "source": "mqtt"}  # fmt: skip
    assert paused["identity"] == "not_enrolled"
    assert "identity" not in p.health_payload(payload_source(cfg), {**stats, "identity": "maybe"})
    check(
        "health", p.health_payload(payload_source(cfg), {})
    )  # a daemon that knows nothing yet still sends valid health
    check("cmd.result", p.result_payload("r-1", "pause", True))
    check("cmd.result", p.result_payload(None, "unknown", False, "payload is not valid JSON"))
    with pytest.raises(jsonschema.ValidationError):
        check("cmd.result", {"schema": "deskwatch.cmd.result/1", "request_id": "r", "command": "pause", "ok": False})


def test_the_contract_pages_topic_table_names_each_schema_as_its_file_does() -> None:
    """Consumers dispatch on ``schema``: the page's table said ``deskwatch.system.health/1``
    while every health carries ``deskwatch.health/1``, so a consumer written from it dropped them all."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "mqtt-contract.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z/{}_]+)` \|[^|]*\|[^|]*\|[^|]*\| `([a-z.]+\.json)`[^|]*\| `([^`]+)` \|$", page, re.M)
    assert len(rows) >= 12, rows  # every topic with a schema file
    for topic, file, named in rows:
        const = load_schema(file.removesuffix(".json"))["properties"]["schema"]["const"]
        assert named == const, f"{topic}: the page says {named!r}, {file} says {const!r}"


def test_the_page_names_each_payload_that_does_not_repeat_the_site_and_device_id() -> None:
    """The page said every outgoing payload repeats them; cmd/result carries neither."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "mqtt-contract.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([a-z/]+)` \| device → \|[^|]*\|[^|]*\| `([a-z.]+\.json)`", page, re.M)
    assert len(rows) >= 6, rows
    claim = page[page.index("are repeated inside every") :].split("\n\n", 1)[0]
    for topic, file in rows:
        required = set(load_schema(file.removesuffix(".json")).get("required", ()))
        if not {"site", "device_id"} <= required:
            assert f"`{topic}`" in claim, (
                f"{topic} ({file}) does not require site and device_id; the page says: {claim}"
            )
