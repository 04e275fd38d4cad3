"""``deskwatch aim``: the live framing in the technician's terminal, for aiming the camera.

Each frame goes through the daemon's own vision stage, is anonymised as the framing
snapshot is (everybody but the worker at the desk blurred), and the desk zone, people
(green inside it, grey outside), faces and phones are drawn in the snapshot's colours at
terminal size, with half-block characters in 24-bit colour: two picture rows per text row,
so an 80-column terminal shows an 80x64 picture over SSH, with no web server and no
file on the device. A line under it says what the policy would see. It stops by itself
after ``--seconds`` (at most 10 minutes: the camera should not stay open for nothing)
and records the camera use in the audit trail, like the selftest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from deskwatch.domain import Box, Frame, FrameAnalysis, Person
from deskwatch.policy.config import PolicyConfig
from deskwatch.technician.snapshot import FACE, OUTSIDE, PERSON, PHONE, ZONE, anonymise_for_framing

MAX_SECONDS = 600.0
HALF = "\u2580"  # upper half block: foreground = upper pixel, background = lower pixel


def terminal_size(width: int, height: int, columns: int) -> tuple[int, int]:
    """The picture size in pixels for ``columns`` characters (a cell is two pixels tall)."""
    rows = max(1, round(columns * height / width / 2))  # a cell is about twice as tall as wide
    return columns, rows * 2


def draw_boxes(image: Any, analysis: FrameAnalysis, desk_zone: list[float], min_overlap: float) -> None:
    """Desk zone, people (green in the zone, grey outside), faces and phones, one pixel wide:
    at terminal size the snapshot's labels would be noise, the status line says it in words."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(image)
    w, h = image.size
    zone = Box(*desk_zone)

    def rect(box: Box, colour: str) -> None:
        x0, y0, x1, y1 = box.to_pixels(w, h)
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=colour)

    rect(zone, ZONE)
    for det in analysis.detections:
        if det.label == "person":
            rect(det.box, PERSON if Person(det.box, det).in_zone(zone, min_overlap) else OUTSIDE)
        elif det.label == "cell phone":
            rect(det.box, PHONE)
    for face in analysis.faces:
        rect(face.box, FACE)


def half_blocks(image: Any, columns: int) -> list[str]:
    """A PIL image as lines of ANSI 24-bit half blocks, ``columns`` wide."""
    small = image.convert("RGB")
    if small.size[0] != columns:
        small = small.resize(terminal_size(small.size[0], small.size[1], columns))
    rows = small.size[1] // 2
    px = small.load()
    lines = []
    for y in range(0, rows * 2, 2):
        cells = []
        for x in range(columns):
            (r1, g1, b1), (r2, g2, b2) = px[x, y], px[x, y + 1]
            cells.append(f"\x1b[38;2;{r1};{g1};{b1}m\x1b[48;2;{r2};{g2};{b2}m{HALF}")
        lines.append("".join(cells) + "\x1b[0m")
    return lines


def describe(analysis: FrameAnalysis, desk_zone: list[float], min_overlap: float) -> str:
    zone = Box(*desk_zone)
    persons = [d for d in analysis.detections if d.label == "person"]
    inside = sum(Person(d.box, d).in_zone(zone, min_overlap) for d in persons)
    light = analysis.light
    if light.blurred:  # a misted lens, or the protective film still on a new camera module
        verdict = "BLURRED: clean the lens"
    else:
        verdict = "OBSTRUCTED" if light.obstructed else ("TOO DARK" if light.low_light else "light ok")
    phones = sum(d.label == "cell phone" for d in analysis.detections)
    return (
        f"{len(persons)} people ({inside} in the desk zone), {len(analysis.faces)} faces"
        + (f", {phones} phones" if phones else "")
        + f", {verdict} ({light.mean_luma:.0f}/255)"
    )


@dataclass
class AimView:
    """One frame, analysed, anonymised as the framing snapshot is (everybody but the worker
    blurred, at terminal size) and drawn; the terminal loop and the tests share it."""

    analyze: Callable[[Frame], FrameAnalysis]
    policy: PolicyConfig
    columns: int = 80

    def render(self, frame: Frame, footer: str = "") -> tuple[list[str], str]:
        from PIL import Image

        analysis = self.analyze(frame)
        small = Image.fromarray(frame.image, "RGB").resize(terminal_size(frame.width, frame.height, self.columns))
        pixels = np.array(small, dtype=np.uint8)
        anonymise_for_framing(pixels, analysis, self.policy)
        image = Image.fromarray(pixels, "RGB")
        zone, overlap = self.policy.desk_zone, self.policy.rules.away_from_desk.min_overlap
        draw_boxes(image, analysis, zone, overlap)
        summary = describe(analysis, zone, overlap)
        return half_blocks(image, self.columns), summary + (f"  |  {footer}" if footer else "")


def run_aim(
    view: AimView,
    capture: Callable[[], Frame],
    out: TextIO,
    *,
    seconds: float,
    interval: float = 1.0,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Draw frames until ``seconds`` have passed; returns how many were shown.

    NaN compares false with everything, so both tests are written for a NaN to end the
    session early: a NaN ``seconds`` means the cap, a NaN ``interval`` one frame."""
    seconds = max(seconds, 0.0) if seconds <= MAX_SECONDS else MAX_SECONDS
    end = monotonic() + seconds
    shown = 0
    out.write("\x1b[2J")
    while True:
        started = monotonic()
        left = end - started
        lines, status = view.render(capture(), f"stops in {max(left, 0):.0f} s, Ctrl-C to stop now")
        out.write("\x1b[H" + "\n".join(lines) + "\n\x1b[2K" + status + "\n")
        out.flush()
        shown += 1
        if not monotonic() + interval < end:
            return shown
        sleep(max(0.0, interval - (monotonic() - started)))
