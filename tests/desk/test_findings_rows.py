"""The "Your findings" rows without Tk: every rule the contract knows has the desk's words."""

from __future__ import annotations

from deskwatch_contract import load_schema
from deskwatch_desk.findings import RULE_LABELS, row_from_live
from deskwatch_desk.messages import Finding as LiveFinding


def test_every_contract_rule_has_a_label_on_the_desk() -> None:
    types = load_schema("event")["properties"]["type"]["enum"]
    assert set(RULE_LABELS) == set(types)
    for t in types:
        live = LiveFinding("e1", t, "2026-11-20T10:00:00Z", 0.9, "", None, "policy", "s1")
        assert row_from_live(live).label == RULE_LABELS[t] != t
