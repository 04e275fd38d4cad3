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
class VisionConfig:
    """On-device detectors."""

    light: LightConfig = field(default_factory=LightConfig, metadata={"doc": "Light and obstruction check."})
    liveness: LivenessConfig = field(
        default_factory=LivenessConfig, metadata={"doc": "Presentation-attack check: a picture of a face is nobody."}
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
    object_nms_iou: float = setting(
        0.6,
        doc="Two boxes of the same label overlapping more than this (IoU) are one object.",
        minimum=0.05,
        maximum=1.0,
    )
    phone_hint_threshold: float = setting(
        0.1,
        doc="Weak 'cell phone' candidates of the whole-frame pass at or above this score (and below the cell-phone threshold) are kept as votes for a phone held at an ear: alone they are noise, several of them at an ear are a phone call (see phone_ear_evidence).",
        minimum=0.01,
        maximum=1.0,
    )
    phone_ear_evidence: float = setting(
        0.4,
        doc="A phone is reported at an ear (from BlazeFace's ear keypoints, or from the body pose where the hand hides the face) when the weak phone votes there, combined as 1 - product(1 - score), reach this; the reported phone's score is that evidence. On the shared photos: 0.47 and 0.68 at the ears of the two phone calls the whole-frame pass misses, at most 0.25 at any ear of the photos without a phone.",
        minimum=0.05,
        maximum=1.0,
    )
    phone_second_pass: bool = setting(
        True,
        doc="Look again for phones in an enlarged crop (4 face heights) around each face with a weak phone vote at an ear: the phone is several times larger there, and the crop's phone candidates add their votes.",
    )
    phone_pass_threshold: float = setting(
        0.1,
        doc="Score a phone candidate of the second pass (at a face) needs to count as a vote.",
        minimum=0.01,
        maximum=1.0,
    )
    phone_pass_max_persons: int = setting(
        2,
        doc="At most this many faces (the largest: the worker at the desk first) get the second phone pass; each costs one more object-detector run, and only faces with a weak phone vote at an ear get one.",
        minimum=0,
        maximum=10,
    )
    phone_pass_min_face: float = setting(
        0.06,
        doc="Faces smaller than this share of the frame height have no ear zone and get no second pass (people far from the desk).",
        minimum=0.0,
        maximum=1.0,
    )
    phone_pose: bool = setting(
        True,
        doc="Estimate the body pose (MediaPipe pose landmarks) of persons with a weak phone vote inside their box, so that a phone held to an ear counts even where the hand hides the face from BlazeFace.",
    )
    pose_max_persons: int = setting(
        2,
        doc="At most this many persons (the largest) get a pose estimate per frame; each costs one pose-model run (~30 ms on a 2-core x86, more on a Pi).",
        minimum=0,
        maximum=10,
    )
    pose_min_presence: float = setting(
        0.5,
        doc="A pose counts (its ears become phone zones) when the pose model's presence score reaches this.",
        minimum=0.0,
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

    def validate(self, report: Report) -> None:
        for label, value in self.label_thresholds.items():
            if not 0.0 < value <= 1.0:
                report(f"label_thresholds.{label}", "must be a score between 0 and 1")
