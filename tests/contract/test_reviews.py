"""The retained ``reviews`` message: the collector's builder matches the schema, and the
device's parser takes what is right and rejects the rest whole, with a reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import jsonschema
import pytest

from deskwatch_contract import load_schema
from deskwatch_contract.reviews import MAX_FINDINGS, ReviewedFinding, ReviewsRejected, build, parse

AT = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
E1, E2 = "01a224ee-45fe-72be-b748-f6bbc5d6179c", "01a224ee-45fe-72be-b748-f6bbc5d6179d"


def payload(**change: object) -> dict[str, object]:
    findings = [
        ReviewedFinding(E1, "dismissed", True, "kept", "Object misread", True, "2026-11-28T09:00:00.000Z",
                        "2026-12-18T08:00:00.000Z"),
        ReviewedFinding(E2, "open", False, "none"),
    ]  # fmt: skip
    out = build("acme", "desk-1", AT, 20, findings)
    out.update(change)
    return out


def raw(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_build_matches_the_schema_and_parse_reads_it_back() -> None:
    p = payload()
    jsonschema.Draft202012Validator(load_schema("reviews"), format_checker=jsonschema.FormatChecker()).validate(p)
    got = parse(raw(p), "acme", "desk-1")
    assert (got.at, got.retention_days, len(got.findings)) == ("2026-11-29T10:00:00.000Z", 20.0, 2)
    first = got.findings[0]
    assert (first.state, first.reason, first.wrong, first.contested, first.picture) == (
        "dismissed", "Object misread", True, True, "kept")  # fmt: skip
    assert got.findings[1].reviewed_at is None and got.findings[1].picture_until is None


def item(**change: object) -> dict[str, object]:
    return {"event_id": E1, "state": "open", "contested": False, "picture": "none", **change}


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"device_id": "desk-2"}, "another device"),
        ({"schema": "deskwatch.reviews/2"}, "schema"),
        ({"retention_days": 90}, "retention_days"),
        ({"findings": [item(event_id="x")]}, "UUID"),
        ({"findings": [item(state="gone")]}, "state"),
        ({"findings": [item(contested="no")]}, "contested"),
        ({"findings": [item(reviewed_at="2026-13-01T00:00:00Z")]}, "real time"),
        ({"findings": [item(reason="a\x1b[2Jb")]}, "control"),
        ({"findings": [item()] * (MAX_FINDINGS + 1)}, "at most"),
    ],
)
def test_parse_rejects_a_bad_message_whole(change: dict[str, object], why: str) -> None:
    with pytest.raises(ReviewsRejected, match=why):
        parse(raw(payload(**change)), "acme", "desk-1")


def test_parse_rejects_junk_and_oversize() -> None:
    for junk in (b"", b"[]", b"{", b'{"schema": NaN}', b"\xff\xfe"):
        with pytest.raises(ReviewsRejected):
            parse(junk, "acme", "desk-1")
    with pytest.raises(ReviewsRejected, match="at most"):
        parse(b" " * (256 * 1024 + 1), "acme", "desk-1")
