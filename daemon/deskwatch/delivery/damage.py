"""Queued messages damaged on the disk (see "Damaged messages" in :mod:`deskwatch.delivery.outbox`).

SQLite keeps no checksums: a bit flipped on the SD card inside a stored message goes unnoticed
until the message is read. These checks say whether a stored row can still be published as it
is, and what of a damaged one is kept for inspection.
"""

from __future__ import annotations

import json
from collections.abc import Container
from typing import Any

# A damaged message keeps its payload for inspection only when it is a JSON message's: an
# image (or its sealed box) says nothing about the damage, and is evidence. Decided on what
# was found (the kind and topic may be the damaged part): as SQL over a row, and in Python.
JSON_KINDS = ("event", "scan", "health", "result")
INSPECTABLE_SQL = (
    "COALESCE(kind IN ('event', 'scan', 'health', 'result') AND typeof(topic) = 'text' "
    "AND topic NOT LIKE 'evidence%', 0)"
)


class DamagedRow(ValueError):
    """A queued row whose stored content cannot be what was written (a bit flipped on the card)."""


def check_row(
    kind: Any, topic: Any, payload: Any, qos: Any, created: Any, event_id: Any, *, kinds: Container[str]
) -> None:
    """Raise :class:`DamagedRow` unless the row can be published as it is stored.

    Everything the publisher relies on is checked, because any of it failing there would
    stop the queue at this row: the kind (one of ``kinds``), a topic without MQTT wildcards that fits the
    kind, a QoS paho accepts, a JSON object for every kind but images."""
    if kind not in kinds:
        raise DamagedRow(f"unknown kind {str(kind)[:20]!r}")
    if type(payload) is not bytes:
        raise DamagedRow(f"its payload is {type(payload).__name__}, not bytes")
    if type(qos) is not int or qos not in (0, 1, 2):
        raise DamagedRow(f"QoS {str(qos)[:20]!r}")
    if type(created) not in (int, float):
        raise DamagedRow(f"its time is {type(created).__name__}")
    if not (event_id is None or type(event_id) is str) or (kind in ("event", "evidence") and not event_id):
        raise DamagedRow(f"event id {str(event_id)[:40]!r}")
    expected = {"event": "event", "scan": "scan", "health": "health", "evidence": f"evidence/{event_id}"}.get(kind)
    if type(topic) is not str or not topic or (expected is not None and topic != expected):
        raise DamagedRow(f"topic {str(topic)[:60]!r}")
    if any(c in topic for c in "+#\0"):
        raise DamagedRow(f"topic {topic[:60]!r}")
    if kind != "evidence":
        try:
            body = json.loads(payload)
        except ValueError as exc:  # UnicodeDecodeError included
            raise DamagedRow(f"its JSON does not parse ({exc})") from None
        if not isinstance(body, dict):
            raise DamagedRow("its JSON is not an object")


def parse_props(props: Any) -> dict[str, str] | None:
    """A row's stored MQTT 5 user properties; :class:`DamagedRow` if they cannot be read."""
    if props is None or props == "":
        return None
    try:
        value = json.loads(props)
    except (ValueError, TypeError) as exc:
        raise DamagedRow(f"its MQTT properties do not parse ({exc})") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise DamagedRow("its MQTT properties are not a map of strings")
    return value


def inspectable(kind: Any, topic: Any) -> bool:
    """Is a damaged message's payload kept for inspection (see :data:`INSPECTABLE_SQL`)?"""
    return kind in JSON_KINDS and isinstance(topic, str) and not topic.lower().startswith("evidence")


def label(kind: Any, event_id: Any) -> str:
    """A damaged row's kind and event id, short, for a log line."""
    return f"{str(kind)[:20]} {str(event_id)[:60]}" if event_id else str(kind)[:20]
