"""The ``vision`` config section."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from deskwatch.vision.light import LightConfig  # the light check keeps its thresholds next to its code
from deskwatch.vision.liveness import LivenessConfig  # so does the liveness check
from deskwatch_contract.configfile import Report, setting

# Per-label score thresholds of the object detector (COCO names). Labels not listed
# use ``object_threshold``.
DEFAULT_LABEL_THRESHOLDS: dict[str, float] = {
    "person": 0.35,
    "cell phone": 0.3,
}


@dataclass(frozen=True)
class PhoneStageConfig:
    """Phones and food in the hands and at the face (measured on the 52 labelled photos: models/manifest.yaml, phone_stage_tried)."""

    enabled: bool = setting(
        True,
        doc="Look for phones in each person's hands and at the head, and for food or a drink at the mouth (needed by phone_use and eating). Off: neither rule can find anything.",
    )
    max_persons: int = setting(
        2,
        doc="At most this many persons (the largest) get a pose estimate and the closer look; each costs one pose run and, per hand or head square checked (2 crop sizes each), one NanoDet and one CenterNet run (up to 6 of each per person, plus one CenterNet run on the whole frame).",
        minimum=1,
        maximum=6,
    )
    min_presence: float = setting(
        0.5, doc="A pose counts when the pose model's presence score reaches this.", minimum=0.0, maximum=1.0
    )
    max_head_depth: float = setting(
        2.5,
        doc="A pose counts only when its nose lies at most this many pose scales (head-and-shoulders sizes) below the top of its person box. A body's head is at the top of its box (0.1-2.1 scales below it on the labelled photos and their camera variations, raised arms included); deeper down, the pose model made up a body inside the box (arms and hands on a desk with no head in the picture: up to 4.8), and the crops around its made-up hands took a pen cap beside a real hand for a phone in the hand.",
        minimum=0.5,
        maximum=10.0,
    )
    crop_factors: list[float] = setting(
        default_factory=lambda: [2.25, 2.75],
        doc="Sides of the squares cut around each hand and the head, in pose scales (head-and-shoulders size). A phone, food or a drink must be confirmed with every size; its score is the lowest. One size alone let a mug (2.75) or a travel mug (2.25) through on the labelled photos.",
        example=[2.25, 2.75],
    )
    vote_threshold: float = setting(
        0.1,
        doc="Least score of a detector vote (whole frame or crop) for a phone, food or drink.",
        minimum=0.01,
        maximum=1.0,
    )
    phone_evidence: float = setting(
        0.5,
        doc="A phone needs NanoDet's votes at its place, combined as 1 - product(1 - score), to reach this (and CenterNet is only asked where they do).",
        minimum=0.05,
        maximum=1.0,
    )
    phone_confirm: float = setting(
        0.35,
        doc="A phone needs CenterNet's score at the same place to reach this. A mug held up at the face scored 0.28-0.30 when its photo was fitted into a 1280x720 camera frame (0.2 let it through as a call); the phones in use found on the labelled photos stay found at 0.35.",
        minimum=0.05,
        maximum=1.0,
    )
    phone_min_score: float = setting(
        0.42,
        doc="A phone needs the geometric mean of the two (its reported score) to reach this. Labelled photos: phones found 0.43-0.75, photos without a phone at most 0.40.",
        minimum=0.05,
        maximum=1.0,
    )
    ear_reach: float = setting(
        0.5,
        doc="A phone whose centre is within this many pose scales of an ear, above the shoulders, is at the ear.",
        minimum=0.05,
        maximum=2.0,
    )
    hand_reach: float = setting(
        0.5,
        doc="A phone whose box comes within this many pose scales of a hand is in the hand.",
        minimum=0.05,
        maximum=2.0,
    )
    max_phone_size: float = setting(
        1.2,
        doc="A phone longer than this many pose scales is not attributed to that person (too big to be in their hand: the pose of a partly visible person is unreliable).",
        minimum=0.1,
        maximum=5.0,
    )
    food_confirm: float = setting(
        0.3,
        doc="Food or a drink needs both detectors' best score at its place to reach this.",
        minimum=0.05,
        maximum=1.0,
    )
    food_reach: float = setting(
        0.45,
        doc="Food within this many ear-to-ear widths of the mouth is at the mouth (a doughnut held up to be bitten: 0.35).",
        minimum=0.0,
        maximum=3.0,
    )
    drink_reach: float = setting(
        0.12,
        doc="A drink within this many ear-to-ear widths of the mouth is at the mouth (a glass raised to the chin for a toast: 0.25-0.33, not drinking).",
        minimum=0.0,
        maximum=3.0,
    )
    mouth_visibility: float = setting(
        0.5,
        doc="Least pose-landmark visibility of the mouth corners for food to be judged at the mouth.",
        minimum=0.0,
        maximum=1.0,
    )

    def validate(self, report: Report) -> None:
        if not self.crop_factors:
            report("crop_factors", "needs at least one crop size, e.g. [2.25, 2.75]")
        for value in self.crop_factors:
            if not 1.0 <= value <= 5.0:
                report("crop_factors", f"{value} is not between 1 and 5 pose scales")


# Where a face beyond identity_tolerance becomes somebody else when identity_unknown_distance is left out.
DEFAULT_UNKNOWN_DISTANCE = 0.65


@dataclass(frozen=True)
class VisionConfig:
    """On-device detectors."""

    light: LightConfig = field(default_factory=LightConfig, metadata={"doc": "Light and obstruction check."})
    liveness: LivenessConfig = field(
        default_factory=LivenessConfig, metadata={"doc": "Presentation-attack check: a picture of a face is nobody."}
    )
    phones: PhoneStageConfig = field(
        default_factory=PhoneStageConfig,
        metadata={"doc": "The phone stage: phones in the hands and at the ears, food and drink at the mouth."},
    )
    models_dir: str | None = setting(
        None,
        doc="Directory holding the model files and models/manifest.yaml. Empty: the installed models (/usr/share/deskwatch/models, or the package's models/), else the source checkout's models/.",
        path="dir",
        example="/usr/share/deskwatch/models",
    )
    threads: int = setting(
        2,
        doc="Threads each TFLite interpreter may use (a Pi Zero 2 W has 4 cores; leave some for the rest of the system).",
        minimum=1,
        maximum=8,
    )
    object_precision: Literal["auto", "int8", "float"] = setting(
        "auto",
        doc="Which build of the object detector to run: int8 (quantized), float (the reference it was checked against), or auto: int8 on ai-edge-litert, float on tflite-runtime 2.14 (which has no fast int8 kernels: int8 runs ~2x slower than float there).",
    )
    object_threshold: float = setting(
        0.35,
        doc="Score an object detection needs, for labels not listed in label_thresholds.",
        minimum=0.01,
        maximum=1.0,
    )
    label_thresholds: dict[str, float] = setting(
        default_factory=lambda: dict(DEFAULT_LABEL_THRESHOLDS),
        doc="Per-label score thresholds of the object detector, by COCO label name (person, cell phone, cup, ...).",
        example={"person": 0.35, "cell phone": 0.35, "cup": 0.4},
    )
    presence_check: bool = setting(
        True,
        doc="Before a frame where the object detector and BlazeFace found nobody is taken for an empty desk (away_from_desk), look once more for a person with the phone stage's second detector (CenterNet, whole frame, ~15 ms here; loaded whenever away_from_desk is on): NanoDet scored a man standing with his back to the camera 0.18, CenterNet 0.78, and no empty scene of the labelled photos reached 0.2.",
    )
    presence_threshold: float = setting(
        0.3,
        doc="Least CenterNet score for the presence check's person; the strongest one only is added (it can keep a desk from being called empty, it never makes a crowd). away_from_desk counts it from policy.rules.away_from_desk.min_person_score.",
        minimum=0.05,
        maximum=1.0,
    )
    hand_check: bool = setting(
        True,
        doc="Part of the presence check: where CenterNet finds nobody either, look for hands (MediaPipe's palm detector, then its hand landmark model's presence score on each palm) before the frame is taken for an empty desk. A desk camera often sees only the worker's hands: on the labelled photos of hands on a table NanoDet and CenterNet saw no person. The two models (~24 MB) are loaded for the first such frame and kept while the desk stays empty, and let go before the phone stage's pose model (which is let go for them) is loaded again for a person: the two are never held together (~20 ms of loading each time, and ~35 ms of models here on a 1280x720 frame: the palm detector on the whole frame and on its left and right squares, the landmark model on each palm).",
    )
    hand_check_from: float = setting(
        0.0,
        doc="0 (the default): the hands are looked for on every frame where nobody counts, so that no desk is called empty before the hand models have looked at it. Above 0: only where there is a trace of somebody that does not count by itself: a person box under policy.rules.away_from_desk.min_person_score, or a CenterNet person from this score (under presence_threshold, or under min_person_score). That saves the hand models on an empty room (its CenterNet person reached 0.19 at most on the labelled empty scenes and their camera variations), but typing hands seen from above scored 0.149 in one of those views, and 0.15 called that desk empty. Looking on every such frame cost an empty desk 78 -> 158 ms a frame here (p50; a 5-frame scan 370 -> 685 ms) and no memory (peak 182.8 -> 181.9 MB); over 240 views of the 6 labelled empty scenes (20 camera variations, 2 sizes) one found a hand (0.504, blur 3): a missed away_from_desk, where the gate had made a false one.",
        minimum=0.0,
        maximum=1.0,
    )
    hand_threshold: float = setting(
        0.5,
        doc="Least hand presence score (the landmark model's, MediaPipe's own default 0.5) for a hand to be taken for somebody at the desk; the surest hand only is added, as a person with the hand's box and this score (the away rule counts it from its min_person_score, as every person). The empty scenes of the labelled photos and their camera variations scored at most 0.01, hands on a table 0.65-1.0.",
        minimum=0.05,
        maximum=1.0,
    )
    object_nms_iou: float = setting(
        0.6,
        doc="Two boxes of the same label overlapping more than this (IoU) are one object.",
        minimum=0.05,
        maximum=1.0,
    )
    face_model: Literal["short_range", "full_range"] = setting(
        "full_range",
        doc="BlazeFace model: full_range (192 px input, dense anchors: finds near and far faces in one pass) or short_range (128 px, faces within ~2 m; then each person's upper body is searched too, see face_in_persons). On the shared photos both find all 30 labelled faces; full_range finds no face on the empty scenes, short_range one.",
    )
    face_threshold: float = setting(0.5, doc="Score a face detection needs (BlazeFace).", minimum=0.05, maximum=1.0)
    face_nms_iou: float = setting(
        0.3, doc="Face boxes overlapping more than this are blended into one face.", minimum=0.05, maximum=1.0
    )
    face_in_persons: bool = setting(
        True,
        doc="With face_model short_range: also look for faces in each person's upper body (the 128 px whole-frame pass misses faces smaller than ~1/8 of the frame).",
    )
    identity_backend: Literal["tflite", "face_recognition"] = setting(
        "tflite",
        doc="What describes a face for the identity check: tflite (dlib's face recognition network as a TFLite model with int8 weights, aligned by MediaPipe's face mesh: ~6 ms a face here) or face_recognition (dlib itself, the reference: ~130 ms a face here, ~1 s on a Pi). Templates remember the backend that made them: after a change the worker must be enrolled again.",
    )
    identity_tolerance: float = setting(
        0.6,
        doc="Largest face-descriptor distance at which a face still counts as the enrolled worker (face_recognition's default is 0.6; lower is stricter). On the test photos no pair of photos of the same person is further apart than 0.53 with either backend; at 0.6, 5 of 345 pairs of different people (tflite, which declines 2 profile faces) and 12 of 400 (face_recognition) are within the tolerance",
        minimum=0.1,
        maximum=1.0,
    )
    identity_unknown_distance: float | None = setting(
        None,
        doc="A face further from the worker's templates than identity_tolerance but not further than this is judged neither way: not the worker, and not somebody else either (no unrecognized_person from it). On the test photos the hardest photo of one person (a beanie, eyes closed, dusk) is 0.60-0.63 from his other photos with both backends; 16 of 643 pairs of different people (tflite) fall between 0.6 and 0.65. Left empty: 0.65, or identity_tolerance where that is larger (then no face is judged neither way, as before this setting). Equal to identity_tolerance: every face is one or the other",
        minimum=0.1,
        maximum=2.0,
    )
    identity_min_face_px: int = setting(
        60,
        doc="Faces smaller than this (pixels, box height) are not identity-checked: the encoder is unreliable on them and they belong to people far from the desk.",
        minimum=16,
        maximum=1000,
    )
    identity_max_faces: int = setting(
        3,
        doc="At most this many faces per frame (the largest) are identity-checked; each costs one encoder run (~0.1-0.3 s on a Pi).",
        minimum=1,
        maximum=20,
    )
    identity_reuse_seconds: float = setting(
        3.0,
        doc="Within a burst, a face at the same place that looks the same (box overlap and a near-identical 16x16 thumbnail) keeps the identity found at most this many seconds earlier instead of running the encoder again (~1 s a face on a Pi). 0 encodes every frame.",
        minimum=0.0,
        maximum=30.0,
    )

    @property
    def unknown_distance(self) -> float:
        """Where a face becomes somebody else (identity_unknown_distance, or its default): a config
        that raised identity_tolerance above the default before this setting existed keeps working."""
        if self.identity_unknown_distance is not None:
            return self.identity_unknown_distance
        return max(DEFAULT_UNKNOWN_DISTANCE, self.identity_tolerance)

    def validate(self, report: Report) -> None:
        if self.identity_unknown_distance is not None and self.identity_unknown_distance < self.identity_tolerance:
            report(
                "identity_unknown_distance",
                f"{self.identity_unknown_distance} is below identity_tolerance ({self.identity_tolerance}): it must be "
                "at least as large (a face between the two is judged neither way); raise it or lower the tolerance",
            )
        for label, value in self.label_thresholds.items():
            if not 0.0 < value <= 1.0:
                report(f"label_thresholds.{label}", "must be a score between 0 and 1")
