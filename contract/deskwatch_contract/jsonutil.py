"""JSON as the contract writes and reads it.

Written compact, UTF-8, never NaN or Infinity (they are not JSON, and one of them in
a stored payload makes a whole API response invalid). Read strictly: bounded size and
nesting depth, no duplicate keys, no NaN/Infinity; every problem is a
:class:`JsonRejected` with a sentence, never a traceback.
"""

from __future__ import annotations

import json
from typing import Any


class JsonRejected(ValueError):
    """The bytes are not acceptable JSON; the message says why."""


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def dumps_bytes(obj: Any) -> bytes:
    return dumps(obj).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JsonRejected(f"duplicate key {key[:40]!r}")
        out[key] = value
    return out


def _no_constants(name: str) -> Any:
    raise JsonRejected(f"{name} is not allowed in JSON")


def _depth(text: str) -> int:
    """Deepest nesting of objects/arrays, outside strings (cheap; runs before parsing)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def loads_object(raw: bytes | bytearray | str, *, max_bytes: int, max_depth: int = 8) -> dict[str, Any]:
    """A JSON object from untrusted bytes, or :class:`JsonRejected` naming the problem."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if not isinstance(raw, (bytes, bytearray)):
        raise JsonRejected("payload must be bytes")
    if len(raw) > max_bytes:
        raise JsonRejected(f"payload is {len(raw)} bytes; at most {max_bytes}")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        raise JsonRejected("payload is not UTF-8") from None
    if _depth(text) > max_depth:
        raise JsonRejected(f"payload is nested deeper than {max_depth} levels")
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants)
    except JsonRejected:
        raise
    except (ValueError, RecursionError):
        raise JsonRejected("payload is not valid JSON") from None
    if not isinstance(obj, dict):
        raise JsonRejected("payload must be a JSON object")
    return obj
