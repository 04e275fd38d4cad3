"""``selftest --snapshot OUT.jpg``: the framing picture a technician aims the camera with.

Draws the desk zone, every person (green in the zone, grey outside), faces (with the
identity verdict when one ran), phones, and a banner with the light level. It stays
on the device: it is written where the technician asked (mode 0600, a USB stick
perhaps) and never published.

It is a picture of someone's home, so it is anonymised as evidence is, and more
strictly: everybody but the worker the policy places at the desk (bystanders, a second
person close to the screen, a face a liveness check called a picture, any face or body
the policy could not place) is blurred with the evidence blur before a box is drawn
(``deskwatch.evidence.blur``); the worker stays sharp, because aiming is about their
face and light. Without an analysis of the frame (the framing check skipped, or no
models) nobody can be found to blur, so no picture is written.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deskwatch.domain import Box, Detection, Face, Frame, FrameAnalysis, Person
from deskwatch.evidence.blur import anonymise_in_place
from deskwatch.policy.config import PolicyConfig
from deskwatch.policy.rules import people_view
from deskwatch.system.files import write_atomically

ZONE, PERSON, OUTSIDE, FACE, PHONE, OTHER = "#ffd400", "#2ecc40", "#aaaaaa", "#39cccc", "#ff4136", "#b10dc9"


@dataclass(frozen=True)
class Anonymised:
    """What the framing blur did to one picture (the audit trail and the tests say it)."""

    faces: int
    bodies: int
    worker_sharp: bool
    blurred_ids: frozenset[int]  # id() of each Detection and Face blurred, for the labels

    def to_json(self) -> dict[str, Any]:
        return {"blurred_faces": self.faces, "blurred_bodies": self.bodies, "worker_sharp": self.worker_sharp}


def anonymise_for_framing(image: np.ndarray, analysis: FrameAnalysis, policy: PolicyConfig) -> Anonymised:
    """Blur, in ``image`` (RGB uint8 of the analysed frame, any size; written to), every
    face and body but the worker's, as the policy places people."""
    view = people_view(analysis, policy)
    sharp = [view.worker] if view.worker is not None else []
    faces, bodies = view.all_but(sharp)
    anonymise_in_place(image, faces, bodies)
    kept = {id(x) for p in sharp for x in (p.detection, p.own_face) if x is not None}
    items: list[Detection | Face] = [*analysis.labelled("person"), *analysis.faces]
    return Anonymised(
        len(faces), len(bodies), view.worker is not None, frozenset(id(x) for x in items if id(x) not in kept)
    )


def annotate(frame: Frame, analysis: FrameAnalysis, policy: PolicyConfig) -> tuple[Any, Anonymised]:
    """The framing picture (a PIL image; the camera's frame is not written to) and what was blurred in it."""
    from PIL import Image, ImageDraw, ImageFont

    pixels = np.array(frame.image, dtype=np.uint8, copy=True)
    blurred = anonymise_for_framing(pixels, analysis, policy)
    image = Image.fromarray(pixels, "RGB")
    del pixels
    draw = ImageDraw.Draw(image)
    w, h = image.size
    line = max(2, w // 320)
    with contextlib.suppress(TypeError):  # Pillow >= 10.1 scales its built-in font
        draw.font = ImageFont.load_default(size=max(12, h // 36))

    def px(box: Box) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box.to_pixels(w, h)
        return x0, y0, x1 - 1, y1 - 1

    zone = Box(*policy.desk_zone)
    min_overlap = policy.rules.away_from_desk.min_overlap

    def blurred_mark(item: Detection | Face) -> str:
        return " blurred" if id(item) in blurred.blurred_ids else ""

    draw.rectangle(px(zone), outline=ZONE, width=line)
    draw.text((px(zone)[0] + 4, px(zone)[1] + 4), "desk zone", fill=ZONE)
    for det in analysis.detections:
        if det.label == "person":  # the policy's geometry for "at the desk"
            colour = PERSON if Person(det.box, det).in_zone(zone, min_overlap) else OUTSIDE
        else:
            colour = PHONE if det.label == "cell phone" else OTHER
        b = px(det.box)
        draw.rectangle(b, outline=colour, width=line)
        draw.text((b[0] + 3, b[1] + 2), f"{det.label} {det.score:.2f}{blurred_mark(det)}", fill=colour)
    for face in analysis.faces:
        b = px(face.box)
        draw.rectangle(b, outline=FACE, width=line)
        label = f"face {face.score:.2f}" + (f" {face.identity}" if face.identity else "") + blurred_mark(face)
        draw.text((b[0] + 3, max(0, b[1] - h // 30)), label, fill=FACE)
    light = analysis.light
    verdict = "OBSTRUCTED" if light.obstructed else ("TOO DARK" if light.low_light else "ok")
    text = f"light {light.mean_luma:.0f}/255 contrast {light.contrast:.0f} - {verdict}"
    banner = max(16, h // 30)
    draw.rectangle((0, h - banner, w, h), fill="#000000")
    draw.text((6, h - banner + 2), text, fill="#ffffff")
    return image, blurred


def write_snapshot(path: str | Path, frame: Frame, analysis: FrameAnalysis, policy: PolicyConfig) -> Anonymised:
    """Write the anonymised, annotated JPEG and say what was blurred. The selftest runs as
    root and the path is the technician's (``/tmp`` perhaps): written as every root-written
    file is (:func:`deskwatch.system.files.write_atomically`: no planted link followed, mode
    0600 from creation, whole or not at all). OSError when it cannot be (the caller says so)."""
    out = Path(path)
    image, blurred = annotate(frame, analysis, policy)
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=85)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(out, buf.getvalue(), 0o600)
    return blurred
