"""Reading back what can still be read from a damaged outbox file.

When the outbox cannot be read (a failing SD card), it is moved aside (kept for inspection
until retention removes it: ``Outbox.expire_set_aside``).
:func:`read_back` copies it (with its WAL, whose commits count) and reads its rows in id
order; a damaged stretch is skipped by probing further ids, so what follows it is kept
too (:func:`deskwatch_contract.sqlite.read_back`, which the audit trail reads back with as
well). The copy is removed afterwards: the file kept for inspection stays as it was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deskwatch_contract import sqlite

COLUMNS = "id, kind, topic, payload, qos, created, event_id, props"


def read_back(aside: Path) -> tuple[list[tuple[Any, ...]], bool]:
    """Every readable row (id, kind, topic, payload, qos, created, event_id, props) of the
    moved-aside outbox ``aside``, and whether none was unreadable."""
    return sqlite.read_back(aside, {"messages": COLUMNS})["messages"]
