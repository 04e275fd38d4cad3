"""Evidence thumbnails: one small JPEG per finding.

Order matters for privacy: everyone the finding's thumbnail does not show (bystanders,
anyone the policy did not place, and those a finding of another rule is about: the
policy outcome's people view says who is who, ``PeopleView.sharp``; without one,
everybody) is anonymised before anything is drawn or encoded: the frame is scaled down
to the thumbnail's size into a picture of its own, those people anonymised in it (the
blur's strength is in blocks across a face, the same at any size:
``deskwatch.evidence.blur``), then the boxes that caused the finding are drawn and the
picture encoded. The JPEG carries no EXIF or other metadata, fits in
``evidence.max_width`` x ``max_height`` and under ``evidence.max_bytes`` (quality
steps down, then the size, until it fits; otherwise no evidence is sent).
"""

from __future__ import annotations

import hashlib
import io
import logging
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image, ImageDraw

from deskwatch.domain import Box, Detection, Face, Finding, Frame, FrameAnalysis, PeopleView
from deskwatch.evidence.blur import anonymise_in_place
from deskwatch.evidence.config import EvidenceConfig

log = logging.getLogger(__name__)

QUALITIES = (85, 75, 65, 55, 45, 35, 28, 22, 16, 12)
SHRINK_STEPS = (1.0, 0.8, 0.64, 0.5)
COLOURS = {"face": (255, 220, 0), "person": (255, 64, 64)}
DEFAULT_COLOUR = (0, 200, 255)


@dataclass(frozen=True)
class Evidence:
    jpeg: bytes
    width: int
    height: int
    sha256: str


def evidence_refusal(finding: Finding, cfg: EvidenceConfig) -> str | None:
    """Why this finding gets no thumbnail (for the event's ``evidence_reason``), or None."""
    if not cfg.enabled:
        return "disabled"
    return finding.evidence_refusal


def bystander_regions(
    analysis: FrameAnalysis, people: PeopleView | None, rule: str | None = None
) -> tuple[list[Box], list[Box]]:
    """(faces, bodies) to anonymise in the thumbnail of a ``rule`` finding: everyone but
    those it shows, as the policy placed them (``PeopleView.sharp``; ``rule`` None: everyone
    but those some finding may show); every face and body when the policy gave no view of
    this frame."""
    if people is None:
        return [f.box for f in analysis.faces], [d.box for d in analysis.labelled("person")]
    return people.to_anonymise(rule)


def fit_size(width: int, height: int, max_w: int, max_h: int) -> tuple[int, int]:
    scale = min(1.0, max_w / width, max_h / height)
    return max(1, int(width * scale)), max(1, int(height * scale))


def _draw(img: Image.Image, detections: list[Detection], faces: list[Face]) -> None:
    draw = ImageDraw.Draw(img)
    w, h = img.size
    items: list[tuple[str, Box]] = [(d.label, d.box) for d in detections] + [("face", f.box) for f in faces]
    for label, box in items:
        x0, y0, x1, y1 = box.to_pixels(w, h)
        colour = COLOURS.get(label, DEFAULT_COLOUR)
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour, width=2)
        ty = y0 - 11 if y0 >= 11 else y0 + 2
        draw.text((x0 + 2, ty), label, fill=colour)


def encode_capped(img: Image.Image, max_bytes: int) -> tuple[bytes, Image.Image] | None:
    """JPEG bytes (no metadata) under ``max_bytes``: quality steps down, then size."""
    base = img
    for shrink in SHRINK_STEPS:
        cur = (
            base
            if shrink == 1.0
            else base.resize(
                (max(16, int(base.width * shrink)), max(16, int(base.height * shrink))), Image.Resampling.LANCZOS
            )
        )
        for q in QUALITIES:
            buf = io.BytesIO()
            # No exif=, icc_profile=, comment=: Pillow writes only the JFIF header.
            cur.save(buf, format="JPEG", quality=q, optimize=True)
            data = buf.getvalue()
            if len(data) <= max_bytes:
                return data, cur
    return None


@dataclass(frozen=True)
class Picture:
    """A frame made ready for its thumbnails: fitted into the thumbnail size, bystanders
    and everyone no finding shows anonymised; each finding of the frame blurs those its
    own thumbnail does not show (:func:`for_finding`) and draws its own boxes. What a scan
    keeps of a frame that may become evidence: at most 320x240 by default (0.2 MB), not
    the 1280x720 frame (2.8 MB)."""

    image: np.ndarray


