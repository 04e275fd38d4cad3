"""Types that travel between the scan stages.

camera -> ``Frame``; vision -> ``FrameAnalysis`` (``Detection``, ``Face``,
``LightReading``); policy -> ``Finding``; the scan loop -> ``ScanRecord``.

Everything here is plain data: no stage imports another stage's code, only these
types. Boxes are normalised to the frame (0..1, origin top-left) so that a finding
means the same thing whatever resolution the camera delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from deskwatch_contract.formats import new_id, rfc3339, utcnow

__all__ = [
    "DRINK",
    "FOOD",
    "FOOD_AND_DRINK",
    "Box",
    "CheckOutcome",
    "Detection",
    "Face",
    "Finding",
    "Frame",
    "FrameAnalysis",
    "LightReading",
    "PauseInfo",
    "PeopleView",
    "Person",
    "ScanRecord",
    "new_id",
    "rfc3339",
    "utcnow",
]

# The COCO labels the vision stage reports as food or drink (and checks at the mouth); the
# eating rule counts those its config lists. One list for both stages.
FOOD = ("banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake")
DRINK = ("bottle", "wine glass", "cup")
FOOD_AND_DRINK = FOOD + DRINK


@dataclass(frozen=True)
class Box:
    """Axis-aligned box, normalised to the frame: 0 <= x0 < x1 <= 1, same for y."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return max(0.0, self.x1 - self.x0)

    @property
    def height(self) -> float:
        return max(0.0, self.y1 - self.y0)

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2)

    def clipped(self) -> Box:
        def c(v: float) -> float:
            return min(1.0, max(0.0, v))

        return Box(c(self.x0), c(self.y0), c(self.x1), c(self.y1))

    def iou(self, other: Box) -> float:
        ix = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        iy = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = ix * iy
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0

    def contains(self, x: float, y: float) -> bool:
        """Is the point (x, y) inside the box (edges included)?"""
        return self.x0 <= x <= self.x1 and self.y0 <= y <= self.y1

    def share_inside(self, zone: Box) -> float:
        """The share of this box's area that lies inside ``zone`` (0 for an empty box)."""
        ix = max(0.0, min(self.x1, zone.x1) - max(self.x0, zone.x0))
        iy = max(0.0, min(self.y1, zone.y1) - max(self.y0, zone.y0))
        return ix * iy / self.area if self.area > 0 else 0.0

    def to_pixels(self, width: int, height: int) -> tuple[int, int, int, int]:
        """Integer pixel box (x0, y0, x1, y1), clipped to the frame, x1/y1 exclusive."""
        b = self.clipped()
        return (
            int(b.x0 * width),
            int(b.y0 * height),
            max(int(b.x0 * width) + 1, round(b.x1 * width)),
            max(int(b.y0 * height) + 1, round(b.y1 * height)),
        )

    def as_list(self) -> list[float]:
        return [round(self.x0, 4), round(self.y0, 4), round(self.x1, 4), round(self.y1, 4)]


@dataclass(frozen=True)
class Frame:
    """One captured image. ``image`` is RGB, uint8, HxWx3, C-contiguous."""

    image: np.ndarray
    captured_at: datetime  # aware, UTC
    index: int = 0  # position in its burst

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])


@dataclass(frozen=True)
class Detection:
    """An object the detector found (COCO label names: "person", "cell phone", ...).

    ``behaviour`` says what a confirmed held object is doing (the phone stage sets it):
    a phone ``at_ear``, ``in_hand`` or ``visible`` (anywhere else, e.g. on the desk),
    food or a drink ``at_mouth``. None for everything else.
    """

    label: str
    score: float
    box: Box
    behaviour: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "score": round(self.score, 3), "box": self.box.as_list()}
        if self.behaviour is not None:
            out["behaviour"] = self.behaviour
        return out


@dataclass(frozen=True)
class Face:
    """A face the face detector found.

    ``keypoints`` are normalised (x, y) pairs in the detector's order (BlazeFace:
    right eye, left eye, nose tip, mouth, right ear tragion, left ear tragion).
    ``facing`` is 0..1: 1 looks straight into the camera, 0 is a profile.
    ``identity`` is None when no identity check ran, otherwise "worker", "unknown"
    or "uncertain" (too far from the templates to be the worker, too close to be
    surely somebody else); ``distance`` is the encoder distance to the closest template.
    ``live`` is None when no liveness check ran (a small face), False for a picture
    of a face (screen, print, phone: ``spoof_cues`` says what gave it away).
    ``framed`` is True for a face with long straight edges close by on all four sides
    (a poster, a framed photo or a screen on the wall), looked for only where the frame
    holds somebody besides this face: such a face is nobody beside the worker.
    """

    box: Box
    score: float
    keypoints: tuple[tuple[float, float], ...] = ()
    facing: float = 1.0
    identity: str | None = None
    distance: float | None = None
    live: bool | None = None
    spoof_cues: str = ""
    framed: bool = False

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": "face",
            "score": round(self.score, 3),
            "box": self.box.as_list(),
            "facing": round(self.facing, 2),
        }
        if self.identity in ("worker", "unknown"):  # the contract's values; "uncertain" is no verdict
            out["identity"] = self.identity
        if self.live is not None:
            out["live"] = self.live
        return out


