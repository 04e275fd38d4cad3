"""The ``policy`` config section: the profile, per-rule switches and thresholds.

Every rule has ``enabled`` (``null``: the profile decides; ``true``/``false``
override it) and its own thresholds. Boxes and sizes are fractions of the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from deskwatch.domain import FOOD_AND_DRINK
from deskwatch_contract.configfile import Report, setting
from deskwatch_contract.intake import MAX_PAUSE_MINUTES

_ENABLED_DOC = "true or false overrides the profile; leave empty (null) to let the profile decide."


@dataclass(frozen=True)
class AwayRule:
    """away_from_desk: nobody in the desk zone across the burst, confirmed by a second burst."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    min_person_score: float = setting(
        0.4, doc="A person detection below this score does not count as someone at the desk.", minimum=0.05, maximum=1.0
    )
    min_face_score: float = setting(
        0.5, doc="A face below this score does not count as someone at the desk.", minimum=0.05, maximum=1.0
    )
    min_overlap: float = setting(
        0.3,
        doc="Share of a person's box that must lie inside policy.desk_zone for them to be at the desk.",
        minimum=0.0,
        maximum=1.0,
    )
    confirm_after_seconds: float = setting(
        20.0,
        doc="Delay before the confirming second burst; the finding is reported only when that burst also finds nobody.",
        minimum=1.0,
        maximum=600.0,
    )


PHONE_BEHAVIOURS = ("at_ear", "in_hand", "visible_on_desk")


@dataclass(frozen=True)
class PhoneRule:
    """phone_use: a phone both detectors see, at the ear, in the hand or (where the profile says so) on the desk."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    behaviours: list[str] | None = setting(
        None,
        doc="Which phone behaviours count: at_ear (a call), in_hand (texting, reading), visible_on_desk (a phone in the desk zone, held or not). Empty: the profile's default (full: at_ear and in_hand; uk: all three, its scheduled checks are for unauthorised devices). The phone stage looks around each person's hands and head only: a phone lying on the desk away from them is not looked for, so visible_on_desk finds only a phone close to a hand or the head that is neither at the ear nor held (0 of 8 phones lying on a desk found on the test photos; see models/manifest.yaml, phone_stage_tried).",
        example=["at_ear", "in_hand"],
    )
    min_score: float = setting(
        0.42,
        doc="Least score of a confirmed phone (the phone stage reports the geometric mean of its two detectors' scores, at least vision.phones.phone_min_score).",
        minimum=0.05,
        maximum=1.0,
    )
    near_face_factor: float = setting(
        2.0,
        doc="A phone at the ear or in the hand belongs to a person (worker or extra, never a bystander) whose box holds its centre, or whose face centre is within this many face sizes of it (face widths across, face heights down: the same reach in every direction whatever the frame's shape).",
        minimum=0.1,
        maximum=10.0,
    )

    def validate(self, report: Report) -> None:
        for value in self.behaviours or []:
            if value not in PHONE_BEHAVIOURS:
                report("behaviours", f"{value!r} is not a phone behaviour: use {', '.join(PHONE_BEHAVIOURS)}")


@dataclass(frozen=True)
class ExtraPersonRule:
    """extra_person: a second person close to the camera or facing the screen."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    min_person_score: float = setting(
        0.5, doc="Least detector score for a second person to count at all.", minimum=0.05, maximum=1.0
    )
    min_lone_face_score: float = setting(
        0.6,
        doc="A face with no person box around it counts as a second person only from this face score (a 0.51 'face' in a photo of one woman drinking tea was one; on the labelled photos and their variants the lone faces of real people scored 0.55-0.96, under 0.6 only beside other people found). Below it the face is still blurred in evidence.",
        minimum=0.05,
        maximum=1.0,
    )
    near_box_area: float = setting(
        0.08,
        doc="A person whose box covers at least this share of the frame is close to the camera.",
        minimum=0.0,
        maximum=1.0,
    )
    near_face_height: float = setting(
        0.15, doc="A face at least this share of the frame height is close to the camera.", minimum=0.0, maximum=1.0
    )
    facing_threshold: float = setting(
        0.7,
        doc="A face turned towards the camera at least this much (1 = straight on) is facing the screen.",
        minimum=0.0,
        maximum=1.0,
    )
    min_facing_face_height: float = setting(
        0.05,
        doc="Faces smaller than this share of the frame height are too far away to read the screen, whichever way they face.",
        minimum=0.0,
        maximum=1.0,
    )


@dataclass(frozen=True)
class UnrecognizedRule:
    """unrecognized_person: the face at the desk is not the enrolled worker for N checks in a row."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    consecutive_checks: int = setting(
        2,
        doc="How many scans in a row must see an unknown face at the desk before it is reported.",
        minimum=1,
        maximum=20,
    )
    min_face_height: float = setting(
        0.08,
        doc="Faces smaller than this share of the frame height are not judged (too few pixels to recognise).",
        minimum=0.0,
        maximum=1.0,
    )


@dataclass(frozen=True)
class PresentationAttackRule:
    """presentation_attack: a picture of a face (screen, print, phone) at the desk, nobody there in person."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    min_face_height: float = setting(
        0.08,
        doc="Pictured faces smaller than this share of the frame height are not reported (a photo on a far wall).",
        minimum=0.0,
        maximum=1.0,
    )


