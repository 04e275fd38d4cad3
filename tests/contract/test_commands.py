"""Command intake: anything a stranger sends gets an answer, never an exception."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deskwatch_contract import load_schema
from deskwatch_contract.intake import MAX_COMMAND_BYTES, CommandIntake, CommandRejected, kind_for_topic

KINDS = ("pause", "resume", "scan", "activity")
SCHEMA_KIND = {"pause": "cmd.pause", "resume": "cmd.resume", "scan": "cmd.scan", "activity": "activity"}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, body: dict[str, Any]) -> None:
        self.calls.append((kind, body))


def send(kind: str, obj: Any) -> tuple[Any, Recorder]:
    rec = Recorder()
    result = CommandIntake(rec).handle(kind, json.dumps(obj).encode())
    return result, rec


def test_valid_commands_reach_the_handler_normalised() -> None:
    result, rec = send(
        "pause", {"schema": "deskwatch.cmd.pause/1", "request_id": "r-1", "reason": "  fetch\n water ", "minutes": 10}
    )
    assert result.ok and result.request_id == "r-1"
    assert rec.calls == [("pause", {"request_id": "r-1", "reason": "fetch water", "minutes": 10})]
    result, rec = send(
        "activity",
        {
            "schema": "deskwatch.activity/1",
            "idle_seconds": 42.5,
            "since": "2026-11-29T10:15:02+01:00",
            "source": "companion-win",
        },
    )
    assert result.ok and result.request_id is None
    assert rec.calls[0][1]["since"] == datetime(2026, 11, 29, 9, 15, 2, tzinfo=UTC)
    assert send("resume", {"schema": "deskwatch.cmd.resume/1", "request_id": "x"})[0].ok
    assert send("scan", {"schema": "deskwatch.cmd.scan/1", "request_id": "x", "future_field": 1})[0].ok


@pytest.mark.parametrize(
    ("kind", "raw", "reason"),
    [
        ("pause", b"\xff\xfe", "not UTF-8"),
        ("pause", b"[1, 2]", "JSON object"),
        ("pause", b"{", "not valid JSON"),
        ("pause", b'{"a": NaN}', "NaN"),
        ("pause", b"{" + b'"a":' * 0 + b'"x": "' + b"y" * MAX_COMMAND_BYTES + b'"}', "at most 4096"),
        ("pause", b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "request_id": "s"}', "duplicate key"),
        ("pause", b'{"schema": "deskwatch.cmd.resume/1", "request_id": "r"}', "schema must be"),
        (
            "pause",
            b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "reason": "x", "minutes": 121}',
            "from 1 to 120",
        ),
        (
            "pause",
            b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "reason": "x", "minutes": 5.5}',
            "whole number",
        ),
        (
            "pause",
            b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "reason": "x", "minutes": true}',
            "whole number",
        ),
        ("pause", b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "reason": "   ", "minutes": 5}', "reason"),
        ("pause", b'{"schema": "deskwatch.cmd.pause/1", "reason": "x", "minutes": 5}', "request_id is required"),
        # C1 controls and DEL are control characters too (U+009B is CSI: 'deskwatch history' printed it raw)
        (
            "pause",
            b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "reason": "x \\u009b2J", "minutes": 5}',
            "control characters",
        ),
        (
            "pause",
            b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "reason": "x \\u007f", "minutes": 5}',
            "control characters",
        ),
        # valid JSON of ASCII bytes, but no text: a health carrying this reason crashed the daemon
        (
            "pause",
            b'{"schema": "deskwatch.cmd.pause/1", "request_id": "r", "reason": "lunch \\ud800", "minutes": 5}',
            "lone UTF-16 surrogate",
        ),
        (
            "scan",
            b'{"schema": "deskwatch.cmd.scan/1", "request_id": "r", "reason": "\\udfff"}',
            "lone UTF-16 surrogate",
        ),
        ("resume", b'{"schema": "deskwatch.cmd.resume/1", "request_id": "a b"}', "request_id must be"),
        (
            "activity",
            b'{"schema": "deskwatch.activity/1", "idle_seconds": -1, "since": "2026-11-29T10:00:00Z", "source": "c"}',
            "idle_seconds",
        ),
        (
            "activity",
            b'{"schema": "deskwatch.activity/1", "idle_seconds": 1, "since": "2026-13-29T10:00:00Z", "source": "c"}',
            "since",
        ),
        (
            "activity",
            b'{"schema": "deskwatch.activity/1", "idle_seconds": 1, "since": "yesterday", "source": "c"}',
            "RFC 3339",
        ),
        # a real instant, outside the contract's: the policy's arithmetic on it overflowed (a traceback
        # and "internal error" after the report had been applied)
        (
            "activity",
            b'{"schema": "deskwatch.activity/1", "idle_seconds": 604800, "since": "9999-12-31T23:59:59Z", "source": "c"}',
            "from 1970-01-01 to 2099-12-31",
        ),
        (
            "activity",
            b'{"schema": "deskwatch.activity/1", "idle_seconds": 0, "since": "1969-12-31T23:59:59Z", "source": "c"}',
            "from 1970-01-01 to 2099-12-31",
        ),
        ("unknown", b'{"schema": "deskwatch.cmd.pause/1"}', "unknown command topic"),
    ],
)
def test_bad_commands_are_answered_with_the_reason_and_logged(
    kind: str, raw: bytes, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="deskwatch_contract.intake"):
        result = CommandIntake(rec).handle(kind, raw)
    assert not result.ok and reason in (result.error or ""), result
    assert rec.calls == []
    assert any("rejected" in r.getMessage() for r in caplog.records)


def test_handler_rejection_and_handler_bugs_become_results() -> None:
    def reject(kind: str, body: dict[str, Any]) -> None:
        raise CommandRejected("the uk profile allows scheduled checks only")

    def bug(kind: str, body: dict[str, Any]) -> None:
        raise ZeroDivisionError

    msg = json.dumps({"schema": "deskwatch.cmd.scan/1", "request_id": "r-9"}).encode()
    assert CommandIntake(reject).handle("scan", msg).error == "the uk profile allows scheduled checks only"
    result = CommandIntake(bug).handle("scan", msg)
    assert not result.ok and result.request_id == "r-9" and "internal error" in (result.error or "")


def test_topics_map_to_kinds() -> None:
    assert [
        kind_for_topic(t) for t in ("cmd/pause", "cmd/resume", "cmd/scan", "activity", "cmd/result", "cmd/x", "")
    ] == ["pause", "resume", "scan", "activity", "unknown", "unknown", "unknown"]


# -- property-based fuzzing ---------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=50),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=5),
    max_leaves=20,
)
FIELDS = ["schema", "request_id", "reason", "minutes", "idle_seconds", "since", "source"]
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "schema": st.sampled_from(
            [
                "deskwatch.cmd.pause/1",
                "deskwatch.cmd.resume/1",
                "deskwatch.cmd.scan/1",
                "deskwatch.activity/1",
                "deskwatch.cmd.pause/2",
                "",
            ]
        )
        | json_values,
        "request_id": st.from_regex(r"[A-Za-z0-9._:-]{1,64}", fullmatch=True) | json_values,
        "reason": st.text(max_size=130) | json_values,
        "minutes": st.integers(-5, 130) | json_values,
        "idle_seconds": st.floats(-10, 700_000) | st.integers(-10, 700_000) | json_values,
        "since": st.datetimes(timezones=st.just(UTC)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ")) | json_values,
        "source": st.text(max_size=70) | json_values,
    },
)


VALIDATORS = {k: jsonschema.Draft202012Validator(load_schema(v)) for k, v in SCHEMA_KIND.items()}


@pytest.fixture(autouse=True)
def quiet_rejections(request: pytest.FixtureRequest) -> Any:
    """The fuzz tests reject thousands of payloads; their log lines are tested above."""
    if "fuzz" not in request.node.name:
        yield
        return
    logger = logging.getLogger("deskwatch_contract.intake")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


class Survivor:
    """The intake shared by every example: it must keep working after thousands of them."""

    intake = CommandIntake(Recorder())


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from((*KINDS, "unknown")),
    raw=st.binary(max_size=5000) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_fuzz_random_bytes_always_get_a_result(kind: str, raw: bytes) -> None:
    result = Survivor.intake.handle(kind, raw)
    assert result.kind in (*KINDS, "unknown")
    assert result.ok or result.error


@pytest.mark.slow
@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), obj=near_valid)
def test_fuzz_intake_agrees_with_the_published_schema(kind: str, obj: dict[str, Any]) -> None:
    """Whatever the intake accepts is valid per the JSON Schema consumers build against."""
    result = Survivor.intake.handle(kind, json.dumps(obj).encode())
    valid = VALIDATORS[kind].is_valid(obj)
    if result.ok:
        assert valid, (obj, result)
    elif valid:
        # The schema cannot express everything the intake checks; these are the only extras.
        extras = ("control characters", "lone UTF-16 surrogate", "not a valid date", "from 1970-01-01 to 2099-12-31")
        assert any(word in (result.error or "") for word in extras), (obj, result)


def test_the_survivor_still_works_after_the_fuzzing() -> None:
    before = Survivor.intake.received
    ok = Survivor.intake.handle("resume", b'{"schema": "deskwatch.cmd.resume/1", "request_id": "after"}')
    assert ok.ok and Survivor.intake.received == before + 1


@pytest.mark.parametrize(
    ("raw", "request_id"),
    [
        (json.dumps({"schema": "deskwatch.cmd.resume/1", "request_id": "old-1"}).encode(), "old-1"),
        (b"\xff{not json", None),
        (b"", None),
        (json.dumps({"request_id": "x" * 65}).encode(), None),
    ],
)
def test_a_refused_message_is_answered_never_applied(raw: bytes, request_id: str | None) -> None:
    """A retained (stale) command is answered ok:false with the reason, its request_id
    echoed when readable - whatever its payload - and the handler never sees it."""
    from deskwatch_contract.intake import RETAINED_REFUSED

    rec = Recorder()
    intake = CommandIntake(rec)
    result = intake.refuse("resume", raw, RETAINED_REFUSED)
    assert (result.ok, result.kind, result.request_id, result.error) == (False, "resume", request_id, RETAINED_REFUSED)
    assert rec.calls == [] and intake.rejected == 1