@dataclass(frozen=True)
class LightReading:
    """Pixel statistics of one frame and what they mean for the checks."""

    mean_luma: float  # 0..255
    contrast: float  # standard deviation of luma, 0..~128
    dark_fraction: float  # share of pixels below the dark threshold
    detail: float  # mean absolute gradient: ~0 for a lens cap or a wall close up
    low_light: bool
    obstructed: bool
    sharpness: float | None = None  # its sharpest edges (vision.light.edge_sharpness): measured where nobody was seen
    blurred: bool = False  # obstructed because it is blurred (a misted or smeared lens), not because it is blank


@dataclass
class FrameAnalysis:
    """What the vision stage saw in one frame."""

    frame_index: int
    light: LightReading
    detections: list[Detection] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def labelled(self, label: str) -> list[Detection]:
        return [d for d in self.detections if d.label == label]


@dataclass
class Person:
    """One person in a frame: a body box, a face, or both.

    ``face_sure`` is False for a face that lies in the person's box but not where their
    head can be (a head bowed low, an arm held far out - or somebody else's face, theirs
    missed): it makes them somebody, but it is never shown or sent as theirs (blurred in
    evidence, left out of the finding's boxes, not judged by the identity rule)."""

    box: Box  # the person's box, or the face's box when only a face was found
    detection: Detection | None = None
    face: Face | None = None
    face_sure: bool = True

    @property
    def score(self) -> float:
        return self.detection.score if self.detection else (self.face.score if self.face else 0.0)

    @property
    def own_face(self) -> Face | None:
        """The face known to be this person's: shown sharp where they are, sent as theirs."""
        return self.face if self.face_sure else None

    def evidence(self) -> tuple[list[Detection], list[Face]]:
        return ([self.detection] if self.detection else [], [self.own_face] if self.own_face else [])

    def in_zone(self, zone: Box, min_overlap: float) -> bool:
        """At the desk: enough of the box inside ``zone``, or the face's centre inside it.

        The one geometry for "in the desk zone": the policy, the selftest and the
        framing snapshot all judge with it.
        """
        return self.box.share_inside(zone) >= min_overlap or (
            self.face is not None and zone.contains(*self.face.box.centre)
        )