@dataclass(frozen=True)
class EatingRule:
    """eating: food or a drink at the mouth, seen by both detectors of the phone stage."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    min_score: float = setting(
        0.3,
        doc="Least score of food or a drink at the mouth (geometric mean of the two detectors).",
        minimum=0.05,
        maximum=1.0,
    )
    labels: list[str] = setting(
        default_factory=lambda: list(FOOD_AND_DRINK), doc="COCO labels that count as food or drink."
    )
    near_face_factor: float = setting(
        1.0,
        doc="Food at a mouth belongs to a person (worker or extra, never a bystander) whose box holds its centre, or whose face centre is within this many face sizes of it (face widths across, face heights down: the same reach in every direction whatever the frame's shape).",
        minimum=0.1,
        maximum=10.0,
    )

    def validate(self, report: Report) -> None:
        for value in self.labels:
            if value not in FOOD_AND_DRINK:
                report("labels", f"{value!r} is never seen at a mouth: use some of {', '.join(FOOD_AND_DRINK)}")


@dataclass(frozen=True)
class IdleRule:
    """idle_input: no keyboard/mouse activity for too long while present and not paused."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    idle_seconds: float = setting(
        900.0, doc="Reported idle time above which the worker counts as idle.", minimum=60.0, maximum=86_400.0
    )
    stale_after_seconds: float = setting(
        300.0,
        doc="An activity report older than this is ignored (the reporter may have stopped).",
        minimum=10.0,
        maximum=86_400.0,
    )


@dataclass(frozen=True)
class LightRule:
    """low_light / camera_obstructed: the view cannot be checked; gates every other rule."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)


@dataclass(frozen=True)
class PauseOverrunRule:
    """pause_overrun: a pause outlived its declared minutes."""

    enabled: bool | None = setting(None, doc=_ENABLED_DOC)
    grace_seconds: float = setting(
        60.0, doc="Extra time after the declared end before the overrun is reported.", minimum=0.0, maximum=3600.0
    )


@dataclass(frozen=True)
class RulesConfig:
    """Per-rule overrides."""

    away_from_desk: AwayRule = field(default_factory=AwayRule, metadata={"doc": "Nobody at the desk."})
    phone_use: PhoneRule = field(default_factory=PhoneRule, metadata={"doc": "A phone in use."})
    extra_person: ExtraPersonRule = field(
        default_factory=ExtraPersonRule, metadata={"doc": "Someone else close or looking at the screen."}
    )
    unrecognized_person: UnrecognizedRule = field(
        default_factory=UnrecognizedRule, metadata={"doc": "Someone other than the enrolled worker at the desk."}
    )
    presentation_attack: PresentationAttackRule = field(
        default_factory=PresentationAttackRule,
        metadata={"doc": "A photo, screen or phone showing a face held up in place of the worker."},
    )
    eating: EatingRule = field(default_factory=EatingRule, metadata={"doc": "Food or drink at the face."})
    idle_input: IdleRule = field(default_factory=IdleRule, metadata={"doc": "No keyboard or mouse activity."})
    low_light: LightRule = field(default_factory=LightRule, metadata={"doc": "Too dark to check."})
    camera_obstructed: LightRule = field(
        default_factory=LightRule, metadata={"doc": "Camera covered, misted or pointed away."}
    )
    pause_overrun: PauseOverrunRule = field(
        default_factory=PauseOverrunRule, metadata={"doc": "A pause ran past its declared minutes."}
    )


@dataclass(frozen=True)
class PolicyConfig:
    """Which checks run and how strict they are."""

    profile: Literal["full", "uk", "minimal"] = setting(
        "full",
        doc="Jurisdiction profile: full (every rule, random scans), uk (no random scans, no identity check: scheduled desk checks only), minimal (presence and lighting, no images leave the device).",
    )
    persistence: float = setting(
        0.6,
        doc="Share of a burst's frames in which a condition must be seen before it becomes a finding.",
        minimum=0.1,
        maximum=1.0,
    )
    end_settled_bursts: bool = setting(
        True,
        doc="End a burst as soon as the frames still to come cannot change any check's outcome (every frame so far checkable, the worker seen - and recognised, where one is enrolled - and nothing seen that could persist): the camera closes sooner and those frames are never taken (where the analysis fell behind the camera's pace, those it had already taken are let go unanalysed; the journal says how many of each). false: always the whole burst.",
    )
    desk_zone: list[float] = setting(
        default_factory=lambda: [0.0, 0.0, 1.0, 1.0],
        doc="The desk area of the picture as [x0, y0, x1, y1] fractions of the frame; people outside it are not at the desk.",
    )
    max_pause_minutes: int = setting(
        MAX_PAUSE_MINUTES,
        doc="Longest pause a worker may declare, in minutes (at most the contract's 120).",
        minimum=1,
        maximum=MAX_PAUSE_MINUTES,
    )
    rules: RulesConfig = setting(default_factory=RulesConfig, doc="Per-rule switches and thresholds.")

    def validate(self, report: Report) -> None:
        z = self.desk_zone
        if len(z) != 4 or not all(isinstance(v, (int, float)) for v in z):
            report("desk_zone", "must be four numbers [x0, y0, x1, y1]")
        elif not (0.0 <= z[0] < z[2] <= 1.0 and 0.0 <= z[1] < z[3] <= 1.0):
            report("desk_zone", "must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        if self.profile == "uk" and self.rules.unrecognized_person.enabled:
            report(
                "rules.unrecognized_person.enabled",
                "the uk profile runs no identity check; remove this override or choose another profile",
            )
