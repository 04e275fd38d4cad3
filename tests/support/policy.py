"""Fixtures for the policy, evidence and privacy tests: configs built in memory,
synthetic FrameAnalysis builders, and the BlazeFace detector from the vision stage."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from deskwatch.config import Config
from deskwatch.domain import Box, Detection, Face, Finding, Frame, FrameAnalysis, LightReading
from deskwatch_contract.configfile import load_section_tree
from tests.support.common import REPO

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)

BASE = """\
device: {id: desk-1, site: site-a, worker_id: w-1}
mqtt: {host: 127.0.0.1, tls: {enabled: false}}
schedule: {mode: interval, interval_seconds: 60}
"""

GOOD_LIGHT = LightReading(
    mean_luma=120.0, contrast=50.0, dark_fraction=0.05, detail=12.0, low_light=False, obstructed=False
)
DARK = LightReading(mean_luma=12.0, contrast=6.0, dark_fraction=0.95, detail=3.0, low_light=True, obstructed=False)
COVERED = LightReading(mean_luma=30.0, contrast=1.0, dark_fraction=0.7, detail=0.2, low_light=False, obstructed=True)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def make_config(extra: str = "", state_dir: str | None = None) -> Config:
    """A validated Config: BASE with ``extra`` (YAML) merged in, key by key."""
    data = _merge(yaml.safe_load(BASE), yaml.safe_load(textwrap.dedent(extra)) or {})
    if state_dir is not None:
        data["state_dir"] = state_dir
    cfg: Config = load_section_tree(Config, yaml.safe_dump(data, sort_keys=False), "<test>")
    return cfg


# Typical webcam desk scene: the worker centred and close, face in the upper middle.
WORKER_BOX = Box(0.25, 0.15, 0.75, 1.0)
WORKER_FACE_BOX = Box(0.42, 0.2, 0.58, 0.45)


def make_thumbnail(frame: Frame, finding: Finding, analysis: FrameAnalysis, cfg: Config) -> tuple[Any, str | None]:
    """What the daemon does for one finding: the policy's word on evidence (refusal and
    who is a bystander in the frame), then the evidence stage with its own section."""
    from deskwatch.evidence.thumbnail import build_evidence
    from deskwatch.policy.profiles import evidence_refusal
    from deskwatch.policy.rules import people_view

    finding.evidence_refusal = finding.evidence_refusal or evidence_refusal(cfg.policy, finding.type)
    return build_evidence(frame, finding, analysis, people_view(analysis, cfg.policy), cfg.evidence)


def person(box: Box = WORKER_BOX, score: float = 0.9) -> Detection:
    return Detection("person", score, box)


def obj(label: str, box: Box, score: float = 0.7, behaviour: str | None = None) -> Detection:
    """A detection; ``behaviour`` as the phone stage sets it (at_ear, in_hand, visible, at_mouth)."""
    return Detection(label, score, box, behaviour)


def face(box: Box = WORKER_FACE_BOX, *, score: float = 0.9, facing: float = 0.9, identity: str | None = None) -> Face:
    cx = (box.x0 + box.x1) / 2
    h = box.y1 - box.y0
    kps = (
        (box.x0 + 0.3 * box.width, box.y0 + 0.4 * h),
        (box.x0 + 0.7 * box.width, box.y0 + 0.4 * h),
        (cx, box.y0 + 0.6 * h),
        (cx, box.y0 + 0.8 * h),
        (box.x0, box.y0 + 0.5 * h),
        (box.x1, box.y0 + 0.5 * h),
    )
    return Face(box=box, score=score, keypoints=kps, facing=facing, identity=identity)


def burst(
    n: int = 5,
    detections: Iterable[Detection] = (),
    faces: Iterable[Face] = (),
    light: LightReading = GOOD_LIGHT,
    *,
    only: Iterable[int] | None = None,
    otherwise: Iterable[Detection] = (),
) -> list[FrameAnalysis]:
    """``n`` analyses; the detections/faces appear in the frames listed in ``only``
    (default all), the others get ``otherwise``."""
    keep = set(range(n)) if only is None else set(only)
    dets, fcs, other = list(detections), list(faces), list(otherwise)
    return [
        FrameAnalysis(i, light, list(dets) if i in keep else list(other), list(fcs) if i in keep else [])
        for i in range(n)
    ]


@pytest.fixture
def policy_config() -> Callable[..., Config]:
    return make_config


@pytest.fixture(scope="session")
def face_detector() -> Any:
    """The vision stage's BlazeFace detector (through its model store when the manifest
    is there, else straight from the shipped model file)."""
    from deskwatch.vision.faces import FaceDetector
    from deskwatch.vision.runtime import Model, ModelStore, _tensor_maps

    cfg = make_config()
    try:
        model = ModelStore(cfg.vision).load("face_detection_short_range.tflite")
    except Exception:  # manifest not in yet: load the file directly
        path = REPO / "models" / "face_detection_short_range.tflite"
        if not path.exists():
            pytest.skip("BlazeFace model not found in models/")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            pytest.skip("no TFLite runtime (ai-edge-litert) installed")
        it = Interpreter(model_path=str(path))
        it.allocate_tensors()
        ins, outs = _tensor_maps(it)
        model = Model("face", path.name, "", it, ins, outs)
    return FaceDetector(model)
