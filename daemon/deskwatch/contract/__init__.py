"""The MQTT contract: JSON Schemas (``schemas/*.json``) and payload builders (``payloads.py``)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KINDS = ("status", "event", "scan", "health", "cmd.pause", "cmd.resume", "cmd.scan", "activity", "cmd.result")


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema for a payload kind (``"event"``, ``"cmd.pause"`` ...)."""
    if kind not in KINDS:
        raise KeyError(f"no schema for {kind!r}; known: {', '.join(KINDS)}")
    data: dict[str, Any] = json.loads((SCHEMA_DIR / f"{kind}.json").read_text(encoding="utf-8"))
    return data
