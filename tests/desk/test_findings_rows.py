"""The "Your findings" rows without Tk: every rule the contract knows has the desk's words."""

from __future__ import annotations

from deskwatch_contract import load_schema
from deskwatch_desk.collector_client import Finding
from deskwatch_desk.findings import RULE_LABELS, row_from_collector, row_from_live
from deskwatch_desk.messages import Finding as LiveFinding


def test_every_contract_rule_has_a_label_on_the_desk() -> None:
    types = load_schema("event")["properties"]["type"]["enum"]
    assert set(RULE_LABELS) == set(types)
    for t in types:
        live = LiveFinding("e1", t, "2026-11-20T10:00:00Z", 0.9, "", None, "policy", "s1")
        assert row_from_live(live).label == RULE_LABELS[t] != t


def test_a_dismissed_finding_says_the_reason_in_the_collectors_words() -> None:
    """The reason's words come from the collector (reason_label), also for a reason the desk
    has never heard of: no second copy of the collector's list on the desk."""
    base = {"event_id": "e1", "type": "phone_use", "label": "Phone use", "detected_ts": 1.8e9, "confidence": 0.9,
            "device_id": "desk-a", "review_state": "dismissed"}  # fmt: skip
    for key, label in (("misread_object", "Object misread (e.g. a calculator as a phone)"),
                       ("reflection", "A reflection in the window")):  # fmt: skip
        row = row_from_collector(Finding.from_json({**base, "review_reason": key, "reason_label": label}))
        assert row.review == f"Dismissed: {label}"
    assert row_from_collector(Finding.from_json(base)).review == "Dismissed"


def test_the_picture_row_says_when_the_collector_deletes_it() -> None:
    """The time itself (the collector's picture_deleted_at, shown in the desk's zone); from a
    collector too old to send it, whole days left, and never "in 1 day" for two hours."""
    from datetime import datetime

    base = {"event_id": "e1", "type": "phone_use", "label": "Phone use", "detected_ts": 1.8e9, "confidence": 0.9,
            "device_id": "desk-a", "review_state": "open", "has_picture": True}  # fmt: skip
    gone = datetime.fromisoformat("2027-01-15T13:00:00+00:00")
    row = row_from_collector(Finding.from_json({**base, "days_left": 0, "picture_deleted_at": "2027-01-15T13:00:00Z"}))
    assert row.picture == "sent, deleted " + gone.astimezone().strftime("%a %d %b %H:%M")
    assert row_from_collector(Finding.from_json({**base, "days_left": 0})).picture == "sent, deleted within a day"
    assert row_from_collector(Finding.from_json({**base, "days_left": 3})).picture == "sent, deleted in 3 days"
    bad = Finding.from_json({**base, "days_left": 3, "picture_deleted_at": "soon"})
    assert row_from_collector(bad).picture == "sent, deleted in 3 days"