@dataclass
class PeopleView:
    """Who is in one frame, as the policy decided: the worker, extras (close to the
    camera or facing the screen: they count, and are shown in an extra_person thumbnail
    only), bystanders (far and not facing: they don't count, and are blurred in
    evidence). ``pictures`` are faces that failed the liveness check (a screen, print or
    phone showing a face) with the person box that only showed that picture: nobody,
    kept unblurred only as the evidence of the trick (a presentation_attack thumbnail).
    ``about_others``: the rules the policy runs with a thumbnail about someone besides
    the worker (extra_person, presentation_attack)."""

    frame: FrameAnalysis
    worker: Person | None = None
    extras: list[Person] = field(default_factory=list)
    bystanders: list[Person] = field(default_factory=list)
    pictures: list[Person] = field(default_factory=list)
    about_others: frozenset[str] = frozenset({"extra_person", "presentation_attack"})

    @property
    def persons(self) -> int:
        return (1 if self.worker else 0) + len(self.extras) + len(self.bystanders)

    @property
    def non_bystanders(self) -> list[Person]:
        return ([self.worker] if self.worker else []) + self.extras

    def sharp(self, rule: str | None = None) -> list[Person]:
        """Who the thumbnail of a ``rule`` finding shows unblurred: the worker (whose desk
        it is), and besides them only the people the finding is about - the extras in an
        extra_person thumbnail, the pictures a liveness check caught in a presentation_attack
        one (the supervisor must see what was held up in the worker's place). A second person
        beside the worker is no part of a phone_use or eating finding (a phone or food of
        theirs that counts is boxed; who they are is not needed), and where extra_person is
        not run (uk) no finding is about them at all; a photo or a TV behind the worker is
        somebody's face like any other. ``rule`` None: everyone some finding of the rules the
        policy runs may show (:attr:`about_others`) - the picture a scan keeps of a frame
        before its findings are known (each thumbnail then blurs those it does not show:
        :meth:`unshown`)."""
        about = self.about_others if rule is None else {rule}
        keep = [self.worker] if self.worker is not None else []
        if "extra_person" in about:
            keep += self.extras
        if "presentation_attack" in about:
            keep += self.pictures
        return keep

    def to_anonymise(self, rule: str | None = None) -> tuple[list[Box], list[Box]]:
        """(faces, bodies) to blur in the evidence of a ``rule`` finding: everyone in the
        frame but those it shows (:meth:`sharp`), including any face or body the view did
        not place."""
        return self.all_but(self.sharp(rule))

    def unshown(self, rule: str) -> tuple[list[Box], list[Box]]:
        """(faces, bodies) a ``rule`` thumbnail blurs on top of :meth:`to_anonymise` with no rule."""
        shown = {id(p) for p in self.sharp(rule)}
        gone = [p for p in self.sharp() if id(p) not in shown]
        return (
            [p.own_face.box for p in gone if p.own_face is not None],
            [p.detection.box for p in gone if p.detection is not None],
        )

    def kept_faces(self, rule: str | None = None) -> list[Box]:
        """The faces a ``rule`` thumbnail shows, which a body blurred around them must not hide."""
        return [p.own_face.box for p in self.sharp(rule) if p.own_face is not None]

    def all_but(self, sharp: list[Person]) -> tuple[list[Box], list[Box]]:
        """(faces, bodies) of the frame that do not belong to one of ``sharp`` (a face not
        sure to be theirs included)."""
        keep: set[int] = set()
        for p in sharp:
            if p.detection is not None:
                keep.add(id(p.detection))
            if p.own_face is not None:
                keep.add(id(p.own_face))
        faces = [f.box for f in self.frame.faces if id(f) not in keep]
        bodies = [d.box for d in self.frame.labelled("person") if id(d) not in keep]
        return faces, bodies


@dataclass
class Finding:
    """A rule fired. ``type`` is the rule name (``away_from_desk``, ``low_light``...).

    ``evidence_refusal`` is the policy's word on a thumbnail: None (allowed),
    ``"rule"`` (this rule never carries one) or ``"profile"`` (no image leaves the
    device under this profile).
    """

    type: str
    confidence: float
    frame_index: int
    detections: list[Detection] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    evidence_refusal: str | None = None
    detail: str = ""
    # what the operator's journal says instead of ``detail`` where that holds the worker's own
    # words (a pause's reason): they go to the collector and the worker's trail, not the journal
    journal_detail: str | None = None

    @property
    def evidence_allowed(self) -> bool:
        return self.evidence_refusal is None


@dataclass(frozen=True)
class PauseInfo:
    """The worker's pause: what they said, for how long, from when and through which door."""

    reason: str
    minutes: int
    started_at: datetime
    source: str = "local"  # "local" (control socket) or "mqtt"

    @property
    def ends_at(self) -> datetime:
        return self.started_at + timedelta(minutes=self.minutes)

    def remaining_seconds(self, now: datetime) -> float:
        return (self.ends_at - now).total_seconds()

    def to_json(self) -> dict[str, object]:
        return {
            "reason": self.reason,
            "minutes": self.minutes,
            "started_at": rfc3339(self.started_at),
            "ends_at": rfc3339(self.ends_at),
            "source": self.source,
        }


@dataclass
class CheckOutcome:
    """Per-rule outcome for the audit record: ran or skipped, and why."""

    rule: str
    outcome: str  # "pass", "violation", "skipped", "pending"
    reason: str = ""


@dataclass(frozen=True)
class SentFinding:
    """What left the device for one finding: its event id, and the picture's size or why there is none."""

    event_id: str
    picture_bytes: int | None
    no_picture: str | None


@dataclass
class ScanRecord:
    """The audit record of one scan; published on ``scan`` and kept on the device."""

    scan_id: str
    trigger: str  # "schedule", "command", "confirmation", "cli"
    started_at: datetime
    finished_at: datetime | None = None
    frames: int = 0
    # frames of its bursts never taken: the burst was settled before them (in the log only)
    unseen_frames: int = 0
    # frames taken while the analysis was behind the camera, then let go unanalysed when the
    # burst was settled (in the log only; ``frames`` counts them: the camera took them)
    dropped_frames: int = 0
    checks: list[CheckOutcome] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    persons: int = 0
    bystanders: int = 0
    durations_ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    sent: list[SentFinding] = field(default_factory=list)  # per finding, in order, once queued

    @property
    def outcome(self) -> str:
        if self.error:
            return "error"
        return "violation" if self.findings else "clear"
