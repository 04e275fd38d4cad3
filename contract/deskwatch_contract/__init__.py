"""The deskwatch MQTT contract and what every side of it shares.

- ``schemas/*.json``: the JSON Schemas of every payload (authoritative, with
  ``docs/mqtt-contract.md``); :func:`load_schema`, :func:`schema_id`.
- :mod:`.topics`: the per-device prefix and the topic names.
- :mod:`.intake`: the rules for what a device accepts on its command topics.
- :mod:`.mqttconfig`, :mod:`.credentials`, :mod:`.problems`: how a client reaches the
  broker (the ``mqtt`` config section, TLS and credentials, why a connection failed).
- :mod:`.configfile`: declarative config sections, every error with its YAML line.
- :mod:`.exitcodes`, :mod:`.jsonutil`, :mod:`.sqlite`: exit codes, compact/strict JSON,
  SQLite transactions and recovery, one home each.

It is installed on the appliance, the desk companion's PC and the collector, so it
needs nothing beyond PyYAML and paho-mqtt.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

__version__ = "0.2.0"

CONTRACT_VERSION = 1
# Additions within version 1 (fields only ever added): 1.1 = sealed evidence (event
# evidence.sealed), health.outbox.lost, status.contract. Announced in ``status.contract``.
CONTRACT_REVISION = "1.1"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
KINDS = (
    "status",
    "event",
    "scan",
    "health",
    "cmd.pause",
    "cmd.resume",
    "cmd.scan",
    "activity",
    "cmd.result",
    # the collector's retained word on a device's recent findings (issue 16)
    "reviews",
    # remote jobs (issue 17): the signed envelope, the document inside it, the device's progress
    "job.signed",
    "job",
    "job.progress",
)


def schema_id(kind: str) -> str:
    """The ``schema`` field of a payload: ``deskwatch.event/1``."""
    return f"deskwatch.{kind}/{CONTRACT_VERSION}"


@cache
def load_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema for a payload kind (``"event"``, ``"cmd.pause"`` ...)."""
    if kind not in KINDS:
        raise KeyError(f"no schema for {kind!r}; known: {', '.join(KINDS)}")
    data: dict[str, Any] = json.loads((SCHEMA_DIR / f"{kind}.json").read_text(encoding="utf-8"))
    return data
