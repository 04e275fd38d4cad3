"""Evidence thumbnails: size and byte caps, no metadata, boxes drawn, and none where
the rule or the profile forbids an image."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image

from deskwatch.domain import Box, Finding, Frame, FrameAnalysis
from deskwatch.evidence.thumbnail import COLOURS, render
from deskwatch.policy.rules import people_view
from tests.support.common import PHOTOS
from tests.support.policy import GOOD_LIGHT, make_config, make_thumbnail, obj, person

NOW = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


def photo_frame(name: str = "single_01.jpg") -> Frame:
    img = np.asarray(Image.open(PHOTOS / name).convert("RGB"))
    return Frame(np.ascontiguousarray(img), NOW)


def noise_frame(w: int = 1280, h: int = 960, seed: int = 1) -> Frame:
    rng = np.random.default_rng(seed)
    return Frame(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), NOW)


def phone_finding() -> tuple[Finding, FrameAnalysis]:
    worker = person(Box(0.2, 0.1, 0.8, 1.0))
    phone = obj("cell phone", Box(0.6, 0.3, 0.7, 0.45))
    finding = Finding("phone_use", 0.8, 0, [phone, worker])
    return finding, FrameAnalysis(0, GOOD_LIGHT, [worker, phone], [])


def decode(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_thumbnail_fits_the_default_box_and_byte_cap():
    cfg = make_config()
    finding, analysis = phone_finding()
    ev = make_thumbnail(photo_frame(), finding, analysis, cfg)[0]
    assert ev is not None
    img = decode(ev.jpeg)
    assert img.format == "JPEG"
    assert img.size == (ev.width, ev.height)
    assert ev.width <= 320 and ev.height <= 240
    assert len(ev.jpeg) <= 40_000
    import hashlib

    assert ev.sha256 == hashlib.sha256(ev.jpeg).hexdigest()


@pytest.mark.parametrize("cap", [4_000, 6_000, 10_000, 20_000, 40_000])
def test_byte_cap_is_hard_even_for_incompressible_frames(cap):
    cfg = make_config(f"evidence: {{max_bytes: {cap}, max_width: 640, max_height: 480}}")
    finding, analysis = phone_finding()
    ev, reason = make_thumbnail(noise_frame(), finding, analysis, cfg)
    if ev is None:
        assert reason == "too_large"
    else:
        assert len(ev.jpeg) <= cap and reason is None
        assert ev.width <= 640 and ev.height <= 480


def test_quality_steps_down_to_fit_a_small_cap():
    finding, analysis = phone_finding()
    big = make_thumbnail(photo_frame(), finding, analysis, make_config())[0]
    small = make_thumbnail(photo_frame(), finding, analysis, make_config("evidence: {max_bytes: 6000}"))[0]
    assert big is not None and small is not None
    assert len(small.jpeg) <= 6000 < len(big.jpeg)


def test_no_exif_or_other_metadata():
    # Start from a JPEG that carries EXIF (camera make and a GPS-ish comment) to be sure
    # nothing of it survives into the thumbnail.
    src = Image.open(PHOTOS / "single_01.jpg").convert("RGB")
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x9286] = "secret comment"  # UserComment
    buf = io.BytesIO()
    src.save(buf, format="JPEG", exif=exif.tobytes())
    assert decode(buf.getvalue()).getexif()  # the source really has EXIF
    frame = Frame(np.asarray(decode(buf.getvalue()).convert("RGB")), NOW)
    finding, analysis = phone_finding()
    ev = make_thumbnail(frame, finding, analysis, make_config())[0]
    assert ev is not None
    img = decode(ev.jpeg)
    assert len(img.getexif()) == 0
    assert not set(img.info) & {"exif", "icc_profile", "comment", "xmp", "photoshop"}
    assert b"Exif\x00\x00" not in ev.jpeg and b"SpyCam" not in ev.jpeg
    # APP1 (EXIF/XMP) and COM markers are absent altogether
    assert b"\xff\xe1" not in ev.jpeg[:2000] and b"\xff\xfe" not in ev.jpeg[:2000]


def test_causing_boxes_are_drawn():
    cfg = make_config()
    finding, analysis = phone_finding()
    img = np.asarray(render(photo_frame(), finding, analysis, people_view(analysis, cfg.policy), cfg.evidence))
    h, w = img.shape[:2]
    x0, y0, _x1, y1 = finding.detections[1].box.to_pixels(w, h)  # the person
    edge = img[(y0 + y1) // 2, x0]
    assert tuple(int(v) for v in edge) == COLOURS["person"]
    px0, py0, _px1, _py1 = finding.detections[0].box.to_pixels(w, h)  # the phone
    assert tuple(int(v) for v in img[py0 + 20, px0]) != COLOURS["person"]  # drawn in its own colour


@pytest.mark.parametrize(
    ("finding_type", "extra", "reason"),
    [
        ("idle_input", "", "rule"),
        ("pause_overrun", "", "rule"),
        ("phone_use", "policy: {profile: minimal, rules: {phone_use: {enabled: true}}}", "profile"),
        ("away_from_desk", "policy: {profile: minimal}", "profile"),
        ("phone_use", "evidence: {enabled: false}", "disabled"),
    ],
)
def test_no_evidence_where_the_rule_or_profile_forbids_it(finding_type, extra, reason):
    cfg = make_config(extra)
    _, analysis = phone_finding()
    finding = Finding(finding_type, 0.9, 0)
    ev, why = make_thumbnail(photo_frame(), finding, analysis, cfg)
    assert ev is None and why == reason


def test_finding_marked_without_evidence_gets_none():
    _, analysis = phone_finding()
    finding = Finding("phone_use", 0.9, 0, evidence_refusal="rule")
    assert make_thumbnail(photo_frame(), finding, analysis, make_config())[0] is None
