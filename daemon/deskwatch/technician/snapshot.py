"""``selftest --snapshot OUT.jpg``: the framing picture a technician aims the camera with.

Draws the desk zone, every person (green in the zone, grey outside), faces (with the
identity verdict when one ran), phones, and a banner with the light level. It stays
on the device: it is written where the technician asked and never published.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from deskwatch.domain import Box, Frame, FrameAnalysis, LightReading, Person

ZONE, PERSON, OUTSIDE, FACE, PHONE, OTHER = "#ffd400", "#2ecc40", "#aaaaaa", "#39cccc", "#ff4136", "#b10dc9"


def annotate(
    frame: Frame,
    analysis: FrameAnalysis | None,
    desk_zone: list[float],
    light: LightReading | None = None,
    min_overlap: float = 0.3,
) -> Image.Image:  # type: ignore[name-defined]  # noqa: F821 - Pillow imported lazily
    from PIL import Image, ImageDraw, ImageFont

    image = Image.fromarray(frame.image, "RGB")
    draw = ImageDraw.Draw(image)
    w, h = image.size
    line = max(2, w // 320)
    with contextlib.suppress(TypeError):  # Pillow >= 10.1 scales its built-in font
        draw.font = ImageFont.load_default(size=max(12, h // 36))

    def px(box: Box) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box.to_pixels(w, h)
        return x0, y0, x1 - 1, y1 - 1

    zone = Box(*desk_zone)
    draw.rectangle(px(zone), outline=ZONE, width=line)
    draw.text((px(zone)[0] + 4, px(zone)[1] + 4), "desk zone", fill=ZONE)
    if analysis is not None:
        for det in analysis.detections:
            if det.label == "person":  # the policy's geometry for "at the desk"
                colour = PERSON if Person(det.box, det).in_zone(zone, min_overlap) else OUTSIDE
            else:
                colour = PHONE if det.label == "cell phone" else OTHER
            b = px(det.box)
            draw.rectangle(b, outline=colour, width=line)
            draw.text((b[0] + 3, b[1] + 2), f"{det.label} {det.score:.2f}", fill=colour)
        for face in analysis.faces:
            b = px(face.box)
            draw.rectangle(b, outline=FACE, width=line)
            label = f"face {face.score:.2f}" + (f" {face.identity}" if face.identity else "")
            draw.text((b[0] + 3, max(0, b[1] - h // 30)), label, fill=FACE)
        light = light or analysis.light
    if light is not None:
        verdict = "OBSTRUCTED" if light.obstructed else ("TOO DARK" if light.low_light else "ok")
        text = f"light {light.mean_luma:.0f}/255 contrast {light.contrast:.0f} - {verdict}"
        banner = max(16, h // 30)
        draw.rectangle((0, h - banner, w, h), fill="#000000")
        draw.text((6, h - banner + 2), text, fill="#ffffff")
    return image


def write_snapshot(
    path: str | Path, frame: Frame, analysis: FrameAnalysis | None, desk_zone: list[float], min_overlap: float
) -> Path:
    """Write the annotated JPEG (mode 0600: it shows the desk) and return its path."""
    out = Path(path)
    image = annotate(frame, analysis, desk_zone, min_overlap=min_overlap)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # created 0600: the picture of the desk is never readable by others, not even briefly
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
        image.save(fh, "JPEG", quality=85)
    tmp.replace(out)
    return out