def prepare_picture(
    frame: Frame, analysis: FrameAnalysis, people: PeopleView | None, cfg: EvidenceConfig, rule: str | None = None
) -> Picture:
    """The frame scaled down and anonymised for a ``rule`` finding (the people view says who
    it shows; None: nobody; ``rule`` None: everyone some finding may show): everything of a
    thumbnail but its boxes. The camera's frame is never written to, nor copied whole (a
    1280x720 frame is 2.8 MB, its picture 0.2)."""
    faces, bodies = bystander_regions(analysis, people, rule)
    height, width = frame.image.shape[:2]
    size = fit_size(width, height, cfg.max_width, cfg.max_height)
    if size != (width, height):
        # area averaging into a new array: antialiased like Lanczos for a downscale, ~10x
        # faster (1-2 ms for 1280x720)
        picture = cv2.resize(frame.image, size, interpolation=cv2.INTER_AREA)
    else:
        picture = np.array(frame.image, dtype=np.uint8, copy=True) if faces or bodies else frame.image
    anonymise_in_place(picture, faces, bodies, people.kept_faces(rule) if people is not None else ())
    return Picture(np.ascontiguousarray(picture))


def for_finding(picture: Picture, rule: str, people: PeopleView | None) -> Picture:
    """The picture a scan kept of a frame (everyone some finding may show left sharp), with
    those the thumbnail of a ``rule`` finding does not show blurred too (a copy: another
    finding of the frame may show them)."""
    if people is None:  # the picture was made with everybody blurred
        return picture
    faces, bodies = people.unshown(rule)
    if not faces and not bodies:
        return picture
    image = np.array(picture.image, dtype=np.uint8, copy=True)
    anonymise_in_place(image, faces, bodies, people.kept_faces(rule))
    return Picture(image)


def prepare_evidence(
    frame: Frame, analysis: FrameAnalysis, people: PeopleView | None, cfg: EvidenceConfig
) -> Picture | None:
    """What a scan keeps of a frame that may become evidence: its :class:`Picture`, or
    None when no thumbnail is ever made (evidence off)."""
    return prepare_picture(frame, analysis, people, cfg) if cfg.enabled else None


def _annotated(picture: Picture, finding: Finding) -> Image.Image:
    img = Image.fromarray(picture.image, "RGB")
    _draw(img, finding.detections, finding.faces)
    return img


def render(
    frame: Frame, finding: Finding, analysis: FrameAnalysis, people: PeopleView | None, cfg: EvidenceConfig
) -> Image.Image:
    """The annotated, anonymised thumbnail image (not yet encoded)."""
    return _annotated(prepare_picture(frame, analysis, people, cfg, finding.type), finding)


def build_evidence(
    frame: Frame | Picture | None,
    finding: Finding,
    analysis: FrameAnalysis,
    people: PeopleView | None,
    cfg: EvidenceConfig,
) -> tuple[Evidence | None, str | None]:
    """(evidence, None) or (None, reason): reason is "disabled", "profile", "rule", "too_large"
    or "no_frame". ``frame``: the frame, or its :class:`Picture` (prepared with the same
    people view), or None where a scan kept nothing of it: the refusal comes first."""
    refusal = evidence_refusal(finding, cfg)
    if refusal is not None:
        return None, refusal
    if frame is None:  # a scan keeps every frame a finding with a picture may need: a bug
        log.error("evidence for %s: the scan kept nothing of frame %d", finding.type, finding.frame_index)
        return None, "no_frame"
    if isinstance(frame, Picture):
        picture = for_finding(frame, finding.type, people)
    else:
        picture = prepare_picture(frame, analysis, people, cfg, finding.type)
    img = _annotated(picture, finding)
    encoded = encode_capped(img, cfg.max_bytes)
    if encoded is None:
        log.warning(
            "evidence for %s does not fit in %d bytes; sending the event without it", finding.type, cfg.max_bytes
        )
        return None, "too_large"
    data, final = encoded
    return Evidence(jpeg=data, width=final.width, height=final.height, sha256=hashlib.sha256(data).hexdigest()), None
