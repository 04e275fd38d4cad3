"""Words the console shows: rule labels, review states, and the short list of dismiss reasons.

A dismiss reason says whether the *detector* was wrong (``wrong=True``) or the finding was
right but needs no action. Only the first kind counts against a rule's accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from deskwatch_contract import load_schema

# The rules are the contract's event types (one source: the appliance emits exactly these);
# the labels are the console's words for them, and a test holds every rule to a label.
RULES: tuple[str, ...] = tuple(load_schema("event")["properties"]["type"]["enum"])
RULE_LABELS = {
    "away_from_desk": "Away from desk",
    "phone_use": "Phone use",
    "extra_person": "Extra person",
    "unrecognized_person": "Unrecognised person",
    "presentation_attack": "Face on a photo or screen",
    "eating": "Eating",
    "idle_input": "No keyboard/mouse input",
    "low_light": "Too dark to check",
    "camera_obstructed": "Camera obstructed",
    "pause_overrun": "Pause overran",
}

STATES = ("open", "acknowledged", "dismissed")
STATE_LABELS = {"open": "Open", "acknowledged": "Upheld", "dismissed": "Dismissed"}
QUEUE_VIEWS = ("open", "acknowledged", "dismissed", "contested", "all")
QUEUE_VIEW_LABELS = {**STATE_LABELS, "contested": "Contested", "all": "All"}


@dataclass(frozen=True)
class DismissReason:
    key: str
    label: str
    wrong: bool  # the detector was wrong (counts against the rule's accuracy)
    needs_note: bool = False


DISMISS_REASONS = (
    DismissReason("false_detection", "Nothing like that in the picture", True),
    DismissReason("misread_object", "Object misread (e.g. a calculator as a phone)", True),
    DismissReason("wrong_person", "Not the worker: a bystander, a photo or a screen", True),
    DismissReason("camera_problem", "Camera aim, light or glare", True),
    DismissReason("allowed", "Correct, but allowed (work call, agreed break)", False),
    DismissReason("duplicate", "Duplicate of another finding", False),
    DismissReason("other", "Other (say why in the note)", False, needs_note=True),
)
REASONS = {r.key: r for r in DISMISS_REASONS}
WRONG_REASONS = tuple(r.key for r in DISMISS_REASONS if r.wrong)


def rule_label(rule: str) -> str:
    return RULE_LABELS.get(rule, rule)


def reason_label(key: str | None) -> str:
    if key is None:
        return ""
    reason = REASONS.get(key)
    return reason.label if reason else key
